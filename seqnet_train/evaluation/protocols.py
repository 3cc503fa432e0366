"""Search protocols as ``search.Protocol`` arrays: CUHK-SYSU TestG<G> and whole pool, PRW (and
JSON queries) by identity, all-gallery or cross-camera (EVALUATION.md)."""

import numpy as np

from seqnet_train.errors import SeqNetError
from seqnet_train.evaluation.search import Protocol
from seqnet_train.identities import RAW_UNLABELED


def _index(names, gallery_names, what):
    lookup = {n: i for i, n in enumerate(gallery_names)}
    missing = [n for n in names if n not in lookup]
    if missing:
        raise SeqNetError(f"{what}: image {missing[0]} is not in the gallery split")
    return np.array([lookup[n] for n in names], dtype=np.int64)


def _from_entries(eq, eimg, boxes, num_q, num_images, name):
    """Protocol from gallery-list entries in order: query, image, x1y1x2y2 box or NaN row.

    Every entry with a box is a GT occurrence, repeated or undetected ones too; a repeated
    image is searched once, with the box of its first entry.
    """
    has_box = ~np.isnan(boxes[:, 0])
    first = np.sort(np.unique(eq * num_images + eimg, return_index=True)[1])
    gt = first[has_box[first]]
    return Protocol(
        name=name,
        n_gt=np.bincount(eq[has_box], minlength=num_q),
        gt_query=eq[gt],
        gt_image=eimg[gt],
        gt_box=boxes[gt],
        gallery_ptr=np.r_[0, np.cumsum(np.bincount(eq[first], minlength=num_q))],
        gallery_image=eimg[first],
    )


def cuhk_protocol(arrays, gallery_names, gallery_size):
    """CUHK-SYSU TestG<G> (``seqnet_train.data.cuhk_sysu.protocol_arrays``); -1 (given TestG50's
    arrays): the whole pool, every image but the query's own, TestG50's GT occurrences."""
    num_q = len(arrays["q_names"])
    eq = np.repeat(np.arange(num_q), arrays["g_counts"])
    eimg = _index(arrays["names"].tolist(), gallery_names, f"TestG{gallery_size}")
    eimg = eimg[arrays["g_index"]]
    boxes = np.trunc(arrays["g_boxes"].astype(np.float64))  # x, y, w, h as int, as published
    boxes[:, 2:] += boxes[:, :2]
    name = "all" if gallery_size == -1 else f"G{gallery_size}"
    protocol = _from_entries(eq, eimg, boxes, num_q, len(gallery_names), name)
    if gallery_size == -1:
        protocol.gallery_ptr = protocol.gallery_image = None
        protocol.exclude_image = _index(arrays["q_names"].tolist(), gallery_names, "TestG50")
    return protocol


def identity_protocol(gallery_records, queries, cross_cam=False, name=None):
    """PRW-style: query q's GT occurrences are the gallery images (not its own; another camera
    when ``cross_cam``) whose annotation holds its identity, GT box = that identity's first box.

    ``queries``: dicts with ``img_name``, ``pid``, ``cam_id`` (``seqnet_train.data.load_queries``).
    """
    names = [r["img_name"] for r in gallery_records]
    lookup = {n: i for i, n in enumerate(names)}
    cams = np.array([r["cam_id"] for r in gallery_records], dtype=np.int64)
    where = {}  # pid -> [(image, first box)]
    for i, r in enumerate(gallery_records):
        seen = set()
        for pid, box in zip(np.asarray(r["pids"]).tolist(), np.asarray(r["boxes"]).reshape(-1, 4)):
            if pid != RAW_UNLABELED and pid not in seen:
                seen.add(pid)
                where.setdefault(pid, []).append((i, box))
    n_gt, gq, gi, gb = [], [], [], []
    own = np.array([lookup.get(q["img_name"], -1) for q in queries], dtype=np.int64)
    qcams = np.array([q.get("cam_id", -1) for q in queries], dtype=np.int64)
    for k, q in enumerate(queries):
        hits = [
            (i, b)
            for i, b in where.get(int(q["pid"]), [])
            if i != own[k] and not (cross_cam and cams[i] == qcams[k])
        ]
        n_gt.append(len(hits))
        gq += [k] * len(hits)
        gi += [i for i, _ in hits]
        gb += [b for _, b in hits]
    return Protocol(
        name=name or ("cross_cam" if cross_cam else "all"),
        n_gt=np.array(n_gt, dtype=np.int64),
        gt_query=np.array(gq, dtype=np.int64),
        gt_image=np.array(gi, dtype=np.int64),
        gt_box=np.array(gb, dtype=np.float64).reshape(-1, 4),
        exclude_image=own,
        query_cams=qcams if cross_cam else None,
    )


def list_protocol(queries, gallery_names, name="all"):
    """Explicit per-query gallery lists (JSON queries with ``gallery``), as in CUHK-SYSU."""
    entries = [(k, g["img_name"], g["box"]) for k, q in enumerate(queries) for g in q["gallery"]]
    eq = np.array([k for k, _, _ in entries], dtype=np.int64)
    eimg = _index([n for _, n, _ in entries], gallery_names, "query gallery lists")
    boxes = np.array(
        [[np.nan] * 4 if b is None else np.asarray(b, np.float64).tolist() for _, _, b in entries],
        dtype=np.float64,
    ).reshape(-1, 4)
    return _from_entries(eq, eimg, boxes, len(queries), len(gallery_names), name)
