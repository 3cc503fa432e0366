"""Every config key with its default (yacs, as the original release), and how configs are loaded.

The SPEC keys keep the original names and defaults so that a ``config.yaml`` dumped by the
original loads unchanged; keys of ours only add behaviour and default to the original's.
"""

import difflib
from pathlib import Path

import yaml
from yacs.config import CfgNode as CN

from seqnet_train.errors import SeqNetError

_C = CN()

# -------------------------------------------------------- input -------------------------------- #
_C.INPUT = CN()
_C.INPUT.DATASET = "CUHK-SYSU"  # CUHK-SYSU | PRW | JSON (our documented custom format)
_C.INPUT.DATA_ROOT = "data/CUHK-SYSU"  # dataset folder (or the .json file for JSON)
_C.INPUT.MIN_SIZE = 900  # short side after resizing
_C.INPUT.MAX_SIZE = 1500  # cap on the long side after resizing
_C.INPUT.BATCH_SIZE_TRAIN = 5  # images per training step (per process)
_C.INPUT.BATCH_SIZE_TEST = 1  # images per inference step; results do not depend on it
_C.INPUT.NUM_WORKERS_TRAIN = 5  # data-loading worker processes for training
_C.INPUT.NUM_WORKERS_TEST = 1  # data-loading worker processes for inference
_C.INPUT.ASPECT_RATIO_GROUPING = False  # ours: batch images of like aspect ratio (less padding)
_C.INPUT.PROGRESSIVE_RESIZE = []  # ours: [E, MIN, MAX]: first E epochs train at MIN/MAX sizes

# -------------------------------------------------------- solver ------------------------------- #
_C.SOLVER = CN()
_C.SOLVER.MAX_EPOCHS = 20  # training length in epochs
_C.SOLVER.OPTIMIZER = "SGD"  # ours: SGD (the paper's) | AdamW (faster from random init)
_C.SOLVER.BASE_LR = 0.003  # SGD learning rate for batch 5 (linear scaling rule otherwise)
_C.SOLVER.WARMUP_FACTOR = 0.001  # warm-up starts at BASE_LR * this, linear over epoch 1
_C.SOLVER.LR_DECAY_MILESTONES = [16]  # epochs after which the lr is multiplied by GAMMA
_C.SOLVER.GAMMA = 0.1  # lr decay factor at each milestone
_C.SOLVER.LR_SCHEDULE = "step"  # ours: step (the paper's milestones) | cosine (to 0, no milestones)
_C.SOLVER.WEIGHT_DECAY = 0.0005  # SGD weight decay
_C.SOLVER.SGD_MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.LW_RPN_REG = 1.0  # loss weight: RPN box regression
_C.SOLVER.LW_RPN_CLS = 1.0  # loss weight: RPN objectness
_C.SOLVER.LW_PROPOSAL_REG = 10.0  # loss weight: first-stage box regression
_C.SOLVER.LW_PROPOSAL_CLS = 1.0  # loss weight: first-stage classification
_C.SOLVER.LW_BOX_REG = 1.0  # loss weight: second-stage box regression
_C.SOLVER.LW_BOX_CLS = 1.0  # loss weight: second-stage (norm-aware) classification
_C.SOLVER.LW_BOX_REID = 1.0  # loss weight: OIM re-identification
_C.SOLVER.CLIP_GRADIENTS = 10.0  # max gradient norm; negative disables clipping

_C.SOLVER.AMP = False  # ours: mixed precision (fp16 + GradScaler on CUDA, bf16 on the CPU)
_C.SOLVER.ACCUM_STEPS = 1  # ours: batches per optimizer step (gradient accumulation)
_C.SOLVER.NONFINITE = "stop"  # ours: on a NaN/inf loss, "stop" with a message or "skip" the step

# -------------------------------------------------------- model -------------------------------- #
_C.MODEL = CN()
_C.MODEL.BACKBONE = "resnet50"  # ours: resnet10 | resnet18 | resnet34 | resnet50 | resnet101
_C.MODEL.BACKBONE_WEIGHTS = ""  # ours: local ImageNet weights (torchvision state dict); "" = cache
_C.MODEL.FREEZE_STEM = True  # ours: conv1 and bn1's affine parameters do not train (the paper)
_C.MODEL.RPN = CN()
_C.MODEL.RPN.NMS_THRESH = 0.7  # NMS IoU over proposals
_C.MODEL.RPN.BATCH_SIZE_TRAIN = 256  # anchors sampled per image for the RPN losses
_C.MODEL.RPN.POS_FRAC_TRAIN = 0.5  # fraction of positives among them
_C.MODEL.RPN.POS_THRESH_TRAIN = 0.7  # anchor IoU at or above which it is foreground
_C.MODEL.RPN.NEG_THRESH_TRAIN = 0.3  # anchor IoU below which it is background
_C.MODEL.RPN.PRE_NMS_TOPN_TRAIN = 12000  # proposals kept before NMS (training)
_C.MODEL.RPN.PRE_NMS_TOPN_TEST = 6000  # proposals kept before NMS (testing)
_C.MODEL.RPN.POST_NMS_TOPN_TRAIN = 2000  # proposals kept after NMS (training)
_C.MODEL.RPN.POST_NMS_TOPN_TEST = 300  # proposals kept after NMS (testing)
_C.MODEL.ROI_HEAD = CN()
_C.MODEL.ROI_HEAD.BN_NECK = True  # BatchNorm1d after the second-stage box regressor
_C.MODEL.ROI_HEAD.POOL_SIZE = [14, 14]  # ours: RoIAlign output [H, W]; N means [N, N]
_C.MODEL.ROI_HEAD.BATCH_SIZE_TRAIN = 128  # RoIs sampled per image in each stage
_C.MODEL.ROI_HEAD.POS_FRAC_TRAIN = 0.5  # fraction of positives among them
_C.MODEL.ROI_HEAD.POS_THRESH_TRAIN = 0.5  # RoI IoU at or above which it is a person
_C.MODEL.ROI_HEAD.NEG_THRESH_TRAIN = 0.5  # RoI IoU below which it is background
_C.MODEL.ROI_HEAD.SCORE_THRESH_TEST = 0.5  # detections must score above this
_C.MODEL.ROI_HEAD.NMS_THRESH_TEST = 0.4  # NMS IoU over first-stage detections
_C.MODEL.ROI_HEAD.DETECTIONS_PER_IMAGE_TEST = 300  # cap on detections per image
_C.MODEL.LOSS = CN()
_C.MODEL.LOSS.LUT_SIZE = 5532  # OIM lookup table rows: labelled training identities
_C.MODEL.LOSS.CQ_SIZE = 5000  # OIM circular queue rows: recent unlabelled people
_C.MODEL.LOSS.OIM_MOMENTUM = 0.5  # OIM lookup-table update momentum
_C.MODEL.LOSS.OIM_SCALAR = 30.0  # OIM logit scale (inverse temperature)

# -------------------------------------------------------- inference (ours) --------------------- #
_C.INFERENCE = CN()
_C.INFERENCE.PRECISION = "fp32"  # fp32 | bf16 (autocast on the convolutions) | fp16 (CUDA only)
_C.INFERENCE.COMPILE = False  # torch.compile the convolutional parts (slow start, faster runs)

# -------------------------------------------------------- run ---------------------------------- #
_C.EVAL_PERIOD = 1  # evaluate every N epochs
_C.EVAL_USE_GT = False  # evaluate search with GT boxes instead of detections (upper bound)
_C.EVAL_USE_CACHE = False  # reuse the saved inference outputs in OUTPUT_DIR
_C.EVAL_USE_CBGM = False  # rescore with Context Bipartite Graph Matching
_C.EVAL_CBGM_K1 = 0  # ours: CBGM revisits the images of the top-k1 detections (0: CUHK 10, PRW 30)
_C.EVAL_CBGM_K2 = 0  # ours: CBGM context, query image's first k2 detections (0: CUHK 3, PRW 4)
_C.EVAL_DET_THRESH = 0.5  # ours: search uses gallery detections scoring at least this
_C.EVAL_GALLERY_SIZES = [50, 100, 500, 1000, 2000, 4000, -1]  # ours: CUHK-SYSU; -1 = whole pool
_C.CKPT_PERIOD = 1  # save a checkpoint every N epochs
_C.CKPT_ITER_PERIOD = 0  # ours: also save every N iterations within an epoch (0: off)
_C.CKPT_KEEP_LAST = 0  # ours: keep only the newest N checkpoints (0: keep all)
_C.DISP_PERIOD = 10  # log losses every N iterations
_C.TF_BOARD = True  # write TensorBoard scalars
_C.DEVICE = "cuda"  # cuda | cpu (cuda falls back to cpu with a warning when absent)
_C.SEED = 1  # seed for torch, numpy and random
_C.OUTPUT_DIR = "./output"  # checkpoints, logs, outputs and metrics go here


SIZES = {"MODEL.ROI_HEAD.POOL_SIZE"}  # [H, W] keys that also take one number N for N x N


def get_default_cfg():
    """A fresh copy of the defaults (a mutable yacs CfgNode)."""
    return _C.clone()


def _flat_keys(node, prefix=""):
    keys = {}
    for k, v in node.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            keys.update(_flat_keys(v, name + "."))
        else:
            keys[name] = v
    return keys


def _check_keys(names, known, source):
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SeqNetError(f"unknown config key {name!r} in {source}{hint}")


def _nested(flat, known):
    """Unflatten ``{"A.B": v}``, widening ints to floats where the default is a float (1 -> 1.0)
    and to [N, N] where it is a size [H, W]."""
    root = {}
    for name, value in flat.items():
        if isinstance(known[name], float) and type(value) is int:
            value = float(value)
        if name in SIZES and type(value) is int:
            value = [value, value]
        node = root
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return root


def _merge(cfg, flat, known, source):
    _check_keys(flat, known, source)
    try:
        cfg.merge_from_other_cfg(CN(_nested(flat, known)))
    except (ValueError, KeyError, AssertionError) as e:
        raise SeqNetError(f"{source}: {e}") from None


def load_cfg(path=None, opts=(), freeze=True, text=None, source=None):
    """Defaults, then the YAML file at ``path`` (or the YAML ``text``, e.g. a checkpoint's,
    named ``source`` in messages), then ``KEY VALUE`` overrides, as the original.

    Unknown keys fail with a message naming them and the closest valid keys.
    """
    cfg = get_default_cfg()
    known = _flat_keys(cfg)
    if path:
        path = Path(path)
        if not path.is_file():
            raise SeqNetError(f"config file not found: {path}")
        text, source = path.read_text(), str(path)
    if text is not None:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise SeqNetError(f"{source}: not valid YAML ({e.__class__.__name__})") from None
        if not isinstance(data, dict):
            raise SeqNetError(f"{source}: expected a mapping of config keys at the top level")
        _merge(cfg, _flat_keys(data), known, source)
    opts = list(opts)
    if len(opts) % 2:
        raise SeqNetError(f"overrides must come in KEY VALUE pairs, got {len(opts)} words: {opts}")
    decoded = {k: CN._decode_cfg_value(v) for k, v in zip(opts[0::2], opts[1::2])}
    _merge(cfg, decoded, known, "the command line")
    if freeze:
        cfg.freeze()
    return cfg
