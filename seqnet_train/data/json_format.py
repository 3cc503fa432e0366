"""Our documented JSON dataset format (README, "Datasets"): one file with every image, its
boxes, person ids and split, and the queries with their box (and, optionally, their gallery).

```
{"format": "seqnet-json", "version": 1,
 "images": [{"name": "a.jpg", "path": "images/a.jpg", "split": "train" | "gallery",
             "cam_id": -1, "boxes": [[x1, y1, x2, y2], ...], "pids": [7, null, ...]}],
 "queries": [{"name": "b.jpg", "path": "images/b.jpg", "box": [x1, y1, x2, y2], "pid": 7,
              "cam_id": -1, "gallery": [{"name": "c.jpg", "box": [...] | null}] | null}]}
```
``path`` is relative to the JSON file's folder; pid ``null`` = unlabelled person. ``gallery``
null means "every gallery image but the query's own" (PRW style); a list fixes the gallery.
"""

import json
from pathlib import Path

import numpy as np

from seqnet_runtime import fs
from seqnet_train.data.records import add_train_labels, drop_degenerate, make_record
from seqnet_train.errors import SeqNetError
from seqnet_train.identities import RAW_QUERY_DUMMY, RAW_UNLABELED

FORMAT, VERSION = "seqnet-json", 1
SPLITS = ("train", "gallery")


def resolve(root):
    """The JSON file for DATA_ROOT: the .json file itself, or ``dataset.json`` in a folder."""
    root = Path(root)
    path = root / "dataset.json" if root.is_dir() else root
    if not path.is_file():
        raise SeqNetError(f"{path}: JSON dataset file not found")
    return path


def read(root):
    """(path, parsed document) after checking the top-level layout."""
    path = resolve(root)
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SeqNetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SeqNetError(f'{path}: expected an object with "format": "{FORMAT}"')
    if doc.get("version") != VERSION:
        raise SeqNetError(f"{path}: expected version {VERSION}, got {doc.get('version')!r}")
    for key in ("images", "queries"):
        if not isinstance(doc.get(key), list):
            raise SeqNetError(f"{path}: expected a list under {key!r}")
    return path, doc


def _pid(value, where):
    if value is None:
        return RAW_UNLABELED
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value in (RAW_UNLABELED, RAW_QUERY_DUMMY)
    ):
        raise SeqNetError(
            f"{where}: expected pid null or an integer other than "
            f"{RAW_UNLABELED} and {RAW_QUERY_DUMMY}, got {value!r}"
        )
    return value


def _box(value, where):
    box = np.asarray(value, dtype=np.float64) if isinstance(value, list) else None
    if box is None or box.shape != (4,):
        raise SeqNetError(f"{where}: expected a box [x1, y1, x2, y2], got {value!r}")
    return box.astype(np.float32)


def load_split(root, split):
    """Records of ``train``, ``gallery`` or ``query`` (see ``seqnet_train.data.records``)."""
    path, doc = read(root)
    base = path.parent
    if split == "query":
        return [
            make_record(q["name"], base / q["path"], q["box"], [q["pid"]], q["cam_id"])
            for q in _queries(path, doc)
        ]
    if split not in SPLITS:
        raise SeqNetError(f"unknown split {split!r}; expected train, gallery or query")
    records = []
    for i, im in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        try:
            if im["split"] not in SPLITS:
                raise SeqNetError(f"{where}: expected split train or gallery, got {im['split']!r}")
            if im["split"] != split:
                continue
            boxes, pids = im["boxes"], im["pids"]
            if not isinstance(boxes, list) or not isinstance(pids, list) or len(boxes) != len(pids):
                raise SeqNetError(f"{where}: expected lists boxes and pids of equal length")
            records.append(
                make_record(
                    im["name"],
                    base / im["path"],
                    [_box(b, where) for b in boxes] or np.zeros((0, 4)),
                    [_pid(p, where) for p in pids],
                    im.get("cam_id", -1),
                )
            )
        except (KeyError, TypeError) as e:
            raise SeqNetError(
                f"{where}: expected keys name, path, split, boxes, pids ({e})"
            ) from None
    drop_degenerate(records, path)
    return add_train_labels(records) if split == "train" else records


def _queries(path, doc):
    out = []
    for i, q in enumerate(doc["queries"]):
        where = f"{path}: queries[{i}]"
        try:
            gallery = q.get("gallery")
            if gallery is not None:
                gallery = [
                    {
                        "img_name": g["name"],
                        "box": None if g.get("box") is None else _box(g["box"], where),
                    }
                    for g in gallery
                ]
            out.append(
                {
                    "name": q["name"],
                    "path": q["path"],
                    "box": _box(q["box"], where),
                    "pid": _pid(q["pid"], where),
                    "cam_id": int(q.get("cam_id", -1)),
                    "gallery": gallery,
                }
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise SeqNetError(f"{where}: expected keys name, path, box, pid ({e})") from None
    return out


def load_queries(root):
    """One dict per query: ``{"query": {img_name, box, pid, cam_id}, "gallery": list | None}``."""
    path, doc = read(root)
    return [
        {
            "query": {
                "img_name": q["name"],
                "box": q["box"],
                "pid": q["pid"],
                "cam_id": q["cam_id"],
            },
            "gallery": q["gallery"],
        }
        for q in _queries(path, doc)
    ]


def _plain_pid(pid):
    return None if int(pid) == RAW_UNLABELED else int(pid)


def _plain_box(box):
    return None if box is None else [float(v) for v in box]


def write(path, images, queries):
    """Write a JSON dataset. ``images``: (record, split) pairs; ``queries``: ``load_queries``
    dicts; image paths are stored relative to the JSON file's folder."""
    path = Path(path)
    base = path.resolve().parent

    def rel(p):
        p = Path(p).resolve()
        return p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p)

    paths = {r["img_name"]: r["img_path"] for r, _ in images}
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "images": [
            {
                "name": r["img_name"],
                "path": rel(r["img_path"]),
                "split": split,
                "cam_id": int(r["cam_id"]),
                "boxes": [_plain_box(b) for b in r["boxes"]],
                "pids": [_plain_pid(p) for p in r["pids"]],
            }
            for r, split in images
        ],
        "queries": [
            {
                "name": q["query"]["img_name"],
                "path": rel(paths[q["query"]["img_name"]]),
                "box": _plain_box(q["query"]["box"]),
                "pid": int(q["query"]["pid"]),
                "cam_id": int(q["query"].get("cam_id", -1)),
                "gallery": None
                if q["gallery"] is None
                else [{"name": g["img_name"], "box": _plain_box(g["box"])} for g in q["gallery"]],
            }
            for q in queries
        ],
    }
    fs.write_text(path, json.dumps(doc, separators=(",", ":")))
    return path
