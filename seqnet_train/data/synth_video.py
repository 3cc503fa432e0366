"""``seqnet synth --format video``: an MP4 of synthetic test identities walking through a scene,
query crops of some of them and the ground truth of every frame.

The people are the synthetic dataset's *test identities* for the same seed: their looks are
drawn exactly as ``synth_world.plan`` draws them (first thing from the seed's test stream),
numbered ``train_ids + 1 .. train_ids + test_ids`` as in the dataset (``make demo``: seed 0,
80 training and 30 test identities, so 81..110), and drawn by ``synth_draw.draw_person``. The
scene is one of the dataset's cameras (``camera``): its wall, ground and colour cast.

People walk in from one side and out of the other, at different depths (nearer = lower and
larger), so they pass one another: the nearer one hides the farther (drawn far to near, as
``synth_draw.render``). A pillar and a low wall in the foreground hide parts of those behind
them. Poses follow the walk: legs and arms swing with the distance walked; lighting is fixed
per walk.

The video opens with a scene of ``OPENING`` seconds (longer for a wide frame that takes longer
to cross; the whole video when it is no longer): the queried identities, two more test
identities and two unlabelled passers-by (looks that are no test identity's) each walk through
once, the queried ones in alternate directions so that they meet, and the first queried one
comes back the other way. That scene is drawn again until it shows what the video is for: each
queried person well visible (at least 90%) for ``SEEN`` seconds and in one frame in ``RATE``,
the returning one seen again, a queried person partly hidden by someone passing in front,
someone partly hidden by a foreground object. A longer video goes on with the same people
coming and going: after a random pause (``PAUSE``, shorter for the queried) each labelled
person walks back the way they left, and each passer-by's slot sends a new stranger. That
traffic is drawn again until each queried person is well visible in one frame in ``RATE`` of
the whole video. A longer video only has more traffic, so every frame count from
``min_frames(fps, size)`` on can be made, for any seed: 50 frames at the default 10 fps and
240 x 320 (a person crossing the frame ``MIN_CROSSINGS`` times, at least ``MIN_FRAMES``;
frames narrower than they are tall are not covered by that promise). The time and memory it
takes grow in proportion to the frames: the world is swept once in time order (each frame
looks only at the walks under way) and each frame goes to the encoder as it is drawn.

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
complete, with the permissions the umask gives.
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from seqnet_runtime import fs
from seqnet_train.data.synth_draw import background, camera_style, draw_person, random_look
from seqnet_train.data.synth_world import ASPECT, MAX_QUERY_HIDDEN, Streams, _looks
from seqnet_train.errors import SeqNetError

log = logging.getLogger(__name__)

VERSION = 1
MIN_VISIBLE = 1 - MAX_QUERY_HIDDEN  # 0.5
WELL_VISIBLE = 0.9  # a queried person counts as seen well from this visible share on
VIDEO_STREAM = 3  # the video's own random stream: SeedSequence(seed) child 3 (synth uses 0-2)
TRAFFIC_STREAM = 1  # the walks after the opening: SeedSequence(seed, (VIDEO_STREAM, 1, ...))
HEIGHTS = (0.35, 0.75)  # person height / frame height, farthest to nearest
FEET = (0.62, 1.0)  # foot line / frame height, farthest to nearest
PACE = (0.5, 1.0)  # walking speed in person heights per second
STRIDE = 0.9  # distance of one leg cycle, in person heights
DISTRACTORS = 2  # test identities in the video that are not queried
PASSERS = 2  # unlabelled passers-by (at a time)
OPENING = 15  # seconds: the opening scene (150 frames at 10 fps) ...
OPENING_CROSSINGS = 3.9  # ... and long enough for a person to cross the frame 3.9 times
MIN_CROSSINGS = 1.3  # the shortest video: a person crosses the frame 1.3 times ...
MIN_FRAMES = 50  # ... and at least 50 frames
SEEN = 0.5  # seconds: the opening shows each queried person well for at least this long ...
RATE = 15  # ... and in at least one frame in RATE, as does the whole video
PAUSE = {"queried": (0.5, 6.0), "other": (1.0, 10.0)}  # seconds between one's walks
TRIES = 500  # opening scenes drawn before giving up
TRAFFIC_TRIES = 20  # the traffic after it (one try nearly always does, or none will)


def min_frames(fps, size=(240, 320)):
    """The fewest frames ``write_video`` makes at ``fps`` frames per second and ``size`` (H, W):
    the time a person takes to cross the frame ``MIN_CROSSINGS`` times, and at least
    ``MIN_FRAMES``: 50 at the default 10 fps and 240 x 320 (about 5 s of a 3:4 frame at 10 fps
    or more), more for wider frames."""
    return max(MIN_FRAMES, math.ceil(MIN_CROSSINGS * _crossing(size, fps)))


def _opening(frames, fps, size):
    """Frames of the opening scene: ``OPENING`` seconds, at least ``OPENING_CROSSINGS``
    crossings of the frame, at most the whole video."""
    return min(frames, max(OPENING * fps, math.ceil(OPENING_CROSSINGS * _crossing(size, fps))))


@dataclass
class Walk:
    """One pass through the scene: enters at frame ``start`` just outside one edge and walks
    to the other at ``pace``, its foot line moving from ``foot0`` to ``foot1`` (fraction of the
    frame height), in the scene for frames ``start .. start + _frames(walk)``."""

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


def _box(walk, t, size, fps, span=None):
    """The walker's whole box at frame ``t`` (floats; may lie partly outside the frame), and
    its leg cycle phase; None before it enters or after it left. ``span``: ``_frames(walk)``."""
    height, width = size
    span = _frames(walk, size, fps) if span is None else span
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


def _frames(walk, size, fps):
    """The walk is in the scene at frames ``start .. start + _frames(walk)`` (inclusive)."""
    return max(1, _span(walk, size, fps))


def _crossing(size, fps):
    """Frames a person at the middle depth and pace takes to cross the frame."""
    middle = (FEET[0] + FEET[1]) / 2
    return _frames(Walk(None, None, 0, 1, sum(PACE) / 2, middle, middle, 0.0, 0.0), size, fps)


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


def _timeline(walks, frames, size, fps):
    """Yield, for each frame ``t`` = 0 .. frames - 1, [(walk index, integer box, phase)] of the
    walkers in it, far to near (by the bottom edge, ties in walk order, as ``render`` and
    ``hidden``). One sweep in time order: each frame costs only the walks in the scene then."""
    height, width = size
    spans = [_frames(w, size, fps) for w in walks]
    order = sorted(range(len(walks)), key=lambda i: walks[i].start)
    entered, active = 0, []
    for t in range(frames):
        while entered < len(order) and walks[order[entered]].start <= t:
            active.append(order[entered])
            entered += 1
        active = sorted(i for i in active if walks[i].start + spans[i] >= t)
        out = []
        for i in active:
            got = _box(walks[i], t, size, fps, spans[i])
            if got is None:
                continue
            (x1, y1, x2, y2), phase = got
            box = (int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2)))
            if box[2] > 0 and box[0] < width and box[3] > 0 and box[1] < height:
                out.append((i, box, phase))
        yield sorted(out, key=lambda p: p[1][3])


def _truth(walks, frames, size, fps):
    """Per frame: [{"box", "id", "visible"}] far to near."""
    height, width = size
    occ = _occluders(size)
    truth = []
    for people in _timeline(walks, frames, size, fps):
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


def _walk(rng, pid, look, start, direction):
    """A walk with a random depth (foot line drifting a little), pace, lighting and leg phase."""
    foot0 = rng.uniform(*FEET)
    foot1 = float(np.clip(foot0 + rng.uniform(-0.12, 0.12), *FEET))
    return Walk(
        pid, look, int(start), direction, float(rng.uniform(*PACE)), float(foot0),
        foot1, float(rng.uniform()), float(rng.uniform(0, 2 * math.pi)),
    )  # fmt: skip


def _stranger(rng, taken):
    """A passer-by's look: no test identity's, nor any in ``taken`` (which it joins)."""
    look = random_look(rng)
    while look in taken:
        look = random_look(rng)
    taken.add(look)
    return look


def _plan(rng, looks, queried, distractors, passers, frames, fps, size):
    """One candidate opening scene of ``frames`` frames: one walk per person (queried identities
    first, then the distractors, then the passers-by), then the first queried one's return."""
    taken = set(looks.values())
    walks = []
    people = [(pid, looks[pid]) for pid in queried + distractors]
    people += [(None, _stranger(rng, taken)) for _ in range(passers)]
    for n, (pid, look) in enumerate(people):
        # queried people alternate directions, so that they meet; the rest at random
        direction = (1 if n % 2 == 0 else -1) if pid in queried else int(rng.choice([-1, 1]))
        w = _walk(rng, pid, look, 0, direction)
        span = _span(w, size, fps)
        w.start = int(rng.integers(-span // 3, max(frames - span * 2 // 3, -span // 3 + 1)))
        walks.append(w)
    if queried:  # the first queried identity comes back the other way after it left
        first = walks[0]
        again = _walk(rng, first.pid, first.look, 0, -first.direction)
        earliest = first.start + _span(first, size, fps) + int(rng.integers(3, 3 + fps))
        again.start = max(earliest, int(rng.integers(earliest, earliest + 2 * fps)))
        walks.append(again)
    return walks


def _need(frames, fps):
    """Frames in which each queried person must be well visible in a video of ``frames``."""
    return max(math.ceil(SEEN * fps), frames // RATE)


def _well_seen(truth, pid):
    return sum(1 for rows in truth for r in rows if r["id"] == pid and r["visible"] >= WELL_VISIBLE)


def _acceptable(walks, truth, queried, frames, size, fps):
    """The opening scene shows what the video is for: each queried person well visible in
    enough frames, the returning one again in its second walk, a queried person partly hidden
    by someone passing in front, and someone partly hidden by a foreground object."""
    need = _need(frames, fps)
    if any(_well_seen(truth, pid) < need for pid in queried):
        return False
    if queried:
        last = walks[-1]
        seen = [r for rows in truth[max(last.start, 0) :] for r in rows if r["id"] == last.pid]
        if sum(r["visible"] >= MIN_VISIBLE for r in seen) < max(1, need // 2):
            return False
    height, width = size
    occ = _occluders(size)
    passed = behind_object = False
    for rows in truth:
        for depth, r in enumerate(rows):
            b = r["box"]
            if not 0.2 < r["visible"] < WELL_VISIBLE or b[0] == 0 or b[2] == width:
                continue  # not partly hidden, or partly outside the frame
            nearer = [n["box"] for n in rows[depth + 1 :]]
            passed = passed or (r["id"] in queried and any(_overlaps(b, n) for n in nearer))
            behind_object = behind_object or any(_overlaps(b, o) for o in occ)
    return passed and behind_object


def _overlaps(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _traffic(seeds, opening, looks, queried, begin, frames, fps, size):
    """The walks after the opening scene's ``begin`` frames, up to ``frames``: each person of
    ``opening`` (labelled ones, and each passer-by's slot) walks again after a random pause from
    the end of its last walk or from ``begin``, whichever is later; a labelled person comes back
    the way it left, the passer-by slot sends a new stranger each time. Each person draws from
    its own child of the SeedSequence ``seeds``, in the order of their first walks."""
    last = {}  # person (pid, or the passer-by slot) -> its latest walk, in first-walk order
    for n, w in enumerate(opening):
        last[w.pid if w.pid is not None else ("passer", n)] = w
    taken = set(looks.values())
    walks = []
    for seq, (who, prev) in zip(seeds.spawn(len(last)), last.items()):
        rng = np.random.default_rng(seq)
        pause = [p * fps for p in PAUSE["queried" if who in queried else "other"]]
        labelled = prev.pid is not None
        while True:
            end = max(prev.start + _frames(prev, size, fps), begin)
            start = end + max(1, int(rng.uniform(*pause)))
            if start >= frames:
                break
            direction = -prev.direction if labelled else int(rng.choice([-1, 1]))
            look = prev.look if labelled else _stranger(rng, taken)
            prev = _walk(rng, prev.pid, look, start, direction)
            walks.append(prev)
    return walks


def _world(rng, seed, looks, queried, distractors, frames, fps, size):
    """(walks, truth) of a video of ``frames`` frames: an opening scene drawn with ``rng`` until
    it is acceptable, then (for a longer video) traffic drawn from the seed's traffic stream
    until each queried person is well seen in one frame in ``RATE``."""
    opening = _opening(frames, fps, size)
    for _ in range(TRIES):
        walks = _plan(rng, looks, queried, distractors, PASSERS, opening, fps, size)
        truth = _truth(walks, opening, size, fps)
        if _acceptable(walks, truth, queried, opening, size, fps):
            break
    else:
        raise SeqNetError(
            f"synth video: no scene of {opening} frames shows each of {len(queried)} queried "
            f"people well (too many people walk at once); {_remedy(size)}"
        )
    if frames == opening:
        return walks, truth
    need = _need(frames, fps)
    for attempt in range(TRAFFIC_TRIES):
        seeds = np.random.SeedSequence(seed, spawn_key=(VIDEO_STREAM, TRAFFIC_STREAM, attempt))
        traffic = _traffic(seeds, walks, looks, queried, opening, frames, fps, size)
        truth = _truth(walks + traffic, frames, size, fps)
        if all(_well_seen(truth, pid) >= need for pid in queried):
            return walks + traffic, truth
    raise SeqNetError(
        f"synth video: the {len(queried)} queried people are not seen well in one frame in "
        f"{RATE} of {frames} (too many people walk at once); {_remedy(size)}"
    )


def _remedy(size):
    """What makes a scene that failed possible: fewer people; a frame at least as wide as tall
    (in a narrower one people hide one another most of the time). More frames do not help."""
    height, width = size
    if width < height:
        return f"lower --queries or use a --size at least as wide as tall (not {height} {width})"
    return "lower --queries"


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


def _lighting(cam, brightness):
    """The camera's colour cast and the frame's brightness as a per-channel table for
    ``Image.point``: the values ``uint8(clip(v * cast * brightness))`` takes for v = 0..255."""
    levels = np.arange(256, dtype=np.float32)[:, None] * cam["cast"] * brightness
    return np.clip(levels, 0, 255).astype(np.uint8).T.ravel().tolist()


def _render(base, lighting, walks, people, size):
    """One frame (PIL RGB): the ``people`` of ``_timeline`` on ``base``, then the foreground."""
    canvas = base.copy()
    draw = ImageDraw.Draw(canvas)
    for i, box, phase in people:
        w = walks[i]
        swing = math.sin(phase)
        pose = _Pose(w.light, abs(swing), 0.5 + 0.5 * swing * w.direction)
        draw_person(draw, box, w.look, pose, mirror=w.direction < 0)
    _draw_occluders(draw, size)
    return canvas.point(lighting)


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


def _encode(path, pictures, fps, size):
    """Write the PIL RGB ``pictures`` (an iterable, consumed one at a time) as MPEG-4 Part 2
    (FFmpeg's own encoder, in every PyAV build), yuv420p, at a bit rate that keeps the synthetic
    scenes' detail. Not H.264: libx264 gave different bytes from one call to the next for the
    same frames, even on one thread, and this video is part of a deterministic data set (same
    seed: same bytes)."""
    try:
        import av
    except ImportError:
        raise SeqNetError("writing a video needs PyAV: pip install av") from None

    height, width = size
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 4_000_000
        stream.codec_context.thread_count = 1
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(np.asarray(picture), format="rgb24")
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
    more test identities and two passers-by at a time walk as distractors. ``frames``: at
    least ``min_frames(fps)`` (50 at 10 fps), any number above. ``size`` is (H, W), both
    even.
    """
    height, width = (int(v) for v in size)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SeqNetError(f"{out}: exists and is not an empty folder; choose a new --out")
    if height % 2 or width % 2 or height < 64 or width < 64:
        raise SeqNetError(f"synth video: --size must be even and at least 64 x 64, got {size}")
    if fps < 1:
        raise SeqNetError(f"synth video: --fps must be at least 1, got {fps}")
    if frames < min_frames(fps, (height, width)):
        raise SeqNetError(
            f"synth video: --frames must be at least {min_frames(fps, (height, width))} at "
            f"{fps} fps and --size {height} {width} (the time people take to cross the frame "
            f"{MIN_CROSSINGS} times, at least {MIN_FRAMES} frames), got {frames}"
        )
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
    walks, truth = _world(rng, seed, looks, queried, distractors, frames, fps, size)
    base, brightness = _scene(cams[camera], size, rng)
    lighting = _lighting(cams[camera], brightness)
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
    pictures = (
        _render(base, lighting, walks, people, size)
        for people in _timeline(walks, frames, size, fps)
    )
    with fs.atomic_dir(out) as tmp:
        _encode(tmp / "video.mp4", pictures, fps, size)
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
    dataset's, so that its test identities walk), plus ``--frames`` (at least
    ``min_frames(--fps)``: 50 at 10 fps), ``--fps``, ``--queries``."""
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
