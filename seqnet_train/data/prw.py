"""PRW as published (``DATASETS.md``): frame lists, one annotation .mat per frame, and
``query_info.txt``; with the established loaders' box conventions, which differ between the
query and the other splits (the published numbers depend on them)."""

import logging
import re
from pathlib import Path

import numpy as np

from seqnet_train.data.cache import cached_arrays
from seqnet_train.data.matfile import load_var, mat_strings, require_file
from seqnet_train.data.records import add_train_labels, drop_degenerate, make_record
from seqnet_train.errors import SeqNetError
from seqnet_train.identities import RAW_UNLABELED

log = logging.getLogger(__name__)

BOX_KEYS = ("box_new", "anno_file", "anno_previous")  # priority: stale anno_previous may coexist
RAW_PRW_UNLABELED = -2  # id of unlabelled people in the PRW files


def cam_id(img_name):
    """Camera of a frame name ``c<cam>s<seq>_<frame>``."""
    m = re.match(r"c(\d)", img_name)
    if not m:
        raise SeqNetError(f"PRW frame name {img_name!r}: expected c<camera>s<sequence>_<frame>")
    return int(m.group(1))


def _frames(root, split):
    key = {"train": "train", "gallery": "test"}[split]
    path = Path(root, f"frame_{key}.mat")
    return [
        n + ".jpg"
        for n in mat_strings(
            load_var(path, [f"img_index_{key}"], f"PRW frame list frame_{key}.mat"),
            path,
            f"img_index_{key}",
        )
    ]


def _parse_annotations(paths):
    rows, counts = [], []
    for path in paths:
        box = load_var(path, BOX_KEYS, "PRW frame annotation")
        box = np.asarray(box, dtype=np.float64)
        if box.ndim != 2 or box.shape[1] != 5:
            raise SeqNetError(f"{path}: expected rows [id x y w h] (n x 5), got {box.shape}")
        rows.append(box)
        counts.append(len(box))
    return {
        "counts": np.array(counts, dtype=np.int64),
        "rows": np.concatenate(rows) if rows else np.zeros((0, 5)),
    }


def load_split(root, split):
    """Records of the ``train``, ``gallery`` or ``query`` split (``seqnet_train.data.records``)."""
    if not Path(root).is_dir():
        raise SeqNetError(f"{root}: PRW root folder not found")
    if split == "query":
        return query_records(root)
    if split not in ("train", "gallery"):
        raise SeqNetError(f"unknown split {split!r}; expected train, gallery or query")
    names = _frames(root, split)
    paths = [Path(root, "annotations", n + ".mat") for n in names]
    for p in paths:
        require_file(p, "PRW frame annotation")
    a = cached_arrays(
        [Path(root, f"frame_{'train' if split == 'train' else 'test'}.mat"), *paths],
        split,
        lambda: _parse_annotations(paths),
    )
    # gallery/train convention: clip x, y, w, h at 0, then x2 = x + w, y2 = y + h, truncate
    xywh = np.clip(a["rows"][:, 1:], 0, None)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.int64)
    ids = a["rows"][:, 0].astype(np.int64)
    ids[ids == RAW_PRW_UNLABELED] = RAW_UNLABELED
    split_at = np.cumsum(a["counts"])[:-1]
    records = [
        make_record(n, Path(root, "frames", n), b, i, cam_id(n))
        for n, b, i in zip(names, np.split(boxes, split_at), np.split(ids, split_at))
    ]
    drop_degenerate(records, Path(root, "annotations"))
    return add_train_labels(records) if split == "train" else records


def _query_lines(root):
    path = require_file(Path(root, "query_info.txt"), "PRW query list query_info.txt")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):  # LF, CRLF, no final newline
        if not line.strip():
            continue
        parts = line.split()
        try:
            pid, x, y, w, h, frame = int(parts[0]), *map(float, parts[1:5]), parts[5]
        except (ValueError, IndexError):
            raise SeqNetError(f"{path}:{n}: expected 'pid x y w h frame', got {line!r}") from None
        out.append((pid, (x, y, w, h), frame + ".jpg"))
    return out


def query_records(root):
    """Query split: one record per line of ``query_info.txt``, in file order."""
    records = []
    for pid, (x, y, w, h), name in _query_lines(root):
        # query convention: x2 = x + w, y2 = y + h, truncate, then clip at 0
        box = np.clip(np.array([x, y, x + w, y + h]).astype(np.int64), 0, None)
        records.append(make_record(name, Path(root, "frames", name), box, [pid], cam_id(name)))
    return records


def load_queries(root):
    """One dict per query: ``{"query": {img_name, box, pid, cam_id}, "gallery": None}``.

    The PRW gallery is implicit: every test frame but the query's own (or only other cameras).
    """
    return [
        {
            "query": {
                "img_name": r["img_name"],
                "box": r["boxes"][0],
                "pid": int(r["pids"][0]),
                "cam_id": r["cam_id"],
            },
            "gallery": None,
        }
        for r in query_records(root)
    ]
