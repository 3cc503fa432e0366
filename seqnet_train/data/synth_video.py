"""``seqnet synth --format video``: a short MP4 of synthetic test identities walking through a
scene, query crops of some of them and the ground truth of every frame.

The people are the synthetic dataset's *test identities* for the same seed: their looks are
drawn exactly as ``synth_world.plan`` draws them (first thing from the seed's test stream),
numbered ``train_ids + 1 .. train_ids + test_ids`` as in the dataset (``make demo``: seed 0,
80 training and 30 test identities, so 81..110), and drawn by ``synth_draw.draw_person``. The
scene is one of the dataset's cameras (``camera``): its wall, ground and colour cast.

People walk in from one side and out of the other, at different depths (nearer = lower and
larger), so they pass one another: the nearer one hides the farther (drawn far to near, as
``synth_draw.render``). A pillar and a low wall in the foreground hide parts of those behind
them. One queried identity walks through twice. A few unlabelled passers-by (looks that are
no test identity's) walk too. Poses follow the walk: legs and arms swing with the distance
walked; lighting is fixed per person.

Queries (``queries/<name>.jpg``, ``<name>`` = ``p<identity>``) are crops of the person alone,
the whole crop being the person's box, from a separate still image of that identity drawn in
another camera's scene with a random pose and lighting: never cut from the video.

``truth.json``::

    {"version": 1, "video": "video.mp4", "fps": 10, "size": [H, W], "frames": N,
     "seed", "camera", "min_visible": 0.5,
     "queries": {"p81": 81, ...}, "identities": [identities in the video],
     "frames_truth": [[{"box": [x1, y1, x2, y2], "id": 81 or null, "visible": 0.83}, ...],
                      ...]}   # one list per frame, frame 0 first

``box``: the person's box clipped to the frame (integers, x2/y2 exclusive as every synth box);
``id``: the identity, ``null`` for a passer-by; ``visible``: the share of the person's whole
(unclipped) box that is inside the frame and not covered by the box of a nearer person or by
a foreground object (the box-coverage measure of ``synth_world.hidden``). ``min_visible`` is
the floor below which a benchmark should neither require nor penalise finding the person (the
still benchmark's rule for queries, ``MAX_QUERY_HIDDEN``: at most half hidden).

Deterministic: the same arguments give the same files. The output folder appears only when
complete.
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from seqnet_runtime.output import staged_dir
from seqnet_train.data.synth_draw import background, camera_style, draw_person, random_look
from seqnet_train.data.synth_world import ASPECT, MAX_QUERY_HIDDEN, Streams, _looks
from seqnet_train.errors import SeqNetError

log = logging.getLogger(__name__)

VERSION = 1
MIN_VISIBLE = 1 - MAX_QUERY_HIDDEN  # 0.5
VIDEO_STREAM = 3  # the video's own random stream: SeedSequence(seed) child 3 (synth uses 0-2)
HEIGHTS = (0.35, 0.75)  # person height / frame height, farthest to nearest
FEET = (0.62, 1.0)  # foot line / frame height, farthest to nearest
PACE = (0.5, 1.0)  # walking speed in person heights per second
STRIDE = 0.9  # distance of one leg cycle, in person heights
DISTRACTORS = 2  # test identities in the video that are not queried
PASSERS = 2  # unlabelled passers-by


@dataclass
class Walk:
    """One pass through the scene: enters at frame ``start`` just outside one edge and walks
    to the other at ``speed`` (px per frame), its foot line moving from ``foot0`` to ``foot1``
    (fraction of the frame height) over ``frames`` frames."""

    pid: int | None
    look: object
    start: int
    direction: int  # +1: left to right
    pace: float  # person heights per second
    foot0: float
    foot1: float
    light: float  # 0..1, draw_person's lighting
    phase: float  # leg cycle at the start, radians


class _Pose:
    """Stands in for ``draw_person``'s random generator, which it asks (in this order) for
    the lighting, the stride and the arm swing: the video's walk decides them instead."""

    def __init__(self, *fractions):
        self._left = list(fractions)

    def uniform(self, low, high):
        if not self._left:
            raise RuntimeError("synth_video: draw_person asked for more random values than it did")
        return low + (high - low) * self._left.pop(0)


def identity_looks(seed, train_ids, test_ids):
    """``{identity: look}`` of the dataset's test identities for ``seed``, as ``synth_world.plan``
    draws them (the test stream's first draws), numbered as the dataset numbers them."""
    looks = _looks(Streams.from_seed(seed).test, test_ids)
    return {train_ids + 1 + k: look for k, look in enumerate(looks)}


def cameras_of(seed, cameras):
    """The dataset's camera styles for ``seed`` (the world stream's first draws)."""
    world = Streams.from_seed(seed).world
    return [camera_style(world) for _ in range(cameras)]


def _foot_height(foot, height):
    """Person height in pixels for a foot line at ``foot`` (fraction of the frame height)."""
    t = (foot - FEET[0]) / (FEET[1] - FEET[0])
    return (HEIGHTS[0] + (HEIGHTS[1] - HEIGHTS[0]) * t) * height


def _box(walk, t, size, fps):
    """The walker's whole box at frame ``t`` (floats; may lie partly outside the frame), and
    its leg cycle phase; None before it enters or after it left."""
    height, width = size
    span = max(1, _span(walk, size, fps))
    k = t - walk.start
    if k < 0 or k > span:
        return None
    foot = walk.foot0 + (walk.foot1 - walk.foot0) * k / span
    h = _foot_height(foot, height)
    w = max(h * ASPECT, 8)
    travelled = _travel(walk, size) * k / span
    cx = -w / 2 + travelled if walk.direction > 0 else width + w / 2 - travelled
    y2 = foot * height
    phase = walk.phase + 2 * math.pi * travelled / (STRIDE * h)
    return (cx - w / 2, y2 - h, cx + w / 2, y2), phase


def _travel(walk, size):
    """Pixels from entering (box just outside one edge) to leaving (just outside the other)."""
    height, width = size
    w = max(_foot_height(max(walk.foot0, walk.foot1), height) * ASPECT, 8)
    return width + w


def _span(walk, size, fps):
    """Frames the walk lasts (at the mean person height)."""
    h = _foot_height((walk.foot0 + walk.foot1) / 2, size[0])
    return int(math.ceil(_travel(walk, size) / (walk.pace * h / fps)))


def _occluders(size):
    """The foreground objects, integer rectangles in front of everyone: a pillar (right of
    centre, full height) and a low wall (bottom left)."""
    height, width = size
    pillar = (int(0.62 * width), 0, int(0.62 * width) + max(4, int(0.06 * width)), height)
    wall = (int(0.04 * width), int(0.8 * height), int(0.36 * width), height)
    return [pillar, wall]


def _visible(box, nearer, occluders, size):
    """Share of the (integer) ``box`` inside the frame and not under ``nearer`` boxes or the
    ``occluders`` (box coverage, as ``synth_world.hidden``)."""
    height, width = size
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return 0.0
    seen = np.zeros((y2 - y1, x2 - x1), bool)
    seen[max(-y1, 0) : max(height - y1, 0), max(-x1, 0) : max(width - x1, 0)] = True
    for a1, b1, a2, b2 in list(nearer) + list(occluders):
        seen[max(b1 - y1, 0) : max(b2 - y1, 0), max(a1 - x1, 0) : max(a2 - x1, 0)] = False
    return float(seen.mean())


def _frame_people(walks, t, size, fps):
    """[(walk index, integer box, phase)] of the walkers in the frame at ``t``, far to near
    (by the bottom edge, ties in walk order, as ``render`` and ``hidden``)."""
    height, width = size
    out = []
    for i, walk in enumerate(walks):
        got = _box(walk, t, size, fps)
        if got is None:
            continue
        (x1, y1, x2, y2), phase = got
        box = (int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2)))
        if box[2] > 0 and box[0] < width and box[3] > 0 and box[1] < height:
            out.append((i, box, phase))
    return sorted(out, key=lambda p: p[1][3])


def _truth(walks, frames, size, fps):
    """Per frame: [{"box", "id", "visible"}] far to near."""
    height, width = size
    occ = _occluders(size)
    truth = []
    for t in range(frames):
        people = _frame_people(walks, t, size, fps)
        rows = []
        for depth, (i, box, _) in enumerate(people):
            nearer = [p[1] for p in people[depth + 1 :]]
            clipped = [max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)]
            rows.append(
                {
                    "box": clipped,
                    "id": walks[i].pid,
                    "visible": round(_visible(box, nearer, occ, size), 3),
                }
            )
        truth.append(rows)
    return truth


def _plan(rng, looks, queried, distractors, passers, frames, fps, size):
    """One candidate scene: the walks (queried identities first, one of them twice)."""
    taken = set(looks.values())
    walks = []

    def walk(pid, look, start, direction):
        foot0 = rng.uniform(*FEET)
        foot1 = float(np.clip(foot0 + rng.uniform(-0.12, 0.12), *FEET))
        return Walk(
            pid, look, int(start), direction, float(rng.uniform(*PACE)), float(foot0),
            foot1, float(rng.uniform()), float(rng.uniform(0, 2 * math.pi)),
        )  # fmt: skip

    people = [(pid, looks[pid]) for pid in queried + distractors]
    for _ in range(passers):
        look = random_look(rng)
        while look in taken:
            look = random_look(rng)
        taken.add(look)
        people.append((None, look))
    for n, (pid, look) in enumerate(people):
        # queried people alternate directions, so that they meet; the rest at random
        direction = (1 if n % 2 == 0 else -1) if pid in queried else int(rng.choice([-1, 1]))
        w = walk(pid, look, 0, direction)
        span = _span(w, size, fps)
        w.start = int(rng.integers(-span // 3, max(frames - span * 2 // 3, -span // 3 + 1)))
        walks.append(w)
    if queried:  # the first queried identity comes back the other way after it left
        first = walks[0]
        again = walk(first.pid, first.look, 0, -first.direction)
        earliest = first.start + _span(first, size, fps) + int(rng.integers(3, 3 + fps))
        again.start = max(earliest, int(rng.integers(earliest, earliest + 2 * fps)))
        walks.append(again)
    return walks


def _acceptable(walks, truth, queried, frames, size):
    """The scene shows what the video is for: each queried person well visible in enough
    frames, the returning one again in its second walk, a queried person partly hidden by
    someone passing in front, and someone partly hidden by a foreground object."""
    need = max(5, frames // 15)
    for pid in queried:
        good = sum(1 for rows in truth for r in rows if r["id"] == pid and r["visible"] >= 0.9)
        if good < need:
            return False
    if queried:
        last = walks[-1]
        seen = [r for rows in truth[max(last.start, 0) :] for r in rows if r["id"] == last.pid]
        if sum(r["visible"] >= MIN_VISIBLE for r in seen) < need // 2:
            return False
    height, width = size
    occ = _occluders(size)
    passed = behind_object = False
    for rows in truth:
        for depth, r in enumerate(rows):
            b = r["box"]
            if not 0.2 < r["visible"] < 0.9 or b[0] == 0 or b[2] == width:
                continue  # not partly hidden, or partly outside the frame
            nearer = [n["box"] for n in rows[depth + 1 :]]
            passed = passed or (r["id"] in queried and any(_overlaps(b, n) for n in nearer))
            behind_object = behind_object or any(_overlaps(b, o) for o in occ)
    return passed and behind_object


def _overlaps(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _scene(cam, size, rng):
    """Static background (PIL) and the frame's brightness."""
    height, width = size
    base = np.clip(background(rng, cam, height, width), 0, 255).astype(np.uint8)
    return Image.fromarray(base), float(rng.uniform(0.85, 1.1))


def _draw_occluders(draw, size):
    colours = [(96, 92, 104), (128, 112, 84)]
    for rect, colour in zip(_occluders(size), colours):
        x1, y1, x2, y2 = rect
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=colour)
        draw.line([(x1, y1), (x2 - 1, y1)], fill=tuple(c + 40 for c in colour), width=2)


def _render(base, cam, brightness, walks, t, size, fps):
    """Frame ``t`` as an H x W x 3 uint8 array."""
    canvas = base.copy()
    draw = ImageDraw.Draw(canvas)
    for i, box, phase in _frame_people(walks, t, size, fps):
        w = walks[i]
        swing = math.sin(phase)
        pose = _Pose(w.light, abs(swing), 0.5 + 0.5 * swing * w.direction)
        draw_person(draw, box, w.look, pose, mirror=w.direction < 0)
    _draw_occluders(draw, size)
    lit = np.asarray(canvas, np.float32) * cam["cast"] * brightness
    return np.clip(lit, 0, 255).astype(np.uint8)


def _query_crop(rng, cam, look, size):
    """The person alone: a still of ``look`` in ``cam``'s scene, cropped to its box."""
    height, width = size
    h = int(rng.uniform(0.55, 0.75) * height)
    w = max(int(h * ASPECT), 8)
    x1 = int(rng.integers(0, width - w))
    y2 = int(rng.integers(h, height + 1))
    box = (x1, y2 - h, x1 + w, y2)
    canvas = Image.fromarray(np.clip(background(rng, cam, height, width), 0, 255).astype(np.uint8))
    draw_person(ImageDraw.Draw(canvas), box, look, rng, mirror=bool(rng.random() < 0.5))
    lit = np.asarray(canvas, np.float32) * cam["cast"] * rng.uniform(0.85, 1.1)
    return Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8)).crop(box)


def _encode(path, frames, fps):
    """Write H x W x 3 uint8 ``frames`` as MPEG-4 Part 2 (FFmpeg's own encoder, in every PyAV
    build), yuv420p, at a bit rate that keeps the synthetic scenes' detail. Not H.264: libx264
    gave different bytes from one call to the next for the same frames, even on one thread,
    and this video is part of a deterministic data set (same seed: same bytes)."""
    try:
        import av
    except ImportError:
        raise SeqNetError("writing a video needs PyAV: pip install av") from None

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 4_000_000
        stream.codec_context.thread_count = 1
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_video(
    out,
    seed=0,
    frames=150,
    fps=10,
    size=(240, 320),
    train_ids=40,
    test_ids=20,
    queries=3,
    cameras=6,
    camera=0,
):
    """Write ``video.mp4``, ``queries/p<id>.jpg`` and ``truth.json`` to ``out`` (absent or
    empty); return its path.

    ``train_ids`` and ``test_ids`` as given to ``seqnet synth`` for the dataset whose test
    identities should walk (they fix the looks and the numbering); ``cameras`` its camera
    count and ``camera`` the one filmed (0-based). ``queries`` identities are queried; two
    more test identities and two passers-by walk as distractors. ``size`` is (H, W), both even.
    """
    height, width = (int(v) for v in size)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SeqNetError(f"{out}: exists and is not an empty folder; choose a new --out")
    if height % 2 or width % 2 or height < 64 or width < 64:
        raise SeqNetError(f"synth video: --size must be even and at least 64 x 64, got {size}")
    if frames < 10 or fps < 1:
        raise SeqNetError("synth video: at least 10 frames at 1 fps or more")
    if not 0 <= camera < cameras:
        raise SeqNetError(f"synth video: camera {camera} is not one of the {cameras} cameras")
    if not 1 <= queries <= test_ids:
        raise SeqNetError(f"synth video: 1 to {test_ids} queries (the test identities)")
    size = (height, width)
    looks = identity_looks(seed, train_ids, test_ids)
    cams = cameras_of(seed, cameras)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VIDEO_STREAM,)))
    chosen = [int(p) for p in rng.permutation(sorted(looks))]
    queried = chosen[:queries]
    distractors = chosen[queries : queries + DISTRACTORS]
    for _ in range(500):
        walks = _plan(rng, looks, queried, distractors, PASSERS, frames, fps, size)
        truth = _truth(walks, frames, size, fps)
        if _acceptable(walks, truth, queried, frames, size):
            break
    else:
        raise SeqNetError(
            "synth video: no scene shows every queried person well in so few frames; "
            "raise the frame count or lower --queries"
        )
    base, brightness = _scene(cams[camera], size, rng)
    pictures = [_render(base, cams[camera], brightness, walks, t, size, fps) for t in range(frames)]
    others = [c for c in range(cameras) if c != camera] or [camera]
    crops = {
        f"p{pid}": _query_crop(rng, cams[others[k % len(others)]], looks[pid], size)
        for k, pid in enumerate(queried)
    }
    shown = sorted({w.pid for w in walks if w.pid is not None})
    doc = {
        "version": VERSION,
        "video": "video.mp4",
        "fps": fps,
        "size": [height, width],
        "frames": frames,
        "seed": seed,
        "camera": camera,
        "min_visible": MIN_VISIBLE,
        "queries": {name: int(name[1:]) for name in crops},
        "identities": shown,
        "frames_truth": truth,
    }
    with staged_dir(out) as tmp:
        _encode(tmp / "video.mp4", pictures, fps)
        (tmp / "queries").mkdir()
        for name, crop in crops.items():
            crop.save(tmp / "queries" / f"{name}.jpg", quality=95)
        (tmp / "truth.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    log.info(
        "wrote a synthetic video (%d frames, %dx%d, MPEG-4, %d queries, seed %d) to %s",
        frames, width, height, len(crops), seed, out,
    )  # fmt: skip
    return out


def run(args):
    """CLI entry: ``seqnet synth --format video --out DIR`` with the dataset's ``--seed``,
    ``--train-ids``, ``--test-ids``, ``--cameras`` and ``--size`` (the same values as the
    dataset's, so that its test identities walk), plus ``--frames``, ``--fps``, ``--queries``."""
    write_video(
        args.out,
        seed=args.seed,
        frames=args.frames,
        fps=args.fps,
        size=tuple(args.size),
        train_ids=args.train_ids,
        test_ids=args.test_ids,
        queries=args.queries,
        cameras=args.cameras,
    )
