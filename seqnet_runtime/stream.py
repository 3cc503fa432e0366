"""The search pass, the one every search app runs (``seqnet-run``, ``seqnet search``,
``seqnet demo``): frames decoded in a thread into a bounded queue, batches of equal-size frames
through the session while the next ones decode, each frame's detections compared with every
query as they come.

At most ``2 * batch`` decoded frames wait in the queue, and the pass keeps only detections.
Frames whose detections are in the index are not detected again (and, when nobody needs their
pixels, not even decoded).
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seqnet_runtime.images import to_array
from seqnet_runtime.index import TopHits
from seqnet_runtime.tracks import TrackLog

log = logging.getLogger(__name__)

_END = object()  # after the last frame


@dataclass
class Query:
    """A person to search for: the image, the box, and what the pass found."""

    name: str
    path: Path
    image: object  # PIL image
    box: np.ndarray
    embedding: np.ndarray = None
    top: TopHits = None  # the best hits, set by the pass
    per_frame: list = field(default_factory=list)  # (unit, frame, seconds, best sim, its box)


@dataclass
class Run:
    """What a pass did."""

    units: int  # units searched
    frames: int  # frames processed
    detections: int  # people found in them
    partial: bool  # stopped by Ctrl-C
    seconds: float
    tracks: dict = field(default_factory=dict)  # unit -> TrackLog, when the pass tracked


def search_pass(
    session, gallery, queries, cached, *, batch, topk=10, index=None, on_frame=None, track=False
):  # fmt: skip
    """Detect (or take from ``cached``, a loaded index) every frame's people and compare them
    with every query: each query's ``top`` keeps its ``topk`` best hits and ``per_frame`` its
    best match per frame; with ``track`` (frames that follow each other in time: a video) the
    run's ``tracks`` link each unit's detections (``seqnet_runtime.tracks``).
    ``index`` (an ``IndexWriter``) receives every complete unit;
    ``on_frame(unit, frame, array, detections, similarities)`` is called for each frame when
    given (its pixels are then decoded, even where the index has its detections). Memory stays
    flat whatever the gallery's length. Ctrl-C ends the pass early: what was done is kept."""
    current = gallery.units()
    valid = {k: u for k, u in cached.items() if k in current and u.sig == current[k]}
    log.info(
        "gallery index: %d units reused, %d to index, %d removed",
        len(valid), len(current) - len(valid), len([k for k in cached if k not in current]),
    )  # fmt: skip
    for q in queries:
        q.top, q.per_frame = TopHits(q.embedding, topk), []
    unit, frames, detections, partial, tracks = None, 0, 0, False, {}
    start = time.perf_counter()
    bar = tqdm(total=gallery.size_hint(list(current)), desc="searching", unit="frame")
    passes = frames_with_detections(session, gallery, valid, batch, on_frame is not None)
    try:
        for key, i, t, array, dets in passes:
            if key != unit:
                _end(index, unit, valid)
                unit = key
            if index is not None and key not in valid:
                index.add(key, current[key], i, t, dets)
            sims = [dets["embeddings"] @ q.embedding for q in queries]
            if track:
                tracks.setdefault(key, TrackLog(len(queries))).add(
                    i, t, dets["boxes"], dets["embeddings"], np.reshape(sims, (len(queries), -1))
                )
            for q, s in zip(queries, sims):
                q.top.add(key, i, t, dets, s)
                j = int(s.argmax()) if len(s) else None
                box = None if j is None else [round(float(v), 1) for v in dets["boxes"][j]]
                q.per_frame.append((key, i, t, None if j is None else float(s[j]), box))
            if on_frame is not None:
                on_frame(key, i, array, dets, sims)
            frames, detections = frames + 1, detections + len(dets["boxes"])
            bar.update()
    except KeyboardInterrupt:
        partial = True
        log.warning("stopped: writing what was done (%d frames), marked partial", frames)
    finally:
        passes.close()  # stops the decoder
        bar.close()
    if not partial:
        _end(index, unit, valid)
    if index is not None:  # stored units not reached by a stopped pass stay stored
        for key, stored in valid.items():
            if key not in index.units:
                index.reuse(key, stored)
        index.close()
    return Run(len(current), frames, detections, partial, time.perf_counter() - start, tracks)


def _end(index, unit, valid):
    """``unit``'s frames are all through: into the index, new or reused."""
    if index is None or unit is None:
        return
    if unit in valid:
        index.reuse(unit, valid[unit])
    else:
        index.end(unit)


class _UnitEnd:
    """After a unit's last frame."""


class _Decoder(threading.Thread):
    """Puts ``(unit, frame, seconds, array)`` of ``units`` into a bounded queue, a _UnitEnd
    after each unit, then _END (or the exception that stopped it); stops early when ``stop``
    is set."""

    def __init__(self, gallery, units, size):
        super().__init__(daemon=True, name="seqnet-decode")
        self.gallery, self.units = gallery, units
        self.queue = queue.Queue(maxsize=size)
        self.stop = threading.Event()

    def _put(self, item):
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self):
        try:
            for unit in self.units:
                for i, t, image in self.gallery.frames(unit):
                    if not self._put((unit, i, t, to_array(image))):
                        return
                if not self._put(_UnitEnd()):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(e)

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def frames_with_detections(session, gallery, cached, batch, need_pixels):
    """Yield ``(unit, frame, seconds, array | None, detections)`` for every frame of
    ``gallery``, in order.

    ``cached``: valid index units (``seqnet_runtime.index``) whose detections are reused;
    ``need_pixels``: decode cached units too (to draw them), else they yield ``None`` arrays.
    """
    order = list(gallery.units())
    decode = [u for u in order if need_pixels or u not in cached]
    decoder = _Decoder(gallery, decode, max(2, 2 * batch))
    decoder.start()
    try:
        frames = iter(decoder)
        for unit in order:
            if unit in cached and not need_pixels:
                yield from _stored(cached[unit], unit)
                continue
            stored = _stored(cached[unit], unit) if unit in cached else None
            yield from _batched(session, _take(frames, unit), batch, stored)
    finally:
        decoder.stop.set()
        decoder.join(timeout=5)


def _take(frames, unit):
    """The frames of ``unit`` from the decoder's stream (units come one after another)."""
    for item in frames:
        if isinstance(item, _UnitEnd):
            return
        if item[0] != unit:
            raise RuntimeError(f"decoder out of order: {item[0]} in {unit}")
        yield item


def _stored(unit, key):
    """A stored unit's frames with their detections (no pixels), a chunk at a time."""
    for i, t, dets in unit.rows():
        yield key, i, t, None, dets


def _batched(session, frames, batch, stored=None):
    """Detect ``frames`` in batches of up to ``batch`` equal-size frames; with ``stored`` (a
    cached unit's frames), take its detections instead, frame for frame."""
    pending = []

    def flush():
        found = session.detect([p[3] for p in pending]) if pending else []
        if len(found) != len(pending):
            raise RuntimeError(f"{session.name}: {len(found)} results for {len(pending)} frames")
        out = [(*p, d) for p, d in zip(pending, found)]
        pending.clear()
        return out

    for item in frames:
        if stored is not None:
            _, _, _, _, dets = next(stored)
            yield (*item, dets)
            continue
        if pending and (len(pending) == batch or pending[0][3].shape != item[3].shape):
            yield from flush()
        pending.append(item)
    yield from flush()
