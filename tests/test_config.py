"""Config: the original's keys and command-line overrides; clear errors for unknown keys."""

import re
import subprocess
import sys

import pytest
import yaml

from seqnet_train.config import get_default_cfg, load_cfg
from seqnet_train.errors import SeqNetError

# A config.yaml as the original release dumps it (yacs, exactly the SPEC keys, int loss weights).
ORIGINAL_DUMP = """
CKPT_PERIOD: 1
DEVICE: cuda
DISP_PERIOD: 10
EVAL_PERIOD: 1
EVAL_USE_CACHE: false
EVAL_USE_CBGM: false
EVAL_USE_GT: false
INPUT:
  BATCH_SIZE_TEST: 1
  BATCH_SIZE_TRAIN: 5
  DATASET: PRW
  DATA_ROOT: data/PRW
  MAX_SIZE: 1500
  MIN_SIZE: 900
  NUM_WORKERS_TEST: 1
  NUM_WORKERS_TRAIN: 5
MODEL:
  LOSS:
    CQ_SIZE: 500
    LUT_SIZE: 482
    OIM_MOMENTUM: 0.5
    OIM_SCALAR: 30.0
  ROI_HEAD:
    BATCH_SIZE_TRAIN: 128
    BN_NECK: true
    DETECTIONS_PER_IMAGE_TEST: 300
    NEG_THRESH_TRAIN: 0.5
    NMS_THRESH_TEST: 0.4
    POS_FRAC_TRAIN: 0.5
    POS_THRESH_TRAIN: 0.5
    SCORE_THRESH_TEST: 0.5
  RPN:
    BATCH_SIZE_TRAIN: 256
    NEG_THRESH_TRAIN: 0.3
    NMS_THRESH: 0.7
    POS_FRAC_TRAIN: 0.5
    POS_THRESH_TRAIN: 0.7
    POST_NMS_TOPN_TEST: 300
    POST_NMS_TOPN_TRAIN: 2000
    PRE_NMS_TOPN_TEST: 6000
    PRE_NMS_TOPN_TRAIN: 12000
OUTPUT_DIR: ./exp_prw
SEED: 1
SOLVER:
  BASE_LR: 0.003
  CLIP_GRADIENTS: 10.0
  GAMMA: 0.1
  LR_DECAY_MILESTONES:
  - 16
  LW_BOX_CLS: 1
  LW_BOX_REG: 1
  LW_BOX_REID: 1
  LW_PROPOSAL_CLS: 1
  LW_PROPOSAL_REG: 10
  LW_RPN_CLS: 1
  LW_RPN_REG: 1
  MAX_EPOCHS: 18
  SGD_MOMENTUM: 0.9
  WARMUP_FACTOR: 0.001
  WEIGHT_DECAY: 0.0005
TF_BOARD: true
"""


def test_original_dump_loads_unchanged(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(ORIGINAL_DUMP)
    cfg = load_cfg(path)
    assert cfg.INPUT.DATASET == "PRW" and cfg.MODEL.LOSS.LUT_SIZE == 482
    assert cfg.SOLVER.LW_PROPOSAL_REG == 10 and cfg.SOLVER.LR_DECAY_MILESTONES == [16]
    assert cfg.MODEL.BACKBONE == "resnet50"  # our keys keep their defaults


def test_our_dump_reloads(tmp_path):
    cfg = load_cfg(None, ["SOLVER.BASE_LR", "0.01", "MODEL.BACKBONE", "resnet18"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.dump())
    assert load_cfg(path) == cfg


def test_dataset_configs():
    """SPEC §5's dataset overrides, all of them; PRW's LUT has one row per labelled identity
    (483; the release's 482 sent two identities to the queue, see configs/prw.yaml)."""
    spec = {
        "configs/cuhk_sysu.yaml": {"OUTPUT_DIR": "./exp_cuhk", "SOLVER.MAX_EPOCHS": 20,
                                   "MODEL.LOSS.LUT_SIZE": 5532, "MODEL.LOSS.CQ_SIZE": 5000},
        "configs/prw.yaml": {"INPUT.DATASET": "PRW", "INPUT.DATA_ROOT": "data/PRW",
                             "OUTPUT_DIR": "./exp_prw", "SOLVER.MAX_EPOCHS": 18,
                             "MODEL.LOSS.LUT_SIZE": 483, "MODEL.LOSS.CQ_SIZE": 500},
    }  # fmt: skip
    defaults = _flat(get_default_cfg())
    for path, overrides in spec.items():
        got = _flat(load_cfg(path))
        assert {k: got[k] for k in overrides} == overrides, path
        changed = {k for k in got if got[k] != defaults[k]}
        assert changed <= set(overrides), (path, changed - set(overrides))


def test_overrides_follow_the_file():
    cfg = load_cfg("configs/prw.yaml", ["INPUT.BATCH_SIZE_TRAIN", "2", "SOLVER.BASE_LR", "0.0012"])
    assert cfg.INPUT.BATCH_SIZE_TRAIN == 2 and cfg.SOLVER.BASE_LR == 0.0012
    assert load_cfg(None, ["SOLVER.LW_BOX_REID", "2"]).SOLVER.LW_BOX_REID == 2.0


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def spec_defaults(spec_md):
    """SPEC §5's ``KEY VALUE`` pairs (its code block; parenthesised remarks dropped)."""
    section = spec_md.split("## 5. Config keys", 1)[1]
    block = re.sub(r"\([^)]*\)", " ", section.split("```", 2)[1])
    pairs = re.findall(r"([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)\s+(\"[^\"]*\"|\[[^\]]*\]|\S+)", block)
    return {key: yaml.safe_load(value) for key, value in pairs}


def _same(want, got):
    """Equal, and of the same kind: True is not 1, "1" is not 1; ints match floats (yacs keeps
    the original's int loss weights as floats, and both load)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and got == want
    return type(got) is type(want) and got == want


def test_every_spec_key_has_its_default(shared):
    """Every key of SPEC §5 (54) exists with SPEC's value, and ORIGINAL_DUMP has exactly them."""
    spec = spec_defaults((shared / "SPEC.md").read_text())
    assert len(spec) == 54, sorted(spec)
    cfg = _flat(get_default_cfg())
    missing = sorted(set(spec) - set(cfg))
    wrong = {k: (v, cfg[k]) for k, v in spec.items() if k in cfg and not _same(v, cfg[k])}
    assert not missing and not wrong, (missing, wrong)
    assert set(_flat(yaml.safe_load(ORIGINAL_DUMP))) == set(spec)


def test_original_dump_keys_are_config_keys():
    """Without ../shared: every key the original dumps is one of ours."""
    assert set(_flat(yaml.safe_load(ORIGINAL_DUMP))) <= set(_flat(get_default_cfg()))


@pytest.mark.parametrize(
    "opts, message",
    [
        (["SOLVER.BASE_LRR", "1"], "unknown config key 'SOLVER.BASE_LRR'.*SOLVER.BASE_LR"),
        (["SOLVER.BASE_LR"], "KEY VALUE pairs"),
        (["INPUT.MIN_SIZE", "'big'"], "INPUT.MIN_SIZE|type"),
    ],
)
def test_bad_overrides(opts, message):
    with pytest.raises(SeqNetError, match=message):
        load_cfg(None, opts)


def test_pool_size_is_height_and_width_or_one_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("MODEL:\n  ROI_HEAD:\n    POOL_SIZE: 7\n")
    assert load_cfg(path).MODEL.ROI_HEAD.POOL_SIZE == [7, 7]
    assert load_cfg(path, ["MODEL.ROI_HEAD.POOL_SIZE", "[6, 3]"]).MODEL.ROI_HEAD.POOL_SIZE == [6, 3]
    assert load_cfg(None, ["MODEL.ROI_HEAD.POOL_SIZE", "5"]).MODEL.ROI_HEAD.POOL_SIZE == [5, 5]


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("MODEL:\n  RPN:\n    NMS_THRES: 0.5\n")
    with pytest.raises(
        SeqNetError, match=r"MODEL.RPN.NMS_THRES.*did you mean MODEL.RPN.NMS_THRESH"
    ):
        load_cfg(path)
    with pytest.raises(SeqNetError, match="not found"):
        load_cfg(tmp_path / "missing.yaml")


def test_cli_reports_errors_without_traceback(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "seqnet_train", "train", "--cfg", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode != 0
    assert "config file not found" in run.stderr and "Traceback" not in run.stderr
