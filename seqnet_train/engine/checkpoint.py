"""Training checkpoints: the released layout plus what an exact resume needs, written atomically.

``epoch_N.pth`` (N 0-based, as the release) holds ``model``, ``optimizer``, ``lr_scheduler`` and
``epoch`` like the released files, plus ``iteration`` (optimizer steps done), ``scaler``, the
RNG states and the config. Mid-epoch checkpoints ``epoch_N_iter_K.pth`` hold the same after K
steps of epoch N. A crash while writing leaves only a temporary file behind.
"""

import logging
import random
import re
from pathlib import Path

import numpy as np
import torch

from seqnet_runtime import fs
from seqnet_train.errors import SeqNetError
from seqnet_train.modeling.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

NAME = re.compile(r"^epoch_(\d+)(?:_iter_(\d+))?\.pth$")


def checkpoint_name(epoch, step_in_epoch=None):
    return (
        f"epoch_{epoch}.pth" if step_in_epoch is None else f"epoch_{epoch}_iter_{step_in_epoch}.pth"
    )


def save_atomic(obj, path, before_rename=None):
    """torch.save, all or nothing (``seqnet_runtime.fs.atomic_file``); ``before_rename`` runs
    once the data is written, before it replaces ``path`` (the crash tests stop there)."""
    with fs.atomic_file(path) as f:
        torch.save(obj, f)
        if before_rename:
            before_rename()


def rng_states():
    """Every global RNG, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "random": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states):
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["random"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _order(path):
    m = NAME.match(path.name)
    epoch, step = int(m.group(1)), m.group(2)
    return (epoch, float("inf") if step is None else int(step))


def list_checkpoints(output_dir):
    """Training checkpoints in ``output_dir``, oldest first."""
    paths = [p for p in Path(output_dir).glob("epoch_*.pth") if NAME.match(p.name)]
    return sorted(paths, key=_order)


def newest_readable(output_dir):
    """The newest checkpoint that reads; a corrupt one is reported and skipped (the previous
    good one is used)."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            ckpt = read_checkpoint(path)
            if "iteration" in ckpt and "model" in ckpt:
                return path
            log.warning("%s is not a resumable training checkpoint; skipping it", path)
        except SeqNetError as e:
            log.warning("%s; falling back to the previous checkpoint", e)
    raise SeqNetError(f"--resume: no readable checkpoint in {output_dir}")


def prune(output_dir, keep_last):
    """Keep the newest ``keep_last`` checkpoints (0 keeps all)."""
    if keep_last > 0:
        for path in list_checkpoints(output_dir)[:-keep_last]:
            path.unlink(missing_ok=True)
