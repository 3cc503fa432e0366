"""The inference outputs file: everything the protocols need, from one pass over the test splits.

One ``torch.save`` dict, loadable with ``torch.load(path, weights_only=True)``; rows of each
split are concatenated in loader order and split by the counts:

- ``gallery_names`` (list of str), ``gallery_counts`` (I,) int64, ``gallery_dets`` (N x 5
  float32: x1, y1, x2, y2, score in original pixels), ``gallery_feats`` (N x 256 float32);
- ``query_names`` (list of str), ``query_box_feats`` (Q x 256), ``query_counts`` (Q,),
  ``query_dets`` (M x 5; row 0 of each query = its own box, score 1), ``query_feats`` (M x 256);
- ``meta``: dict of str/int/bool (``dataset``, ``use_gt``, ``checkpoint``, ``format``).

The golden cases' ``.npz`` files (``evalgold/outputs``) hold the same keys; ``load_outputs``
reads both, and ``python -m seqnet_train.evaluation.convert_npz IN.npz OUT.pt`` converts.
"""

from pathlib import Path

import numpy as np
import torch

from seqnet_runtime import fs
from seqnet_train.errors import SeqNetError

FORMAT = 1
ARRAYS = (
    "gallery_counts", "gallery_dets", "gallery_feats",
    "query_box_feats", "query_counts", "query_dets", "query_feats",
)  # fmt: skip
NAMES = ("gallery_names", "query_names")


def save_outputs(outputs, path):
    """Write atomically (``seqnet_runtime.fs``), so an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: torch.as_tensor(np.asarray(outputs[k])) for k in ARRAYS}
    data.update({k: [str(n) for n in outputs[k]] for k in NAMES})
    data["meta"] = {"format": FORMAT, **dict(outputs.get("meta", {}))}
    with fs.atomic_file(path) as f:
        torch.save(data, f)


def load_outputs(path):
    """Outputs as numpy arrays and lists of names, from our ``.pt`` or an evalgold ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise SeqNetError(f"outputs file not found: {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                raw = {k: z[k] for k in z.files}
            raw["meta"] = {}
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file: say which and why, in one line
        raise SeqNetError(f"{path}: not a readable outputs file ({e.__class__.__name__})") from None
    missing = [k for k in ARRAYS + NAMES if k not in raw]
    if missing:
        raise SeqNetError(f"{path}: outputs file lacks {', '.join(missing)}")
    out = {k: np.asarray(raw[k]) for k in ARRAYS}
    out.update({k: [str(n) for n in raw[k]] for k in NAMES})
    out["meta"] = dict(raw.get("meta", {}))
    _check(out, path)
    return out


def _check(out, path):
    pairs = [
        ("gallery_counts", "gallery_dets", "gallery_feats"),
        ("query_counts", "query_dets", "query_feats"),
    ]
    for counts, dets, feats in pairs:
        if int(out[counts].sum()) != len(out[dets]) or len(out[dets]) != len(out[feats]):
            raise SeqNetError(f"{path}: {counts} do not add up to the rows of {dets}/{feats}")
    if len(out["gallery_counts"]) != len(out["gallery_names"]):
        raise SeqNetError(f"{path}: gallery_counts and gallery_names differ in length")
    if not len(out["query_counts"]) == len(out["query_box_feats"]) == len(out["query_names"]):
        raise SeqNetError(f"{path}: query_counts, query_box_feats, query_names differ in length")


def split_rows(array, counts):
    """Per-item views of concatenated rows."""
    return np.split(array, np.cumsum(counts)[:-1]) if len(counts) else []
