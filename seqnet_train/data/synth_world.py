"""The plan of a synthetic dataset, independent of its file format: frames (split, camera,
people with boxes, identities, looks) and queries.

Train and test identities are disjoint; each frame also holds unlabelled passers-by. Labelled
slots go to the least-seen identities first, so every identity appears about equally often.
Each split draws from its own random stream (cameras from a third), so the test set depends
only on the seed, the test sizes and the cameras: training sizes can change without moving it.
"""

from dataclasses import dataclass, field

import numpy as np

from seqnet_train.data.synth_draw import camera_style, random_look
from seqnet_train.errors import SeqNetError

LABELLED_FRACTION = 0.75  # share of people slots that carry an identity
MIN_HEIGHT, MAX_HEIGHT = 0.3, 0.8  # person height / image height: scale varies 2.7x
ASPECT = 0.42  # person box width / height
MAX_QUERY_HIDDEN = 0.5  # share of a query's box that people in front of it may cover


@dataclass
class Person:
    box: tuple  # x1, y1, x2, y2 (integers)
    pid: int | None  # identity (train 1..K, test K+1..K+T), None = passer-by
    look: object
    mirror: bool


@dataclass
class Streams:
    """Independent random streams: ``world`` (cameras, file names), ``train``, ``test``."""

    world: np.random.Generator
    train: np.random.Generator
    test: np.random.Generator

    @classmethod
    def from_seed(cls, seed):
        return cls(*(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)))

    def of(self, split):
        return self.test if split == "test" else self.train


@dataclass
class Frame:
    index: int
    split: str  # "train" or "test"
    cam: int  # 0-based camera
    people: list = field(default_factory=list)


def _iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _place(rng, n, size):
    """Up to ``n`` integer boxes inside the image, overlapping each other at most IoU 0.3."""
    height, width = size
    boxes = []
    for _ in range(20 * n):
        if len(boxes) == n:
            break
        h = int(rng.uniform(MIN_HEIGHT, MAX_HEIGHT) * height)
        w = max(int(h * ASPECT), 8)
        if w >= width:
            continue
        x1, y2 = int(rng.integers(0, width - w)), int(rng.integers(h, height + 1))
        box = (x1, y2 - h, x1 + w, y2)
        if all(_iou(box, b) <= 0.3 for b in boxes):
            boxes.append(box)
    return boxes


def _looks(rng, n, taken=()):
    """``n`` distinct looks not in ``taken`` (identity = a combination of shared attributes)."""
    looks, seen = [], set(taken)
    while len(looks) < n:
        look = random_look(rng)
        if look not in seen:
            seen.add(look)
            looks.append(look)
    return looks


def _fill(rng, frames, ids, looks, size, people):
    uses = dict.fromkeys(ids, 0)
    for frame in frames:
        for box in _place(rng, int(rng.integers(1, people + 1)), size):
            free = [i for i in ids if all(p.pid != i for p in frame.people)]
            if free and rng.random() < LABELLED_FRACTION:
                least = min(uses[i] for i in free)
                pid = int(rng.choice([i for i in free if uses[i] == least]))
                uses[pid] += 1
                look = looks[pid - 1]
            else:
                pid, look = None, random_look(rng)
            frame.people.append(Person(box, pid, look, bool(rng.random() < 0.5)))
    return uses


def plan(streams, train_images, test_images, train_ids, test_ids, people, size, cameras):
    """(frames, camera styles): train frames first, then test frames. Test looks are drawn
    first, from the test stream, so that training identities avoid them, not the reverse."""
    if min(train_images, test_images, train_ids, test_ids, people, cameras) < 1:
        raise SeqNetError("synth: every size option must be at least 1")
    cams = [camera_style(streams.world) for _ in range(cameras)]
    test_looks = _looks(streams.test, test_ids)
    looks = _looks(streams.train, train_ids, taken=test_looks) + test_looks
    splits = ["train"] * train_images + ["test"] * test_images
    frames = [
        Frame(i, split, int(streams.of(split).integers(cameras))) for i, split in enumerate(splits)
    ]
    train_uses = _fill(
        streams.train, frames[:train_images], range(1, train_ids + 1), looks, size, people
    )
    test_range = range(train_ids + 1, train_ids + test_ids + 1)
    test_uses = _fill(streams.test, frames[train_images:], test_range, looks, size, people)
    if min(train_uses.values()) < 1 or min(test_uses.values()) < 2:
        raise SeqNetError(
            "synth: too few images for the identities (each training identity needs one "
            "appearance, each test identity two); raise --train-images/--test-images or "
            "lower --train-ids/--test-ids"
        )
    return frames, cams


def appearances(frames, pid):
    """[(frame, person)] where identity ``pid`` appears, in frame order."""
    return [(f, p) for f in frames for p in f.people if p.pid == pid]


def hidden(frame, person):
    """Share of ``person``'s box covered by the boxes of the people drawn in front of it
    (``render`` draws far to near: by the bottom edge, ties in frame order)."""
    depth = sorted(frame.people, key=lambda p: p.box[3])
    behind = next(i for i, p in enumerate(depth) if p is person)
    x1, y1, x2, y2 = person.box
    covered = np.zeros((y2 - y1, x2 - x1), bool)
    for other in depth[behind + 1 :]:
        a1, b1, a2, b2 = other.box
        covered[max(b1 - y1, 0) : max(b2 - y1, 0), max(a1 - x1, 0) : max(a2 - x1, 0)] = True
    return float(covered.mean())


def choose_queries(rng, frames, pids, per_id=1):
    """[(pid, frame, person)]: up to ``per_id`` query appearances per identity on distinct
    cameras, always leaving one appearance for the gallery; drawn at random among those that
    show their person (a real query is someone an annotator could see): an appearance at
    most ``MAX_QUERY_HIDDEN`` behind people in front of it comes before any more hidden one."""
    out = []
    for pid in pids:
        seen = appearances(frames, pid)
        order = sorted(
            rng.permutation(len(seen)), key=lambda k: hidden(*seen[k]) > MAX_QUERY_HIDDEN
        )
        cams = set()
        for k in order:
            f, p = seen[k]
            if f.cam not in cams and len(cams) < per_id and len(cams) < len(seen) - 1:
                cams.add(f.cam)
                out.append((pid, f, p))
    return out
