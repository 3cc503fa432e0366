"""CUHK-SYSU as published (``DATASETS.md``): splits from ``Images.mat``/``pool.mat``, identities
from ``Train.mat`` and ``TestG50.mat``, and the TestG50..4000 query protocols.

Parsed annotations are cached (``seqnet_train.data.cache``), so only the first load pays
for parsing.
Raw pids follow the established loaders: person j + 1 of ``Train.mat``, query q + 1 in the
gallery, ``RAW_UNLABELED`` for everyone else and ``RAW_QUERY_DUMMY`` in the query split.
"""

import logging
from pathlib import Path

import numpy as np

from seqnet_train.data import mat5
from seqnet_train.data.cache import cached_arrays
from seqnet_train.data.matfile import expect_fields, load_var, mat_str, mat_strings, require_file
from seqnet_train.data.records import add_train_labels, make_record
from seqnet_train.errors import SeqNetError
from seqnet_train.identities import RAW_QUERY_DUMMY, RAW_UNLABELED

log = logging.getLogger(__name__)

GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)
SUBSETS = {
    "occlusion": ("subset/Occlusion.mat", "Occlusion1"),
    "resolution": ("subset/Resolution.mat", "Test_Size"),
}


def _anno(root, *parts):
    return Path(root, "annotation", *parts)


def _parse_images(path):
    img = load_var(path, ["Img"], "CUHK-SYSU image list (Images.mat)").ravel()
    expect_fields(img, ("imname", "box"), path, "'Img'")
    names, counts, boxes = [], [], []
    for entry in img:
        names.append(mat_str(entry["imname"], path, "Img.imname"))
        box = entry["box"]
        expect_fields(box, ("idlocate",), path, f"Img.box of {names[-1]}")
        rows = [np.asarray(b, dtype=np.float64).reshape(-1) for b in box["idlocate"].ravel()]
        if any(len(r) != 4 for r in rows):
            raise SeqNetError(f"{path}: expected 1x4 [x y w h] boxes in Img.box of {names[-1]}")
        counts.append(len(rows))
        boxes.extend(rows)
    return {
        "names": np.array(names, dtype=str),
        "counts": np.array(counts, dtype=np.int64),
        "boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
    }


def _images(root):
    """{image name: boxes (k, 4) int64 xywh with zero-size boxes dropped}, in file order."""
    path = require_file(_anno(root, "Images.mat"), "CUHK-SYSU annotation Images.mat")
    a = cached_arrays([path], "images", lambda: _parse_images(path))
    boxes = a["boxes"].astype(np.int64)
    keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    if not keep.all():
        log.info("%s: dropped %d zero-size boxes", path, int((~keep).sum()))
    split = np.cumsum(a["counts"])[:-1]
    out = {}
    for name, b, k in zip(a["names"].tolist(), np.split(boxes, split), np.split(keep, split)):
        if not k.any():
            raise SeqNetError(f"{path}: image {name} has no box of non-zero size")
        out[name] = b[k]
    return out


def _pool(root):
    path = _anno(root, "pool.mat")
    return mat_strings(load_var(path, ["pool"], "CUHK-SYSU test pool (pool.mat)"), path, "pool")


def _parse_train(path):
    train = load_var(path, ["Train"], "CUHK-SYSU training identities (Train.mat)").ravel()
    person, names, boxes = [], [], []
    for j, cell in enumerate(train):
        item = cell.ravel()[0] if isinstance(cell, np.ndarray) and cell.dtype == object else cell
        expect_fields(item, ("scene",), path, f"Train{{{j + 1}}}")
        scene = item.ravel()[0]["scene"]
        expect_fields(scene, ("imname", "idlocate"), path, f"Train{{{j + 1}}}.scene")
        for s in scene.ravel():  # ravel: a person seen in one image is a 0-d squeeze elsewhere
            person.append(j)
            names.append(mat_str(s["imname"], path, "scene.imname"))
            boxes.append(np.asarray(s["idlocate"], dtype=np.float64).reshape(4))
    return {
        "person": np.array(person, dtype=np.int64),
        "names": np.array(names, dtype=str),
        "boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
    }


def _label(images, pids, name, box, pid, source):
    """Set ``pid`` on the box of image ``name`` exactly equal to ``box`` (xywh, int)."""
    boxes = images.get(name)
    if boxes is None:
        raise SeqNetError(f"{source}: image {name} (id {pid}) is not in Images.mat")
    hit = np.flatnonzero((boxes == np.asarray(box, dtype=np.int64)).all(axis=1))
    if len(hit) == 0:
        raise SeqNetError(
            f"{source}: box {[int(v) for v in box]} of id {pid} in {name} matches no box of "
            "that image in Images.mat"
        )
    pids[name][hit[0]] = pid


def _records(root, names, images, pids):
    img_dir = Path(root, "Image", "SSM")
    out = []
    for name in names:
        b = images[name].astype(np.float32)
        b[:, 2:] += b[:, :2]
        out.append(make_record(name, img_dir / name, b, pids[name]))
    return out


def load_split(root, split):
    """Records of the ``train``, ``gallery`` or ``query`` split (``seqnet_train.data.records``)."""
    if not Path(root).is_dir():
        raise SeqNetError(f"{root}: CUHK-SYSU root folder not found")
    if split == "query":
        p = _protocol_arrays(root, 50)
        boxes = p["q_boxes"].astype(np.int64).astype(np.float32)
        boxes[:, 2:] += boxes[:, :2]
        img_dir = Path(root, "Image", "SSM")
        return [
            make_record(n, img_dir / n, b, [RAW_QUERY_DUMMY])
            for n, b in zip(p["q_names"].tolist(), boxes)
        ]
    images = _images(root)
    pool = _pool(root)
    pids = {n: np.full(len(b), RAW_UNLABELED, dtype=np.int64) for n, b in images.items()}
    if split == "train":
        path = require_file(_anno(root, "test", "train_test", "Train.mat"), "Train.mat")
        t = cached_arrays([path], "train", lambda: _parse_train(path))
        for j, name, box in zip(t["person"].tolist(), t["names"].tolist(), t["boxes"]):
            _label(images, pids, name, box, j + 1, path)
        in_pool = set(pool)
        return add_train_labels(
            _records(root, sorted(n for n in images if n not in in_pool), images, pids)
        )
    if split == "gallery":
        p = _protocol_arrays(root, 50)
        source = _protocol_path(root, 50)
        for q, (name, box) in enumerate(zip(p["q_names"].tolist(), p["q_boxes"])):
            _label(images, pids, name, box, q + 1, source)
        qids = np.repeat(np.arange(len(p["g_counts"])), p["g_counts"])
        pos = ~np.isnan(p["g_boxes"][:, 0])
        for q, i, box in zip(qids[pos].tolist(), p["g_index"][pos].tolist(), p["g_boxes"][pos]):
            _label(images, pids, str(p["names"][i]), box, q + 1, source)
        missing = [n for n in pool if n not in images]
        if missing:
            raise SeqNetError(f"{_anno(root, 'pool.mat')}: {missing[0]} is not in Images.mat")
        return _records(root, pool, images, pids)
    raise SeqNetError(f"unknown split {split!r}; expected train, gallery or query")


def _protocol_path(root, gallery_size):
    return _anno(root, "test", "train_test", f"TestG{gallery_size}.mat")


def _parse_protocol(path, var):
    """Compact arrays of a query protocol: query names/boxes, gallery entries per query."""
    table, q_names, q_boxes, counts, index, boxes = {}, [], [], [], [], []
    try:
        for row in mat5.iter_struct(path, var):
            if "Query" not in row or "Gallery" not in row:
                raise ValueError(f"expected fields Query and Gallery, found {sorted(row)}")
            query, gallery = mat5.decode_struct(row["Query"]), mat5.decode_struct(row["Gallery"])
            q_names.append(query["imname"].strings()[0])
            q_boxes.append(query["idlocate"].numbers(4)[0])
            names, inverse = np.unique(gallery["imname"].strings(), return_inverse=True)
            ids = np.array([table.setdefault(n, len(table)) for n in names.tolist()], np.int32)
            index.append(ids[inverse.reshape(-1)])
            boxes.append(gallery["idlocate"].numbers(4).astype(np.float32))
            counts.append(len(inverse))
    except (ValueError, KeyError, IndexError) as e:
        raise SeqNetError(f"{path}: unexpected structure of {var!r} ({e})") from None
    if np.isnan(np.asarray(q_boxes)).any():
        raise SeqNetError(f"{path}: expected every query of {var!r} to have a 1x4 idlocate")
    return {
        "q_names": np.array(q_names, dtype=str),
        "q_boxes": np.array(q_boxes, dtype=np.float64).reshape(-1, 4),
        "g_counts": np.array(counts, dtype=np.int64),
        "names": np.array(list(table), dtype=str),
        "g_index": np.concatenate(index) if index else np.zeros(0, np.int32),
        "g_boxes": np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
    }


def _protocol_file_arrays(path, var):
    path = require_file(path, f"CUHK-SYSU protocol ({var})")
    return cached_arrays([path], var, lambda: _parse_protocol(path, var))


def _protocol_arrays(root, gallery_size):
    return _protocol_file_arrays(_protocol_path(root, gallery_size), f"TestG{gallery_size}")


def protocol_arrays(root, gallery_size):
    """TestG<gallery_size> as arrays: ``q_names``, ``q_boxes`` (Q x 4 xywh), ``g_counts`` (Q),
    ``names`` (image table), ``g_index`` (into ``names``), ``g_boxes`` (xywh, NaN = no box).

    The compact form of ``load_cuhk_protocol`` for vectorised evaluation.
    """
    if gallery_size not in GALLERY_SIZES:
        raise SeqNetError(f"gallery size {gallery_size}: expected one of {GALLERY_SIZES}")
    return _protocol_arrays(root, gallery_size)


def _as_queries(p):
    names = p["names"].tolist()
    q_boxes = p["q_boxes"].astype(np.int64).astype(np.float32)
    q_boxes[:, 2:] += q_boxes[:, :2]
    g_boxes = np.trunc(p["g_boxes"]).astype(np.float32)  # NaN (no box) stays NaN
    g_boxes[:, 2:] += g_boxes[:, :2]
    has_box = ~np.isnan(g_boxes[:, 0])
    ends = np.cumsum(p["g_counts"])
    out = []
    for q, (name, qbox) in enumerate(zip(p["q_names"].tolist(), q_boxes)):
        lo, hi = (ends[q - 1] if q else 0), ends[q]
        gallery = [{"img_name": names[i], "box": None} for i in p["g_index"][lo:hi].tolist()]
        for k in np.flatnonzero(has_box[lo:hi]).tolist():
            gallery[k]["box"] = g_boxes[lo + k]
        out.append({"query": {"img_name": name, "box": qbox, "pid": q + 1}, "gallery": gallery})
    return out


def load_protocol(root, gallery_size):
    """One dict per query of TestG<gallery_size>, in protocol order (see ``seqnet_train.data``).

    ``gallery_size`` -1 returns TestG50's lists: the evaluation adds the whole pool.
    """
    if gallery_size != -1 and gallery_size not in GALLERY_SIZES:
        raise SeqNetError(f"gallery size {gallery_size}: expected -1 or one of {GALLERY_SIZES}")
    return _as_queries(_protocol_arrays(root, 50 if gallery_size == -1 else gallery_size))


def load_subset(root, name):
    """The ``occlusion`` or ``resolution`` query subset, in the same shape as ``load_protocol``."""
    if name not in SUBSETS:
        raise SeqNetError(f"unknown CUHK-SYSU subset {name!r}; expected one of {sorted(SUBSETS)}")
    rel, var = SUBSETS[name]
    return _as_queries(_protocol_file_arrays(_anno(root, "test", rel), var))
