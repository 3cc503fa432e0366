"""The streaming pass over a gallery: frames decoded in a thread into a bounded queue, batches
of equal-size frames through the session while the next ones decode, each frame's results
handed on in order as they come.

Memory stays bounded whatever the video's length: at most ``2 * batch`` decoded frames wait in
the queue, and the caller keeps only detections. Frames whose detections are in the index are
not detected again (and, when nobody needs their pixels, not even decoded).
"""

import logging
import queue
import threading

import numpy as np

from seqnet_runtime.images import to_array

log = logging.getLogger(__name__)

_END = object()  # after the last frame


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
    """A cached unit's frames with their stored detections (no pixels)."""
    ends = np.cumsum(unit["counts"])
    for n, (i, t) in enumerate(zip(unit["frames"], unit["times"])):
        rows = slice(ends[n] - unit["counts"][n], ends[n])
        yield (
            key,
            int(i),
            float(t),
            None,
            {
                "boxes": unit["boxes"][rows],
                "scores": unit["scores"][rows],
                "embeddings": unit["embeddings"][rows],
            },
        )


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
