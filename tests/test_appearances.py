"""``seqnet_runtime.appearances``: per-frame matches grouped into appearances, on hand-made
series (10 frames a second; boxes of people 40 pixels tall)."""

import json

import pytest

from seqnet_runtime.appearances import (
    DEFAULT_GAP,
    group_appearances,
    image_appearances,
    to_json,
)

FPS = 10


def box(x, y=10, w=20, h=40):
    return [x, y, x + w, y + h]


def series(sims, boxes=None, start=0):
    """Records of frames ``start``, ``start + 1``, ... at ``FPS``; the box one per frame, else
    ``box(10)`` (None where nobody was detected)."""
    return [
        (start + n, (start + n) / FPS, s, None if s is None else (boxes[n] if boxes else box(10)))
        for n, s in enumerate(sims)
    ]


def spans(appearances):
    return [(a.first, a.last) for a in appearances]


def test_one_appearance_with_a_short_dip():
    sims = [0.2, 0.6, 0.7, 0.9, 0.3, 0.4, 0.8, 0.6, 0.1, 0.1]  # dip of 0.3 s at frames 4-5
    (a,) = group_appearances(series(sims), 0.5)
    assert (a.first, a.last, a.frames) == (1, 7, 5)
    assert a.start == pytest.approx(0.1) and a.end == pytest.approx(0.7)
    assert a.duration == pytest.approx(0.6)
    assert a.best == (3, pytest.approx(0.3), box(10), 0.9)
    assert [r[0] for r in a.track] == [1, 2, 3, 6, 7]


def test_a_gap_longer_than_gap_seconds_splits():
    sims = [0.8] * 3 + [0.1] * 25 + [0.7] * 2  # 2.6 s between frames 2 and 28
    assert spans(group_appearances(series(sims), 0.5)) == [(0, 2), (28, 29)]
    assert spans(group_appearances(series(sims), 0.5, gap=3.0)) == [(0, 29)]
    # exactly the gap apart: still one (only longer splits)
    at = [(0, 0.0, 0.9, box(10)), (1, 2.0, 0.9, box(10)), (2, 4.5, 0.9, box(10))]
    assert spans(group_appearances(at, 0.5, gap=2.0)) == [(0, 1), (2, 2)]
    assert DEFAULT_GAP == 2.0


def test_nobody_detected_is_a_dip():
    sims = [0.9, 0.9, None, None, 0.9, None]
    (a,) = group_appearances(series(sims), 0.5)
    assert (a.first, a.last, a.frames) == (0, 4, 3)
    assert group_appearances(series([None, None, 0.4, float("nan")]), 0.5) == []
    assert group_appearances([], 0.5) == []


def test_a_walking_person_stays_one_appearance():
    """0.1 person heights a frame (1 a second), and on at the same pace after a 1.6 s dip."""
    frames = [(n, n / FPS, 0.8, box(10 + 4 * n)) for n in range(10)]
    frames += [(n, n / FPS, 0.8, box(10 + 4 * n)) for n in range(25, 30)]
    (a,) = group_appearances(frames, 0.5)
    assert (a.first, a.last, a.frames) == (0, 29, 15)


def test_two_people_crossing_are_two_appearances():
    """The best match is A (left, walking right) until frame 9, then B, far to the right: a
    jump of several person sizes in 0.1 s is someone else, though the similarity never dips."""
    a_boxes = [box(10 + 2 * n) for n in range(10)]
    b_boxes = [box(140 - 2 * n) for n in range(10, 20)]
    frames = series([0.7] * 10, a_boxes) + series([0.9] * 10, b_boxes, start=10)
    b, a = group_appearances(frames, 0.5)
    assert spans([a, b]) == [(0, 9), (10, 19)]
    assert b.similarity == 0.9 and a.similarity == 0.7
    # without the position rule: one appearance; with no movement allowed, one per box
    assert spans(group_appearances(frames, 0.5, jump=float("inf"))) == [(0, 19)]
    still = group_appearances(frames, 0.5, jump=0, speed=0)
    assert len(still) == 20 and all(a.frames == 1 for a in still)


def test_a_best_match_flipping_between_two_people_keeps_each_whole():
    """Two similar people standing apart; the best detection alternates between them."""
    frames = [(n, n / FPS, 0.8 if n % 2 else 0.7, box(10 if n % 2 else 100)) for n in range(12)]
    first, second = group_appearances(frames, 0.5)
    assert [r[0] for r in first.track] == [1, 3, 5, 7, 9, 11]
    assert [r[0] for r in second.track] == [0, 2, 4, 6, 8, 10]
    assert first.best[2] == box(10) and second.best[2] == box(100)


def test_same_person_at_another_place_after_a_dip():
    """Gone 1.1 s and back 2.5 person sizes away, farther than 1.6 (0.5 + 1.1 s x 1 a second):
    another sighting. Back at about the same place: the same one."""
    away = series([0.9] * 3) + [(13 + n, (13 + n) / FPS, 0.9, box(110)) for n in range(3)]
    assert spans(group_appearances(away, 0.5)) == [(0, 2), (13, 15)]
    back = series([0.9] * 3) + [(13 + n, (13 + n) / FPS, 0.9, box(14)) for n in range(3)]
    assert spans(group_appearances(back, 0.5)) == [(0, 15)]


def test_frames_without_boxes_group_by_time_alone():
    frames = [(n, n / FPS, 0.9, None) for n in range(4)] + [(4, 0.4, 0.9, box(300))]
    (a,) = group_appearances(frames, 0.5)
    assert a.frames == 5 and a.best == (0, 0.0, None, 0.9)


def test_cut_by_the_end_of_the_video():
    sims = [0.1] * 5 + [0.6, 0.8, 0.7]
    (a,) = group_appearances(series(sims), 0.5)
    assert (a.first, a.last) == (5, 7) and a.end == pytest.approx(0.7)


def test_sorted_by_best_similarity_then_start():
    sims = [0.7] * 2 + [0.1] * 30 + [0.9] * 2 + [0.1] * 30 + [0.7] * 2 + [0.1] * 30 + [0.6]
    found = group_appearances(series(sims), 0.5)
    assert spans(found) == [(32, 33), (0, 1), (64, 65), (96, 96)]
    assert [a.similarity for a in found] == [0.9, 0.7, 0.7, 0.6]


def test_images_each_their_own_appearance():
    frames = [(0, None, 0.9, box(10)), (1, None, 0.3, box(10)), (2, None, None, None),
              (3, None, 0.95, box(50)), (4, None, 0.9, None)]  # fmt: skip
    found = image_appearances(frames, 0.5)
    assert spans(found) == [(3, 3), (0, 0), (4, 4)]
    assert all(a.start is None and a.duration is None and a.frames == 1 for a in found)
    (j, *_) = to_json(found)
    best = {"frame": 3, "time": None, "box": [50.0, 10.0, 70.0, 50.0], "similarity": 0.95}
    assert j["start"] is None and j["best"] == best
    with pytest.raises(ValueError, match="image_appearances"):
        group_appearances(frames, 0.5)


def test_json_form_is_rounded_and_serialisable():
    frames = [(0, 0.0, 0.812345678, [1.26, 2.0, 21.04, 42.0]), (1, 0.1333333, 0.9000001,
              [2.0, 2.0, 22.0, 42.0]), (2, 0.2, 0.2, None)]  # fmt: skip
    (j,) = to_json(group_appearances(frames, 0.5))
    assert j == {
        "start": 0.0, "end": 0.133, "duration": 0.133, "first": 0, "last": 1, "frames": 2,
        "best": {"frame": 1, "time": 0.133, "box": [2.0, 2.0, 22.0, 42.0], "similarity": 0.9},
        "track": [[0, 0.0, [1.3, 2.0, 21.0, 42.0], 0.8123],
                  [1, 0.133, [2.0, 2.0, 22.0, 42.0], 0.9]],
    }  # fmt: skip
    assert json.loads(json.dumps(j)) == j


def test_bad_input():
    with pytest.raises(ValueError, match="time order"):
        group_appearances([(0, 1.0, 0.9, None), (1, 0.5, 0.9, None)], 0.5)
    with pytest.raises(ValueError, match="x1, y1, x2, y2"):
        group_appearances([(0, 1.0, 0.9, [1, 2, 3])], 0.5)
    with pytest.raises(ValueError, match="frame record"):
        group_appearances([(0, 1.0, 0.9)], 0.5)
    with pytest.raises(ValueError, match="0 or more"):
        group_appearances([], 0.5, gap=-1)
