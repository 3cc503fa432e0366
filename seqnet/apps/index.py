"""The gallery index: every unit's detections and embeddings, kept on disk between queries.

Stored with ``torch.save`` as plain tensors and lists (read back with ``weights_only=True``):
``{"version", "model": model digest, "units": {unit key: {"sig", "frames" (F,) int64, "times"
(F,) float64, "counts" (F,) detections per frame, "boxes" (N, 4) x1y1x2y2, "scores" (N,),
"embeddings" (N, D)}}}``. Units whose signature changed, and every unit when the model digest
changed, are detected again; the rest are reused.
"""

import itertools
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from seqnet.apps.output import atomic_save
from seqnet.evaluation.outputs import split_rows

log = logging.getLogger(__name__)

VERSION = 1


def load_index(path, model):
    """The units stored at ``path`` for the model digest ``model``; ``{}`` when there is no
    index, it is unreadable, or it was built by another model or config."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: rebuild rather than fail
        log.warning("ignoring unreadable index %s (%s); re-indexing", path, e.__class__.__name__)
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION:
        log.info("index %s has another format; re-indexing", path)
        return {}
    if data.get("model") != model:
        log.info("the model or its config changed since %s was built; re-indexing", path)
        return {}
    return data["units"]


def save_index(path, units, model):
    atomic_save({"version": VERSION, "model": model, "units": units}, path)


def _finish(sig, rows, dim):
    frames = [r[0] for r in rows]
    dets = [r[2] for r in rows]
    return {
        "sig": sig,
        "frames": torch.tensor(frames, dtype=torch.int64),
        "times": torch.tensor([r[1] for r in rows], dtype=torch.float64),
        "counts": torch.tensor([len(d["boxes"]) for d in dets], dtype=torch.int64),
        "boxes": torch.cat([d["boxes"].reshape(-1, 4) for d in dets]).float(),
        "scores": torch.cat([d["scores"].reshape(-1) for d in dets]).float(),
        "embeddings": torch.cat([d["embeddings"].reshape(-1, dim) for d in dets]).float(),
    }


def update_index(units, gallery, detect, batch_size, dim=256):
    """Bring ``units`` up to date with ``gallery``: drop removed units, detect new or changed
    ones with ``detect(list of PIL images) -> list of predict dicts``, batch by batch.

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
            for (k, i, t, _), det in zip(batch, detect([b[3] for b in batch])):
                rows[k].append((i, t, det))
            bar.update(len(batch))
    return kept | {k: _finish(current[k], rows[k], dim) for k in stale}


def units_from_outputs(outputs, files, gallery):
    """The units of an evaluated gallery from the evaluation's outputs
    (``seqnet.evaluation.outputs``): the same model and config detect the same people, so a
    search of that gallery need not detect it again.

    ``files``: the outputs' gallery image names -> their files, each one an image of ``gallery``.
    """
    signatures = gallery.units()
    counts = outputs["gallery_counts"]
    units = {}
    for name, dets, feats in zip(
        outputs["gallery_names"],
        split_rows(outputs["gallery_dets"], counts),
        split_rows(outputs["gallery_feats"], counts),
    ):
        key = str(Path(files[name]).resolve())
        found = {
            "boxes": torch.from_numpy(dets[:, :4]),
            "scores": torch.from_numpy(dets[:, 4]),
            "embeddings": torch.from_numpy(feats),
        }
        units[key] = _finish(signatures[key], [(-1, 0.0, found)], feats.shape[1])
    return units


def rank(units, query, topk):
    """The ``topk`` detections most similar to ``query`` (D,) across all units, best first:
    dicts with ``unit``, ``frame``, ``time``, ``box`` [x1, y1, x2, y2], ``score`` (similarity)
    and ``det_score`` (detection confidence)."""
    refs = [  # (unit key, frame row) of every detection, in the order of the tensors below
        (key, row)
        for key, u in units.items()
        for row in torch.arange(len(u["counts"])).repeat_interleave(u["counts"]).tolist()
    ]
    if not refs:
        return []
    emb = torch.cat([u["embeddings"] for u in units.values()])
    boxes = torch.cat([u["boxes"] for u in units.values()])
    det_scores = torch.cat([u["scores"] for u in units.values()])
    sims = emb @ query.to(emb)
    out = []
    for j in sims.topk(min(topk, len(sims))).indices.tolist():
        key, row = refs[j]
        out.append(
            {
                "unit": key,
                "frame": int(units[key]["frames"][row]),
                "time": round(float(units[key]["times"][row]), 3),
                "box": [round(v, 1) for v in boxes[j].tolist()],
                "score": round(float(sims[j]), 4),
                "det_score": round(float(det_scores[j]), 4),
            }
        )
    return out
