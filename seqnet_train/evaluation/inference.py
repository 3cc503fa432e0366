"""One inference pass over the test splits, producing the outputs file's contents.

Everything goes through a runtime session (``seqnet_runtime.backend.Session``), so the PyTorch
model and an exported package are evaluated by the same code. Gallery images: detections +
CWS-weighted embeddings (``session.detect``), or with ``use_gt`` the GT boxes, score 1,
embedded by the query path (the upper bound of EVALUATION.md). Query images: the query box's
embedding (``session.embed``) and the image seen as a gallery with the query box forced first
(``session.detect(..., context_boxes)``), CBGM's context.
Each of ``world_size`` processes infers every ``world_size``-th image; ``merge_shards`` puts
their parts back in order.
"""

import numpy as np
from tqdm import tqdm

from seqnet_train.data import build_test_loader

EMPTY = np.zeros((0, 5), np.float32)


def _arrays(images):
    """The loader's (3, H, W) tensors in [0, 1] as the H x W x 3 float32 arrays a session
    takes (the same values)."""
    return [img.permute(1, 2, 0).numpy() for img in images]


def _rows(out):
    dets = np.concatenate([out["boxes"].reshape(-1, 4), out["scores"].reshape(-1, 1)], 1)
    return dets.astype(np.float32), out["embeddings"].astype(np.float32)


def _gallery(session, cfg, records, use_gt, show):
    dets, feats = [], []
    for images, targets in tqdm(build_test_loader(cfg, records), "gallery", disable=not show):
        images = _arrays(images)
        if use_gt:
            for image, t in zip(images, targets, strict=True):
                boxes = t["boxes"].numpy()
                found = {"boxes": boxes, "scores": np.ones(len(boxes), np.float32)}
                d, e = _rows({**found, "embeddings": session.embed(image, boxes)})
                dets.append(d)
                feats.append(e)
        else:
            for out in session.detect(images):
                d, e = _rows(out)
                dets.append(d)
                feats.append(e)
    return dets, feats


def _queries(session, cfg, records, show):
    box_feats, dets, feats = [], [], []
    for images, targets in tqdm(build_test_loader(cfg, records), "queries", disable=not show):
        images = _arrays(images)
        boxes = [t["boxes"][:1].numpy() for t in targets]
        box_feats += [session.embed(im, b).reshape(-1) for im, b in zip(images, boxes)]
        for out in session.detect(images, context_boxes=boxes):
            d, e = _rows(out)
            dets.append(d)
            feats.append(e)
    return box_feats, dets, feats


def infer(session, cfg, gallery, queries, use_gt=False, rank=0, world_size=1):
    """This process's share of the outputs (see ``merge_shards``), from a runtime session
    (any backend: the PyTorch model, or an exported package).

    gallery/queries: records of the gallery and query splits (``seqnet_train.data.load_split``).
    """
    g_idx = list(range(rank, len(gallery), world_size))
    q_idx = list(range(rank, len(queries), world_size))
    show = rank == 0
    g_dets, g_feats = _gallery(session, cfg, [gallery[i] for i in g_idx], use_gt, show)
    q_box, q_dets, q_feats = _queries(session, cfg, [queries[i] for i in q_idx], show)
    return {
        "gallery_index": g_idx, "gallery_dets": g_dets, "gallery_feats": g_feats,
        "query_index": q_idx, "query_box_feats": q_box, "query_dets": q_dets,
        "query_feats": q_feats,
    }  # fmt: skip


def merge_shards(parts, gallery, queries, meta):
    """The outputs dict (``seqnet_train.evaluation.outputs``) from every process's ``infer``
    part."""

    def ordered(split, key):
        pairs = sorted((i, x) for p in parts for i, x in zip(p[f"{split}_index"], p[key]))
        return [x for _, x in pairs]

    g_dets, g_feats = ordered("gallery", "gallery_dets"), ordered("gallery", "gallery_feats")
    q_dets, q_feats = ordered("query", "query_dets"), ordered("query", "query_feats")
    dim = next((f.shape[1] for f in g_feats + q_feats if len(f)), 256)
    return {
        "gallery_names": [r["img_name"] for r in gallery],
        "gallery_counts": np.array([len(d) for d in g_dets], dtype=np.int64),
        "gallery_dets": np.concatenate(g_dets + [EMPTY]),
        "gallery_feats": np.concatenate(g_feats + [np.zeros((0, dim), np.float32)]),
        "query_names": [r["img_name"] for r in queries],
        "query_box_feats": np.stack(ordered("query", "query_box_feats")).astype(np.float32),
        "query_counts": np.array([len(d) for d in q_dets], dtype=np.int64),
        "query_dets": np.concatenate(q_dets + [EMPTY]),
        "query_feats": np.concatenate(q_feats + [np.zeros((0, dim), np.float32)]),
        "meta": dict(meta),
    }
