"""The gallery index: every unit's detections and embeddings, kept on disk between queries.

One ``.npz`` file (read with ``allow_pickle=False``): ``meta``, a JSON text ``{"version",
"model": the session's key, "units": [[unit key, signature], ...]}``, and per unit ``n`` the
arrays ``n/frames`` (F,) int64, ``n/times`` (F,) float64, ``n/counts`` (F,) detections per
frame, ``n/boxes`` (N, 4) x1y1x2y2, ``n/scores`` (N,) and ``n/embeddings`` (N, D). Units whose
signature changed, and every unit when the session's key changed, are detected again; the
rest are reused.
"""

import itertools
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seqnet_runtime.output import staged_file

log = logging.getLogger(__name__)

VERSION = 2  # 1 was a torch.save file
ARRAYS = ("frames", "times", "counts", "boxes", "scores", "embeddings")


def load_index(path, model):
    """The units stored at ``path`` for the session key ``model``; ``{}`` when there is no
    index, it is unreadable, or it was built by another model or config."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("version") != VERSION:
                log.info("index %s has another format; re-indexing", path)
                return {}
            if meta.get("model") != model:
                log.info("the model or its config changed since %s was built; re-indexing", path)
                return {}
            return {
                key: {"sig": sig, **{a: data[f"{n}/{a}"] for a in ARRAYS}}
                for n, (key, sig) in enumerate(meta["units"])
            }
    except Exception as e:  # truncated or foreign file: rebuild rather than fail
        log.warning("ignoring unreadable index %s (%s); re-indexing", path, e.__class__.__name__)
        return {}


def save_index(path, units, model):
    """Write ``units`` to ``path`` atomically."""
    meta = {"version": VERSION, "model": model, "units": [[k, u["sig"]] for k, u in units.items()]}
    arrays = {f"{n}/{a}": u[a] for n, u in enumerate(units.values()) for a in ARRAYS}
    with staged_file(path) as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def make_unit(sig, rows, dim):
    """A unit from its signature and ``rows``: ``(frame, seconds, detections)`` per frame,
    detections being a session's dict (``boxes``, ``scores``, ``embeddings``)."""
    dets = [r[2] for r in rows]
    return {
        "sig": sig,
        "frames": np.array([r[0] for r in rows], np.int64),
        "times": np.array([r[1] for r in rows], np.float64),
        "counts": np.array([len(d["boxes"]) for d in dets], np.int64),
        "boxes": np.concatenate(
            [np.reshape(d["boxes"], (-1, 4)) for d in dets] or [np.zeros((0, 4))]
        ).astype(np.float32),
        "scores": np.concatenate(
            [np.reshape(d["scores"], -1) for d in dets] or [np.zeros(0)]
        ).astype(np.float32),
        "embeddings": np.concatenate(
            [np.reshape(d["embeddings"], (-1, dim)) for d in dets] or [np.zeros((0, dim))]
        ).astype(np.float32),
    }


def update_index(units, gallery, detect, batch_size, dim=256):
    """Bring ``units`` up to date with ``gallery``: drop removed units, detect new or changed
    ones with ``detect(list of PIL images) -> list of detection dicts``, batch by batch.

    Returns the new units dict (``units`` is not modified).
    """
    current = gallery.units()
    kept = {k: u for k, u in units.items() if k in current and u["sig"] == current[k]}
    stale = [k for k in current if k not in kept]
    log.info(
        "gallery index: %d units reused, %d to index, %d removed",
        len(kept),
        len(stale),
        len([k for k in units if k not in current]),
    )
    if not stale:
        return kept
    frames = ((k, i, t, im) for k in stale for i, t, im in gallery.frames(k))
    rows = {k: [] for k in stale}
    with tqdm(total=gallery.size_hint(stale), desc="indexing", unit="frame") as bar:
        while batch := list(itertools.islice(frames, batch_size)):
            found = detect([b[3] for b in batch])
            if len(found) != len(batch):
                raise RuntimeError(f"detect returned {len(found)} results for {len(batch)} frames")
            for (k, i, t, _), det in zip(batch, found):
                rows[k].append((i, t, det))
            bar.update(len(batch))
    return kept | {k: make_unit(current[k], rows[k], dim) for k in stale}


def rank(units, query, topk):
    """The ``topk`` detections most similar to ``query`` (D,) across all units, best first
    (equal similarities in index order): dicts with ``unit``, ``frame``, ``time``, ``box``
    [x1, y1, x2, y2], ``score`` (similarity) and ``det_score`` (detection confidence)."""
    refs = [  # (unit key, frame row) of every detection, in the order of the arrays below
        (key, row)
        for key, u in units.items()
        for row in np.repeat(np.arange(len(u["counts"])), u["counts"])
    ]
    if not refs:
        return []
    emb = np.concatenate([u["embeddings"] for u in units.values()])
    boxes = np.concatenate([u["boxes"] for u in units.values()])
    det_scores = np.concatenate([u["scores"] for u in units.values()])
    sims = emb @ np.asarray(query, emb.dtype)
    out = []
    for j in np.argsort(-sims, kind="stable")[:topk]:
        key, row = refs[j]
        out.append(
            {
                "unit": key,
                "frame": int(units[key]["frames"][row]),
                "time": round(float(units[key]["times"][row]), 3),
                "box": [round(float(v), 1) for v in boxes[j]],
                "score": round(float(sims[j]), 4),
                "det_score": round(float(det_scores[j]), 4),
            }
        )
    return out
