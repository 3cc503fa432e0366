"""A query's per-frame matches grouped into *appearances*: "seen from 3.4 s to 6.6 s, best look
at 4.1 s" rather than frames 39, 40, 41, 42 ... of the same sighting (issue 33). numpy only.

Input: one record per processed frame, in time order, ``(frame, time in seconds, similarity
or None when nobody is the query there, box [x1, y1, x2, y2] or None)``: in a video, the
detection of the query's track there (``seqnet_runtime.tracks``), or for any series of frames,
the query's most similar detection in each.

Rules (``group_appearances``):

* a *candidate frame* is one whose best similarity is >= ``threshold``;
* each candidate frame joins an *open* appearance, or starts a new one. An appearance is open
  while the time since its last candidate frame is at most ``gap`` seconds: frames below the
  threshold (or with nobody detected) in between, a dip of up to ``gap`` seconds, do not end it;
* and only when the best box is where that person could be: its centre is at most
  ``(jump + speed * dt) * size`` from the centre of the appearance's last box, ``dt`` the
  seconds between the two frames and ``size`` the mean of the two boxes' longer sides (a
  person's height). ``jump`` (half a person, by default) absorbs the detector's jitter and the
  frames skipped with ``--every``; ``speed`` (one person height per second: a brisk walk) lets
  the person move during a dip. A best box farther away is someone (or somewhere) else: two
  people crossing, or the same person seen at two places, are different appearances;
* when several open appearances could take a frame, the nearest one does (centre distance as a
  share of the allowed one; equal: the most recently seen); so when the best match flips
  between two people frame after frame, each person keeps one appearance instead of the
  sighting breaking into pieces. A frame without a box (or an appearance without one) has no
  position: it fits any open appearance, the most recently seen first;
* an appearance still open when the input ends (the video's end, or a run stopped early) is
  reported as it is: it ends at its last candidate frame.

Each appearance: ``start`` / ``end`` (the times of its first and last candidate frames),
``duration`` (end - start: 0 for a single frame), ``first`` / ``last`` frame, ``best`` (the
candidate frame of highest similarity, the earliest on a tie: frame, time, box, similarity),
``frames`` (how many candidate frames) and ``track`` (every candidate frame: [frame, time,
box, similarity]). Appearances are sorted by best similarity, highest first; equal ones by
start.

A folder of images has no time: there each matching image is its own appearance
(``image_appearances``). ``to_json`` gives the JSON-ready form, rounded as ``matches.json``
rounds (times to 3 decimals, similarities to 4, box coordinates to 1).
"""

from dataclasses import dataclass, field

import numpy as np

DEFAULT_GAP = 2.0  # seconds: a dip or an absence up to this long does not end an appearance
DEFAULT_JUMP = 0.5  # person sizes the best box may move between two frames, at any rate
DEFAULT_SPEED = 1.0  # person sizes per second it may move besides (a brisk walk)


@dataclass
class Appearance:
    """One sighting of the query. Times in seconds (None for a folder of images)."""

    track: list = field(default_factory=list)  # [frame, time, box or None, similarity]

    @property
    def first(self):
        return self.track[0][0]

    @property
    def last(self):
        return self.track[-1][0]

    @property
    def start(self):
        return self.track[0][1]

    @property
    def end(self):
        return self.track[-1][1]

    @property
    def duration(self):
        return None if self.start is None else self.end - self.start

    @property
    def frames(self):
        return len(self.track)

    @property
    def best(self):
        """(frame, time, box, similarity) of the most similar frame, the earliest on a tie."""
        return tuple(max(self.track, key=lambda r: r[3]))  # max keeps the first of equals

    @property
    def similarity(self):
        return max(r[3] for r in self.track)


def _box(box):
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"a box is [x1, y1, x2, y2]; got {box!r}")
    return b


def _reach(a, b, dt, jump, speed):
    """The centre distance of boxes ``a`` and ``b`` as a share of what is allowed after ``dt``
    seconds (<= 1: the same person may have moved so far); 0 when either has no box."""
    if a is None or b is None:
        return 0.0
    ca, cb = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
    size = (max(a[2] - a[0], a[3] - a[1]) + max(b[2] - b[0], b[3] - b[1])) / 2
    allowed = (jump + speed * dt) * max(size, 1e-9)
    distance = float(np.hypot(*(ca - cb)))
    if allowed <= 0:  # jump and speed 0: the very same place only
        return 0.0 if distance == 0 else float("inf")
    return distance / allowed


def _records(frames):
    """The records as (frame, time, similarity, box as an array or None), checked."""
    out = []
    for rec in frames:
        if len(rec) != 4:
            raise ValueError(f"a frame record is (frame, time, similarity, box); got {rec!r}")
        i, t, s, box = rec
        out.append((int(i), None if t is None else float(t), None if s is None else float(s),
                    _box(box)))  # fmt: skip
    return out


def _sorted(appearances):
    return sorted(appearances, key=lambda a: (-a.similarity, a.start or 0.0, a.first))


def group_appearances(
    frames, threshold, *, gap=DEFAULT_GAP, jump=DEFAULT_JUMP, speed=DEFAULT_SPEED
):
    """A video's appearances of one query (see the module doc for the rules), best first.

    ``frames``: ``(frame, time, similarity or None, box or None)`` per processed frame, in time
    order; ``threshold``: the cosine similarity a candidate frame reaches; ``gap``: the longest
    time (seconds) between two candidate frames of one appearance; ``jump`` and ``speed``: the
    position rule (``jump=float("inf")`` turns it off). Returns a list of ``Appearance``.
    """
    if gap < 0 or jump < 0 or speed < 0:
        raise ValueError("gap, jump and speed are 0 or more")
    records = _records(frames)
    open_, done, last_t = [], [], None  # open: [appearance, its last box]
    for i, t, s, box in records:
        if t is None:
            raise ValueError("a video frame needs its time; for images use image_appearances")
        if last_t is not None and t < last_t:
            raise ValueError(f"frames out of time order: {t} s after {last_t} s")
        last_t = t
        if s is None or not s >= threshold:  # NaN too
            continue
        still = []
        for entry in open_:  # appearances unseen for longer than the gap are over
            (still if t - entry[0].end <= gap else done).append(entry)
        open_ = still
        fits = [
            (_reach(last_box, box, t - a.end, jump, speed), -a.end, n)
            for n, (a, last_box) in enumerate(open_)
        ]
        fits = [f for f in fits if f[0] <= 1.0]
        if fits:
            entry = open_[min(fits)[2]]
        else:
            entry = [Appearance(), None]
            open_.append(entry)
        entry[0].track.append([i, t, None if box is None else box.tolist(), s])
        if box is not None:
            entry[1] = box
    return _sorted([a for a, _ in done + open_])


def image_appearances(frames, threshold):
    """A folder of images: each image whose best similarity is >= ``threshold`` is its own
    appearance (no time: ``start``, ``end`` and ``duration`` are None). ``frames`` as for
    ``group_appearances``, the time being ignored (None is fine). Best first."""
    out = []
    for i, _, s, box in _records(frames):
        if s is not None and s >= threshold:
            out.append(Appearance([[i, None, None if box is None else box.tolist(), s]]))
    return _sorted(out)


def _round(v, digits):
    return None if v is None else round(float(v), digits)


def _box_json(box):
    return None if box is None else [round(float(v), 1) for v in box]


def to_json(appearances):
    """The appearances as JSON-ready dicts, rounded as ``matches.json``: ``start``, ``end``,
    ``duration``, ``first``, ``last``, ``frames``, ``best`` {frame, time, box, similarity},
    ``track`` [[frame, time, box, similarity], ...]."""
    out = []
    for a in appearances:
        frame, time, box, sim = a.best
        out.append({
            "start": _round(a.start, 3), "end": _round(a.end, 3),
            "duration": _round(a.duration, 3), "first": a.first, "last": a.last,
            "frames": a.frames,
            "best": {"frame": frame, "time": _round(time, 3), "box": _box_json(box),
                     "similarity": _round(sim, 4)},
            "track": [[i, _round(t, 3), _box_json(b), _round(s, 4)] for i, t, b, s in a.track],
        })  # fmt: skip
    return out
