"""``seqnet synth``: write a synthetic person-search dataset in CUHK-SYSU, PRW or JSON format.

Deterministic: the same seed and sizes give the same bytes, and the test split's content
(images, boxes, queries, galleries) depends only on the seed, the test sizes and the cameras.
The output folder appears only when complete (written beside it under a temporary name, then
renamed), with the permissions the user's umask gives.
"""

import logging
from pathlib import Path

from seqnet_runtime import fs
from seqnet_train.data.synth_world import Streams, plan
from seqnet_train.data.synth_write import WRITERS
from seqnet_train.errors import SeqNetError

log = logging.getLogger(__name__)


def generate(
    fmt,
    out,
    seed=0,
    train_images=200,
    test_images=100,
    train_ids=40,
    test_ids=20,
    people=4,
    size=(240, 320),
    cameras=6,
):
    """Write the dataset to the folder ``out`` (absent or empty); return its path.

    ``size`` is (H, W); ``people`` the most people per image; ``cameras`` the number of
    cameras (each with its own background and colour cast).
    """
    if fmt not in WRITERS:
        raise SeqNetError(f"unknown format {fmt!r}; expected one of {sorted(WRITERS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SeqNetError(f"{out}: exists and is not an empty folder; choose a new --out")
    streams = Streams.from_seed(seed)
    frames, cams = plan(
        streams, train_images, test_images, train_ids, test_ids, people, tuple(size), cameras
    )
    with fs.atomic_dir(out) as tmp:
        WRITERS[fmt](streams, tmp, frames, cams, tuple(size))
    log.info("wrote a synthetic %s dataset (%d images, seed %d) to %s", fmt, len(frames), seed, out)
    return out


def run(args):
    """CLI entry: ``seqnet synth --format F --out DIR --seed S`` plus the size options."""
    generate(
        args.format,
        args.out,
        seed=args.seed,
        train_images=args.train_images,
        test_images=args.test_images,
        train_ids=args.train_ids,
        test_ids=args.test_ids,
        people=args.people,
        size=tuple(args.size),
        cameras=args.cameras,
    )
