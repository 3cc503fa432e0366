"""The gallery index: every unit's detections and embeddings, kept on disk between queries.

A folder, written as frames are processed so that memory stays flat whatever the gallery's
length: ``meta.json`` ``{"version", "model": the session's key, "units": [[unit key,
signature, [[chunk file, bytes], ...]], ...]}`` and chunk files ``c<unit>_<n>.npz`` (read with
``allow_pickle=False``) of up to ``CHUNK_FRAMES`` frames each: ``frames`` (F,) int64, ``times``
(F,) float64, ``counts`` (F,) detections per frame, ``boxes`` (N, 4) x1y1x2y2, ``scores`` (N,)
and ``embeddings`` (N, D). Each chunk is written atomically, and ``meta.json`` last: it lists
complete units only, so an index stopped half-way holds what was finished. Units whose
signature changed, and every unit when the session's key changed, are detected again; the rest
are reused, read a chunk at a time.
"""

import heapq
import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqnet_runtime import fs

log = logging.getLogger(__name__)

VERSION = 3  # 1 was a torch.save file, 2 one .npz holding everything
META = "meta.json"
ARRAYS = ("frames", "times", "counts", "boxes", "scores", "embeddings")
CHUNK_FRAMES = 256


@dataclass(frozen=True)
class Unit:
    """A unit stored in an index: its signature and chunk files (in ``folder``)."""

    folder: Path
    sig: list
    chunks: tuple

    def rows(self):
        """``(frame, seconds, detections)`` for each of the unit's frames, a chunk at a time."""
        for name in self.chunks:
            with np.load(self.folder / name, allow_pickle=False) as data:
                chunk = {a: data[a] for a in ARRAYS}
            ends = np.cumsum(chunk["counts"])
            for n, (i, t) in enumerate(zip(chunk["frames"], chunk["times"])):
                rows = slice(ends[n] - chunk["counts"][n], ends[n])
                yield int(i), float(t), {a: chunk[a][rows] for a in ARRAYS[3:]}

    def arrays(self):
        """The whole unit at once, as one chunk (for scoring, not for search): ``frames``,
        ``times`` and ``counts`` per frame; ``boxes``, ``scores``, ``embeddings`` per
        detection."""
        parts = []
        for name in self.chunks:
            with np.load(self.folder / name, allow_pickle=False) as data:
                parts.append({a: data[a] for a in ARRAYS})
        return {a: np.concatenate([p[a] for p in parts]) for a in ARRAYS} if parts else {}


def load_index(folder, model=None, partial=False):
    """``{unit key: Unit}`` stored in ``folder`` for the session key ``model`` (None: whatever
    model built it); ``{}`` when there is no index, it is unreadable, or it was built by another
    model or config. ``partial``: also the units a stopped pass did not finish (for drawing
    what was done; never reused)."""
    folder = Path(folder)
    if not (folder / META).is_file():
        return {}
    try:
        meta = json.loads((folder / META).read_text())
        if meta.get("version") != VERSION:
            log.info("index %s has another format; re-indexing", folder)
            return {}
        if model is not None and meta.get("model") != model:
            log.info("the model or its config changed since %s was built; re-indexing", folder)
            return {}
        units = {}
        for key, sig, chunks in meta["units"] + (meta.get("partial", []) if partial else []):
            for name, size in chunks:
                if (folder / name).stat().st_size != size:
                    raise ValueError(f"{name} is not the size it was written with")
            units[key] = Unit(folder, sig, tuple(name for name, _ in chunks))
        return units
    except Exception as e:  # truncated or foreign files: rebuild rather than fail
        log.warning("ignoring unreadable index %s (%s); re-indexing", folder, e.__class__.__name__)
        return {}


class IndexWriter:
    """Writes an index into ``folder`` as frames come: ``reuse`` a stored unit, ``add`` each
    frame of a new one, ``end`` it, and ``close`` (writes ``meta.json``: the units ended or
    reused). Holds at most one chunk of detections in memory."""

    def __init__(self, folder, model, dim):
        self.folder, self.model, self.dim = Path(folder), model, dim
        self.folder.mkdir(parents=True, exist_ok=True)
        self.units = {}  # key -> [sig, [[chunk file, bytes]]], complete
        self._open = {}  # key -> (sig, chunks written, pending rows)
        self._partial = {}  # key -> [sig, chunks]: not ended when closed
        self._prefix = f"c{secrets.token_hex(6)}_"  # fresh names: a reused chunk stays
        self._chunks = 0

    def reuse(self, key, unit):
        """Keep a stored unit: its chunks are linked (or copied) here unless already here."""
        for name in unit.chunks:
            target = self.folder / name
            if unit.folder.resolve() != self.folder.resolve() and not target.exists():
                try:
                    os.link(unit.folder / name, target)
                except OSError:  # another file system
                    shutil.copyfile(unit.folder / name, target)
        self.units[key] = [unit.sig, [[n, (self.folder / n).stat().st_size] for n in unit.chunks]]

    def add(self, key, sig, frame, seconds, dets):
        """One frame of the new unit ``key`` (``dets``: a session's detections)."""
        _, chunks, rows = self._open.setdefault(key, (sig, [], []))
        rows.append((frame, seconds, dets))
        if len(rows) >= CHUNK_FRAMES:
            chunks.append(self._flush(rows))

    def end(self, key):
        """The unit ``key`` is complete (every frame added)."""
        sig, chunks, rows = self._open.pop(key)
        if rows:
            chunks.append(self._flush(rows))
        self.units[key] = [sig, chunks]

    def close(self):
        """Write ``meta.json`` and remove unlisted chunks. Units never ended are listed apart,
        as ``partial``: a later pass detects them again."""
        for key in list(self._open):
            sig, chunks, rows = self._open.pop(key)
            self._partial[key] = [sig, chunks + ([self._flush(rows)] if rows else [])]
        listed = {
            n for _, chunks in [*self.units.values(), *self._partial.values()] for n, _ in chunks
        }
        meta = {
            "version": VERSION,
            "model": self.model,
            "units": [[k, *entry] for k, entry in self.units.items()],
            "partial": [[k, *entry] for k, entry in self._partial.items()],
        }
        fs.write_json(self.folder / META, meta)
        for path in self.folder.glob("c*.npz"):
            if path.name not in listed:
                path.unlink(missing_ok=True)

    def _flush(self, rows):
        name = f"{self._prefix}{self._chunks:06d}.npz"
        self._chunks += 1
        with fs.atomic_file(self.folder / name) as f:
            np.savez(f, **chunk_arrays(rows, self.dim))
        rows.clear()
        return [name, (self.folder / name).stat().st_size]


def chunk_arrays(rows, dim):
    """A chunk's arrays from ``rows``: ``(frame, seconds, detections)`` per frame."""
    dets = [r[2] for r in rows]
    return {
        "frames": np.array([r[0] for r in rows], np.int64),
        "times": np.array([r[1] for r in rows], np.float64),
        "counts": np.array([len(d["boxes"]) for d in dets], np.int64),
        "boxes": _stack([d["boxes"] for d in dets], (-1, 4)),
        "scores": _stack([d["scores"] for d in dets], (-1,)),
        "embeddings": _stack([d["embeddings"] for d in dets], (-1, dim)),
    }


def _stack(parts, shape):
    parts = [np.reshape(p, shape) for p in parts] or [np.zeros((0, *shape[1:]))]
    return np.concatenate(parts).astype(np.float32)


class TopHits:
    """The ``k`` detections most similar to a query, kept as frames stream by (equal
    similarities in arrival order)."""

    def __init__(self, query, k):
        self.query, self.k = np.asarray(query, np.float32), k
        self._heap, self._seen = [], 0

    def add(self, unit, frame, seconds, dets, sims=None):
        """Consider a frame's detections (``sims``: their similarities, when known)."""
        sims = dets["embeddings"] @ self.query if sims is None else sims
        if self.k < len(sims):
            best = np.argpartition(-sims, self.k - 1)[: self.k]
            order = np.sort(best)  # arrival order among the frame's rows
        else:
            order = range(len(sims))
        for j in order:
            item = (float(sims[j]), -(self._seen + int(j)), unit, frame, seconds, dets, int(j))
            if len(self._heap) < self.k:
                heapq.heappush(self._heap, item[:2] + (self._hit(item),))
            elif item[:2] > self._heap[0][:2]:
                heapq.heapreplace(self._heap, item[:2] + (self._hit(item),))
        self._seen += len(sims)

    @staticmethod
    def _hit(item):
        sim, _, unit, frame, seconds, dets, j = item
        return {
            "unit": unit,
            "frame": int(frame),
            "time": round(float(seconds), 3),
            "box": [round(float(v), 1) for v in dets["boxes"][j]],
            "score": round(sim, 4),
            "det_score": round(float(dets["scores"][j]), 4),
        }

    def hits(self):
        """Best first: dicts with ``unit``, ``frame``, ``time``, ``box`` [x1, y1, x2, y2],
        ``score`` (similarity) and ``det_score`` (detection confidence)."""
        return [h for _, _, h in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]
