"""The PyTorch backend of the runtime: the trained model behind ``seqnet_runtime``'s Session.

``seqnet search`` / ``seqnet demo`` run the runtime's app on it, and it is the baseline (and
the reference for parity) of the exported packages. It runs today's fast inference copy
(``seqnet_train.modeling.inference``).
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from seqnet_runtime import fs
from seqnet_runtime import package as package_format
from seqnet_runtime.backend import Session
from seqnet_train.config import load_cfg
from seqnet_train.errors import SeqNetError
from seqnet_train.modeling import build_model, load_checkpoint
from seqnet_train.modeling.build import EMBEDDING_DIM
from seqnet_train.modeling.checkpoint import read_checkpoint
from seqnet_train.modeling.inference import optimize_for_inference

log = logging.getLogger(__name__)


def pick_device(name):
    """``cfg.DEVICE``; "cuda" falls back to the CPU, with a warning, when there is no GPU."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("DEVICE %s is not available; running on the CPU", name)
        return torch.device("cpu")
    return torch.device(name)


def load_model(cfg, ckpt):
    """The configured SeqNet with ``ckpt``'s weights, optimised for inference.

    A missing or corrupt checkpoint, or one that does not fit the config, raises SeqNetError.
    """
    device = pick_device(cfg.DEVICE)
    model = build_model(cfg, load_imagenet=False)
    load_checkpoint(model, ckpt)
    model.to(device)
    return optimize_for_inference(model, cfg.INFERENCE.PRECISION, cfg.INFERENCE.COMPILE), device


def model_key(cfg, ckpt):
    """A digest of what decides the detections and embeddings: the checkpoint's bytes and the
    model, input-size and inference config keys. The index is rebuilt when it changes."""
    h = hashlib.sha256(bytes.fromhex(fs.sha256_file(ckpt)))
    for node in (cfg.MODEL, cfg.INFERENCE):
        h.update(node.dump().encode())
    h.update(f"{cfg.INPUT.MIN_SIZE} {cfg.INPUT.MAX_SIZE}".encode())
    return h.hexdigest()


def checkpoint_cfg(ckpt, opts=(), checkpoint=None):
    """The config a training checkpoint of ours carries (``checkpoint``: its dict, when already
    read), with ``opts`` overrides; a released checkpoint (weights only) raises a SeqNetError
    asking for the config file."""
    text = (read_checkpoint(ckpt) if checkpoint is None else checkpoint).get("config")
    if not isinstance(text, str):
        raise SeqNetError(
            f"{ckpt} carries no config (a released checkpoint?): give its config with --cfg"
        )
    return load_cfg(text=text, opts=opts, source=f"{ckpt}'s config")


def package_source(package):
    """(checkpoint path, config text) of the checkpoint a model package was exported from: the
    torch backend runs that, as the reference of the package's parity. The checkpoint must lie
    beside the package (where seqnet-export puts the package) with the digest it recorded."""
    package = Path(package)
    manifest = package_format.read(package)
    source, config = manifest.source, manifest.config
    ckpt = package.parent / source["checkpoint"]
    if not ckpt.is_file():
        raise SeqNetError(
            f"--backend torch runs the checkpoint {package.name} came from, but "
            f"{source['checkpoint']} is not beside it in {package.parent}"
        )
    if fs.sha256_file(ckpt) != source["sha256"]:
        raise SeqNetError(f"{ckpt} changed since {package.name} was exported from it")
    return ckpt, config


def to_tensor(image, device=None):
    """H x W x 3 uint8 (or float32 in [0, 1]) array -> float32 (3, H, W) in [0, 1] on
    ``device``. The frame moves as it is (uint8: a quarter of the bytes) and is converted
    there: on a GPU the CPU then does no per-pixel work."""
    image = np.ascontiguousarray(image)
    tensor = torch.from_numpy(image if image.flags.writeable else image.copy())
    tensor = tensor.to(device).permute(2, 0, 1)
    return tensor.float().div_(255) if image.dtype == np.uint8 else tensor.float()


class ModelSession(Session):
    """A SeqNet already in memory (eval mode, on ``device``) behind the runtime's interface:
    what evaluation and the benchmarks run, whatever the model's optimisations."""

    name = "torch"

    def __init__(self, model, device=None, key="", batch_size=1):
        self.model = model
        self.device = device or next(model.parameters()).device
        self.key, self.dim, self.batch_size = key, EMBEDDING_DIM, batch_size

    def _tensors(self, images):
        return [to_tensor(im, self.device) for im in images]

    def _detect(self, images, context_boxes):
        if context_boxes is not None:
            context_boxes = [torch.from_numpy(b).to(self.device) for b in context_boxes]
        out = self.model.predict(self._tensors(images), context_boxes)
        return [
            {k: o[k].float().cpu().numpy() for k in ("boxes", "scores", "embeddings")} for o in out
        ]

    def _embed(self, image, boxes):
        boxes = torch.from_numpy(boxes).to(self.device)
        return self.model.embed_boxes(self._tensors([image]), [boxes])[0].float().cpu().numpy()


class TorchSession(ModelSession):
    """A checkpoint on PyTorch, with its config: ``cfg`` (a CfgNode or a YAML file), else the
    one the checkpoint carries; ``device`` and ``precision`` override the config's. ``ckpt``
    may be a model package: then the checkpoint it was exported from, with its config.
    ``threads``: PyTorch's intra-op threads, for the whole process (a Ray worker's CPUs)."""

    def __init__(self, ckpt, cfg=None, opts=(), device=None, precision=None, threads=None):
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            raise SeqNetError(f"--device {device}: PyTorch sees no CUDA GPU here")
        if threads:
            torch.set_num_threads(int(threads))
        opts = list(opts)
        opts += ["DEVICE", device] if device else []
        opts += ["INFERENCE.PRECISION", precision] if precision else []
        if Path(ckpt).is_dir():
            ckpt, text = package_source(ckpt)
            if cfg is None:
                cfg = load_cfg(text=text, opts=opts, source=f"{ckpt}'s config")
        if cfg is None:
            cfg = checkpoint_cfg(ckpt, opts)
        elif isinstance(cfg, (str, Path)):
            cfg = load_cfg(cfg, opts)
        elif opts:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.merge_from_list(opts)
            cfg.freeze()
        model, device = load_model(cfg, ckpt)
        super().__init__(model, device, model_key(cfg, ckpt), cfg.INPUT.BATCH_SIZE_TEST)
