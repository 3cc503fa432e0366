"""Who is who from frame to frame: a video's detections linked into *tracks*, one person each,
so that a query's appearances are made of one person's frames (issue 33). numpy only.

Why: a query's best match frame by frame flips to look-alikes (another person at similarity
0.8-0.9 for a few frames, beside the query's own 0.85-0.9): grouped as they come, those frames
are reported as appearances of their own. A person is in one place at a time; over a track the
model's similarity is steadier than in any one frame. So, per query:

* ``Tracker`` links each frame's detections to the tracks of the frames before: greedily, the
  pairs of highest overlap first, a pair only when the detection overlaps the track's box
  moved on at the track's speed (IoU >= ``MIN_IOU``) and looks like its last detection
  (embedding cosine >= ``MIN_COSINE``: two people crossing stay apart); a track unmatched for
  more than ``MAX_AGE`` seconds ends; a detection no track takes starts one;
* ``TrackLog.records``: a track's *score* for a query is the median similarity of its
  detections; tracks scoring at least the threshold are taken best first, each unless it shares
  a frame (from its first to its last) with one taken before: two tracks seen at the same
  moment are two people, and only the more similar one can be the query. Each processed frame's
  record is then the detection of the track taken there (or nobody), and
  ``seqnet_runtime.appearances`` groups those records in time as it groups any.
"""

import numpy as np

from seqnet_runtime.boxes import pairwise_iou

MIN_IOU = 0.3  # of a detection with a track's predicted box
MIN_COSINE = 0.3  # of a detection's embedding with its track's last one
MAX_AGE = 1.0  # seconds a track may go unmatched (a missed detection, a short occlusion)


class Tracker:
    """Links detections frame after frame (see the module doc); ``update`` gives each frame's
    detections their track numbers."""

    def __init__(self, max_age=MAX_AGE, min_iou=MIN_IOU, min_cosine=MIN_COSINE):
        self.max_age, self.min_iou, self.min_cosine = max_age, min_iou, min_cosine
        self._live = []  # [track number, last time, last box, velocity per second, embedding]
        self._next = 0

    def update(self, seconds, boxes, embeddings):
        """Track numbers ``(N,)`` for the frame at ``seconds`` (after every earlier frame):
        ``boxes`` ``(N, 4)`` x1y1x2y2, ``embeddings`` ``(N, D)`` unit vectors."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        embeddings = np.asarray(embeddings, np.float64)
        self._live = [tr for tr in self._live if seconds - tr[1] <= self.max_age]
        ids = np.full(len(boxes), -1, np.int64)
        if self._live and len(boxes):
            dt = np.array([seconds - tr[1] for tr in self._live])[:, None]
            predicted = np.stack([tr[2] for tr in self._live]) + dt * np.stack(
                [tr[3] for tr in self._live]
            )
            iou = pairwise_iou(predicted, boxes)
            cosine = np.stack([tr[4] for tr in self._live]) @ embeddings.T
            affinity = iou * cosine  # where and how alike
            affinity[(iou < self.min_iou) | (cosine < self.min_cosine)] = -1
            matched = np.zeros(len(self._live), bool)
            for flat in np.argsort(-affinity, axis=None, kind="stable"):
                t, d = divmod(int(flat), len(boxes))
                if affinity[t, d] < 0:
                    break
                if matched[t] or ids[d] >= 0:
                    continue
                track = self._live[t]
                if seconds > track[1]:
                    track[3] = (boxes[d] - track[2]) / (seconds - track[1])
                track[1], track[2], track[4] = seconds, boxes[d], embeddings[d]
                ids[d], matched[t] = track[0], True
        for d in np.flatnonzero(ids < 0):
            ids[d] = self._next
            self._live.append([self._next, seconds, boxes[d], np.zeros(4), embeddings[d]])
            self._next += 1
        return ids


class TrackLog:
    """One video's detections as the pass sees them: each with its track and its similarity to
    every query (``Q`` queries), kept compact (no embeddings), for ``records``."""

    def __init__(self, queries):
        self.queries = queries
        self.tracker = Tracker()
        self._frames, self._times, self._counts = [], [], []
        self._tracks, self._boxes, self._sims = [], [], []

    def add(self, frame, seconds, boxes, embeddings, sims):
        """One processed frame, in time order: its detections' ``boxes`` ``(N, 4)``,
        ``embeddings`` ``(N, D)`` and ``sims`` ``(Q, N)``."""
        self._frames.append(int(frame))
        self._times.append(float(seconds))
        self._counts.append(len(boxes))
        self._tracks.append(self.tracker.update(seconds, boxes, embeddings))
        self._boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        self._sims.append(np.asarray(sims, np.float32).reshape(self.queries, -1))

    def records(self, query, threshold):
        """``(frame, seconds, similarity or None, box or None)`` per processed frame for the
        query numbered ``query``: the detection of the track taken there (module doc)."""
        if not self._frames:
            return []
        tracks = np.concatenate(self._tracks)
        sims = np.concatenate(self._sims, axis=1)[query].astype(np.float64)
        boxes = np.concatenate(self._boxes)
        at = np.repeat(np.arange(len(self._frames)), self._counts)  # each detection's frame
        taken = np.full(len(self._frames), -1)  # per frame: the detection taken there
        if len(tracks):
            by_track = np.lexsort((sims, tracks))  # each track's rows, least similar first
            starts = np.flatnonzero(np.r_[True, np.diff(tracks[by_track]) != 0])
            sizes = np.diff(np.r_[starts, len(by_track)])
            ranked = sims[by_track]
            scores = (ranked[starts + (sizes - 1) // 2] + ranked[starts + sizes // 2]) / 2
            first = np.minimum.reduceat(at[by_track], starts)
            last = np.maximum.reduceat(at[by_track], starts)
            for n in np.argsort(-scores, kind="stable"):
                if scores[n] < threshold:
                    break
                if (taken[first[n] : last[n] + 1] < 0).all():  # no moment shared
                    rows = by_track[starts[n] : starts[n] + sizes[n]]
                    taken[at[rows]] = rows
        out = []
        for f, (frame, seconds) in enumerate(zip(self._frames, self._times)):
            d = taken[f]
            if d < 0:
                out.append((frame, seconds, None, None))
            else:
                box = [round(float(v), 1) for v in boxes[d]]
                out.append((frame, seconds, float(sims[d]), box))
        return out
