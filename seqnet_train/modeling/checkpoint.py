"""Load released-format checkpoints (``{"model": state_dict, ...}``) or bare state dicts."""

import logging
import pickle
import re
from pathlib import Path

import torch

from seqnet_train.errors import SeqNetError

log = logging.getLogger(__name__)

OIM_MEMORY = ("roi_heads.reid_loss.lut", "roi_heads.reid_loss.cq")
OURS_ONLY = ("roi_heads.reid_loss.cq_ptr",)  # absent from released checkpoints
OLD_RPN_NAMES = {  # torchvision < 0.13 named the RPN conv without its Conv2dNormActivation
    "rpn.head.conv.weight": "rpn.head.conv.0.0.weight",
    "rpn.head.conv.bias": "rpn.head.conv.0.0.bias",
}


def read_checkpoint(path):
    """The whole checkpoint dict, read safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise SeqNetError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a Python object
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise SeqNetError(
            f"cannot read checkpoint {path}: it holds Python objects{what}, which are not loaded "
            "(torch.load weights_only=True: only tensors and plain values)"
        ) from None
    except Exception as e:  # truncated or corrupt
        raise SeqNetError(f"cannot read checkpoint {path}: {e.__class__.__name__}: {e}") from None
    if not isinstance(ckpt, dict):
        raise SeqNetError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    return ckpt


def adapt_state_dict(model, state_dict, source="checkpoint"):
    """Rename old keys and reconcile OIM memory sizes; error on anything else that differs.

    OIM buffers whose size differs from the config only matter for training, so they are
    skipped with a warning (the model keeps its own).
    """
    sd = {OLD_RPN_NAMES.get(k, k): v for k, v in state_dict.items()}
    own = model.state_dict()
    for key in OIM_MEMORY:
        if key in sd and sd[key].shape != own[key].shape:
            log.warning(
                "%s: %s has shape %s but the config gives %s; keeping the model's (only "
                "training uses it)",
                source,
                key,
                tuple(sd[key].shape),
                tuple(own[key].shape),
            )
            del sd[key]
    missing = [k for k in own if k not in sd and k not in OIM_MEMORY + OURS_ONLY]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        problems = {"missing": missing, "unexpected": unexpected, "wrong shape": wrong}
        for name, keys in problems.items():
            if keys:
                more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"{name}: {', '.join(keys[:8])}{more}")
        raise SeqNetError(f"{source} does not fit the configured model; " + "; ".join(parts))
    return sd


def load_checkpoint(model, path, checkpoint=None):
    """Load weights into ``model`` from a released checkpoint or a bare state dict at ``path``
    (``checkpoint``: its dict, when already read).

    Returns the whole checkpoint dict (optimizer, epoch, ... when present).
    """
    ckpt = read_checkpoint(path) if checkpoint is None else checkpoint
    state_dict = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    sd = adapt_state_dict(model, state_dict, source=str(path))
    model.load_state_dict(sd, strict=False)
    return ckpt
