"""seqnet_runtime.tracks: detections linked frame to frame, and a query's records taken from
its tracks (one person at a time, judged over the whole track)."""

import math

import numpy as np
import pytest

from seqnet_runtime.appearances import group_appearances
from seqnet_runtime.tracks import MAX_AGE, Tracker, TrackLog

FPS = 10


def look(angle):
    """A unit embedding (2-D: the cosine of two looks is the cosine of their angle)."""
    return [math.cos(angle), math.sin(angle)]


def walker(f, x0=0.0, speed=5.0):
    """A 20 x 60 person walking right ``speed`` pixels a frame."""
    x = x0 + speed * f
    return [x, 10.0, x + 20.0, 70.0]


def test_a_walking_person_is_one_track_through_missed_frames():
    tracker, ids = Tracker(), []
    for f in range(30):
        if 10 <= f < 14:  # four frames (0.4 s) missed: the track waits, its box moves on
            assert len(tracker.update(f / FPS, np.zeros((0, 4)), np.zeros((0, 2)))) == 0
            continue
        ids.append(int(tracker.update(f / FPS, [walker(f)], [look(0)])[0]))
    assert set(ids) == {0}


def test_a_track_ends_after_max_age():
    tracker = Tracker()
    first = tracker.update(0.0, [walker(0, speed=0)], [look(0)])
    later = tracker.update(MAX_AGE + 0.1, [walker(0, speed=0)], [look(0)])
    assert first[0] != later[0]


def _pause_and_pass(f, start, step):
    """x of someone walking ``step`` pixels a frame from ``start``, standing still in 10-14."""
    return start + step * (min(f, 10) + max(f - 14, 0))


def test_two_people_passing_each_other_keep_their_tracks():
    """A walks right, B left; they stop side by side (10 pixels apart), then walk on through
    each other: by place alone each track would take the other's detection (A's last box is
    where B now is), but they look unlike (cosine 0): no swap."""
    tracker, a_ids, b_ids = Tracker(), set(), set()
    for f in range(25):
        a, b = _pause_and_pass(f, 0, 10), _pause_and_pass(f, 210, -10)
        boxes = [[a, 10, a + 20, 70], [b, 10, b + 20, 70]]
        ids = tracker.update(f / FPS, boxes, [look(0), look(math.pi / 2)])
        a_ids.add(int(ids[0]))
        b_ids.add(int(ids[1]))
    assert len(a_ids) == len(b_ids) == 1 and a_ids != b_ids
    # the same scene with look-alikes: place decides, and the tracks swap
    tracker, a_ids = Tracker(), set()
    for f in range(25):
        a, b = _pause_and_pass(f, 0, 10), _pause_and_pass(f, 210, -10)
        ids = tracker.update(f / FPS, [[a, 10, a + 20, 70], [b, 10, b + 20, 70]], [look(0)] * 2)
        a_ids.add(int(ids[0]))
    assert len(a_ids) == 2


def test_someone_else_at_the_same_place_starts_a_track():
    tracker = Tracker()
    a = tracker.update(0.0, [walker(0, speed=0)], [look(0)])
    b = tracker.update(0.1, [walker(0, speed=0)], [look(math.pi / 2)])  # cosine 0
    assert a[0] != b[0]


def _log(frames):
    """A TrackLog with one query from ``frames``: per frame a list of (box, similarity); each
    detection's embedding is its similarity's angle, the query being look(0)."""
    log = TrackLog(1)
    for f, dets in enumerate(frames):
        boxes = np.array([b for b, _ in dets], np.float32).reshape(-1, 4)
        sims = np.array([[s for _, s in dets]], np.float32)
        embeddings = np.array([look(math.acos(s)) for _, s in dets], np.float32).reshape(-1, 2)
        log.add(f, f / FPS, boxes, embeddings, sims)
    return log


def test_the_query_is_the_more_similar_of_two_people_seen_together():
    """The query (A, 0.85) beside a look-alike (B, 0.8 with spikes to 0.95): frame by frame the
    best match flips to B, but A and B are seen at the same moments and A is more like the
    query over its track: every record is A's."""
    a_sims = [0.85] * 30
    b_sims = [0.95 if f % 5 == 0 else 0.8 for f in range(30)]
    frames = [
        [(walker(f, 0), a_sims[f]), (walker(f, 100), b_sims[f])] for f in range(30)
    ]  # fmt: skip
    records = _log(frames).records(0, 0.5)
    assert [r[0] for r in records] == list(range(30))
    assert all(r[2] == pytest.approx(0.85, abs=1e-6) for r in records)
    assert all(r[3] == [round(v, 1) for v in walker(r[0], 0)] for r in records)
    # the frames' own best matches would have been B's in a fifth of them
    assert sum(max(b_sims[f], a_sims[f]) > 0.9 for f in range(30)) == 6


def test_a_track_is_judged_as_a_whole():
    """Alone in the video, a person at 0.3 with two frames at 0.7 (above the threshold) is not
    the query; a person at 0.8 with a dip to 0.3 is, dip and all (the dip stays a dip)."""
    spiky = [0.7 if f in (3, 4) else 0.3 for f in range(10)]
    dipping = [0.3 if f in (13, 14) else 0.8 for f in range(10, 20)]
    frames = [[(walker(f), spiky[f])] for f in range(10)]
    frames += [[] for _ in range(10, 10 + int(FPS * MAX_AGE) + 2)]  # the first track ends
    gone = len(frames)
    frames += [[(walker(f), dipping[f - 10])] for f in range(10, 20)]
    records = _log(frames).records(0, 0.5)
    assert all(r[2] is None for r in records[:gone])
    taken = [r[2] for r in records[gone:]]
    assert taken == pytest.approx(dipping, abs=1e-6)
    found = group_appearances(records, 0.5)
    assert [(a.first, a.last, a.frames) for a in found] == [(gone, gone + 9, 8)]


def test_two_appearances_of_one_person_apart_in_time():
    """The query leaves and comes back (two tracks, no moment shared): both taken."""
    frames = [[(walker(f), 0.9)] for f in range(10)]
    frames += [[] for _ in range(40)]
    frames += [[(walker(f, 200, -5), 0.9)] for f in range(10)]
    records = _log(frames).records(0, 0.5)
    found = group_appearances(records, 0.5)
    assert sorted((a.first, a.last) for a in found) == [(0, 9), (50, 59)]


def test_records_of_an_empty_log_and_of_frames_without_anyone():
    assert TrackLog(2).records(1, 0.5) == []
    records = _log([[], [(walker(1), 0.9)], []]).records(0, 0.5)
    assert [(r[0], r[2] is None, r[3] is None) for r in records] == [
        (0, True, True), (1, False, False), (2, True, True)
    ]  # fmt: skip
