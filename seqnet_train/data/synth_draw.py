"""Procedural pictures for the synthetic datasets: textured backgrounds per camera and
pedestrians (head, torso, arms, legs) whose look is a combination of shared attributes.

An identity is a ``Look``: every attribute comes from a small palette, so many identities share
each colour and only the combination tells them apart; pose, scale, lighting and mirroring vary
per appearance.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

PALETTE = np.array([
    (200, 40, 40), (40, 150, 60), (40, 70, 190), (225, 200, 50), (235, 235, 235),
    (35, 35, 35), (140, 80, 40), (150, 60, 170),
])  # fmt: skip
SKIN = np.array([(240, 200, 170), (200, 150, 110), (120, 80, 55)])
PATTERNS = ("plain", "hstripes", "vstripes", "sash")
BUILDS = (0.85, 1.0, 1.2)  # torso width factors


@dataclass(frozen=True)
class Look:
    """What stays the same across one person's appearances (indices into the palettes)."""

    top: int
    bottom: int
    pattern: int
    accent: int  # colour of the pattern and of the bag
    build: int
    skin: int
    hair: int
    bag: bool  # carried on the right; mirrored appearances carry it on the left


def random_look(rng):
    """A look drawn uniformly from every attribute's palette."""
    n = len(PALETTE)
    pick = lambda k: int(rng.integers(k))  # noqa: E731
    return Look(
        top=pick(n),
        bottom=pick(n),
        pattern=pick(len(PATTERNS)),
        accent=pick(n),
        build=pick(len(BUILDS)),
        skin=pick(len(SKIN)),
        hair=pick(n),
        bag=bool(pick(2)),
    )


def camera_style(rng):
    """A camera: background colours (wall, ground), texture strength and an RGB colour cast."""
    return {
        "wall": rng.integers(60, 200, 3), "ground": rng.integers(50, 170, 3),
        "horizon": float(rng.uniform(0.3, 0.55)), "texture": float(rng.uniform(6, 20)),
        "cast": rng.uniform(0.8, 1.2, 3), "blocks": rng.integers(0, 256, (6, 3)),
    }  # fmt: skip


def background(rng, cam, height, width):
    """H x W x 3 float background: wall with blocks (windows, doors), ground, noise texture."""
    img = np.empty((height, width, 3), np.float32)
    horizon = int(height * cam["horizon"])
    img[:horizon] = cam["wall"]
    img[horizon:] = cam["ground"]
    for colour in cam["blocks"][: rng.integers(2, 7)]:
        x, w = rng.integers(0, width), rng.integers(width // 12, width // 4)
        y, h = rng.integers(0, max(horizon - 10, 1)), rng.integers(10, max(horizon, 11))
        img[y : min(y + h, horizon), x : x + w] = 0.6 * colour + 0.4 * cam["wall"]
    shade = np.linspace(0.85, 1.1, height, dtype=np.float32)[:, None, None]
    noise = rng.normal(0, cam["texture"], (height, width, 1)).astype(np.float32)
    return img * shade + noise


def _colour(rgb, light):
    return tuple(int(v) for v in np.clip(np.asarray(rgb) * light, 0, 255))


def draw_person(draw, box, look, rng, mirror=False):
    """Draw ``look`` filling ``box`` (x1, y1, x2, y2) with a random pose and lighting."""
    x1, y1, x2, y2 = box
    h, cx = y2 - y1, (x1 + x2) / 2
    light = rng.uniform(0.75, 1.2)
    top, bottom = _colour(PALETTE[look.top], light), _colour(PALETTE[look.bottom], light)
    accent, skin = _colour(PALETTE[look.accent], light), _colour(SKIN[look.skin], light)
    half = (x2 - x1) / 2 * BUILDS[look.build] / max(BUILDS) * 0.62
    limb = max(2, int(h * 0.065))
    neck, hip = y1 + 0.17 * h, y1 + 0.55 * h
    # legs: spread by the stride, feet at the bottom of the box
    stride = rng.uniform(0.0, 0.6) * (x2 - x1) / 2
    for dx in (-stride, stride):
        draw.line([(cx + dx * 0.2, hip), (cx + dx, y2 - limb / 2)], fill=bottom, width=limb + 2)
        draw.line(
            [(cx + dx - limb / 2, y2 - 1), (cx + dx + limb, y2 - 1)], fill=(30, 30, 30), width=3
        )
    # arms: swing opposite to the legs, sleeves in the top colour
    swing = rng.uniform(-0.35, 0.35) * (x2 - x1)
    for side, s in ((-1, swing), (1, -swing)):
        sx = cx + side * half
        hand = (np.clip(sx + side * 0.05 * h + s * 0.3, x1 + 1, x2 - 1), y1 + 0.52 * h)
        draw.line([(sx, neck + limb / 2), hand], fill=top, width=limb)
        draw.ellipse(
            [hand[0] - limb / 2, hand[1] - limb / 2, hand[0] + limb / 2, hand[1] + limb / 2],
            fill=skin,
        )
    # torso with its pattern
    tx1, tx2 = cx - half, cx + half
    draw.rectangle([tx1, neck, tx2, hip], fill=top)
    pattern = PATTERNS[look.pattern]
    if pattern == "hstripes":
        for y in np.arange(neck + h * 0.05, hip, h * 0.08):
            draw.line([(tx1, y), (tx2, y)], fill=accent, width=max(1, int(h * 0.025)))
    elif pattern == "vstripes":
        for x in np.arange(tx1 + half * 0.25, tx2, half * 0.5):
            draw.line([(x, neck), (x, hip)], fill=accent, width=max(1, int(h * 0.025)))
    elif pattern == "sash":
        ends = [(tx1, neck), (tx2, hip)] if not mirror else [(tx2, neck), (tx1, hip)]
        draw.line(ends, fill=accent, width=max(2, int(h * 0.05)))
    if look.bag:
        side = -1 if mirror else 1
        bx = cx + side * (half + limb * 0.6)
        draw.rectangle([bx - limb, y1 + 0.4 * h, bx + limb, y1 + 0.58 * h], fill=accent)
    # head with hair
    r = h * 0.075
    hy = y1 + r + 1
    draw.ellipse([cx - r, hy - r, cx + r, hy + r], fill=skin)
    draw.chord(
        [cx - r, hy - r, cx + r, hy + r * 0.6], 180, 360, fill=_colour(PALETTE[look.hair], light)
    )


def draw_occluder(draw, box, rng, height):
    """Something in front of a person's lower part: a post or a low wall."""
    x1, y1, x2, y2 = box
    colour = tuple(int(v) for v in rng.integers(40, 200, 3))
    if rng.random() < 0.5:
        x = rng.uniform(x1, x2)
        w = (x2 - x1) * rng.uniform(0.15, 0.3)
        draw.rectangle(
            [x - w / 2, y1 + (y2 - y1) * rng.uniform(0, 0.4), x + w / 2, height], fill=colour
        )
    else:
        top = y2 - (y2 - y1) * rng.uniform(0.15, 0.35)
        draw.rectangle([x1 - (x2 - x1) * 0.3, top, x2 + (x2 - x1) * 0.3, height], fill=colour)


def render(rng, cam, size, people, occlude_p=0.25):
    """A scene image (PIL RGB): ``people`` = [(box, look, mirror)], drawn far to near."""
    height, width = size
    canvas = Image.fromarray(np.clip(background(rng, cam, height, width), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for box, look, mirror in sorted(people, key=lambda p: p[0][3]):
        draw_person(draw, box, look, rng, mirror)
        if rng.random() < occlude_p:
            draw_occluder(draw, box, rng, height)
    lit = np.asarray(canvas, np.float32) * cam["cast"] * rng.uniform(0.8, 1.15)
    return Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8))
