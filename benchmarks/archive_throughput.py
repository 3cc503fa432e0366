"""An archive's throughput three ways in one run, on the same videos, printed as JSON: each
video through ``seqnet-run`` one after the other; the archive in this process; the archive on
Ray (``--ray auto``: a local Ray that the run starts, ``--workers N``, by default one per CPU,
each detecting on its one core; or, with
``--ray-address``, a Ray already running, as a cluster is: ``ray start --head`` once, then
every search joins it). Frames per second are frames over wall time, the model's loading
included (it is part of what a user waits for); Ray's start-up (Ray, unless joined, and its
workers' models) is also given apart, and each run's busy and idle CPU-seconds of the whole
machine (on Linux): whether a slower run worked more or waited.

The three run one after another ``--repeats`` times, and the ratios are the medians of each
round's: on a shared 2-core machine the same in-process run took 81 to 91 s within twenty
minutes (docs/benchmarks.md), so one round's ratio is as much the machine as the code.

    python benchmarks/archive_throughput.py --model PACKAGE [--query Q.jpg V1.mp4 V2.mp4 ...]
        [--segment 5] [--workers N] [--ray-address auto|HOST:PORT] [--batch 4] [--no-video]
        [--repeats 3] [--json OUT]

Without videos, it writes its own archive: three synthetic videos (``seqnet synth --format
video``, seeds 1-3, the demo's identities) of 150, 150 and 300 frames, the first video's
first query crop as the query.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import machine

from seqnet_runtime.archive import search_archive
from seqnet_runtime.run import run
from seqnet_train.cli import main as seqnet

SYNTHETIC = ((1, 150), (2, 150), (3, 300))  # (seed, frames): the archive when none is given
RATIOS = {"in_process_vs_sequential": 0.95, "ray_vs_in_process": 0.9}  # the targets


def timed(func, *args, **kwargs):
    """``(result, wall seconds, [busy, idle] CPU-seconds of the machine or None)``."""
    start, cpu = time.perf_counter(), machine.cpu_seconds()
    result = func(*args, **kwargs)
    seconds, end = time.perf_counter() - start, machine.cpu_seconds()
    return result, seconds, cpu and [b - a for a, b in zip(cpu, end)]


def synthetic_archive(folder):
    """The videos of SYNTHETIC written into ``folder`` and the query: ([videos], [crop])."""
    videos = []
    for seed, frames in SYNTHETIC:
        out = folder / f"seed{seed}"
        seqnet(["synth", "--format", "video", "--out", str(out), f"--seed={seed}",
                f"--frames={frames}", "--train-ids=80", "--test-ids=30"])  # fmt: skip
        videos.append(str(out / "video.mp4"))
    return videos, [str(sorted((folder / "seed1" / "queries").glob("*.jpg"))[0])]


def one_round(args, common, tmp):
    """One video after another, the archive in-process, the archive on Ray: frames/s each."""
    sequential, frames, cpu = 0.0, 0, {"sequential": [0.0, 0.0]}
    for n, path in enumerate(args.videos):
        result, seconds, used = timed(run, path, args.query, out=tmp / f"one{n}", **common)
        sequential, frames = sequential + seconds, frames + result.frames
        cpu["sequential"] = used and [a + b for a, b in zip(cpu["sequential"], used)]
    archive = {"segment": args.segment, **common}
    _, local, cpu["in_process"] = timed(
        search_archive, args.videos, args.query, out=tmp / "local", **archive
    )
    _, on_ray, cpu["ray"] = timed(
        search_archive, args.videos, args.query, out=tmp / "ray", ray=args.ray_address,
        workers=args.workers, **archive,
    )  # fmt: skip
    same = (tmp / "local" / "matches.json").read_text() == (
        tmp / "ray" / "matches.json"
    ).read_text()
    on_ray_run = json.loads((tmp / "ray" / "run.json").read_text())
    fps = {"sequential": frames / sequential, "in_process": frames / local, "ray": frames / on_ray}
    return {
        "frames": frames,
        "fps": {k: round(v, 2) for k, v in fps.items()},
        "in_process_vs_sequential": round(fps["in_process"] / fps["sequential"], 3),
        "ray_vs_in_process": round(fps["ray"] / fps["in_process"], 3),
        "ray_startup_s": on_ray_run["startup_s"],
        "ray_workers": on_ray_run["workers"],
        "ray_worker_threads": on_ray_run["threads"],
        "cpu_s": {
            k: v and {"busy": round(v[0], 1), "idle": round(v[1], 1)} for k, v in cpu.items()
        },
        "same_matches": same,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*")
    parser.add_argument("--model", required=True, help="model package")
    parser.add_argument("--query", action="append", help="query crop(s) (with videos)")
    parser.add_argument("--segment", type=float, default=5.0, help="seconds per segment")
    parser.add_argument("--workers", type=int,
                        help="Ray workers (default: one per CPU that Ray has free)")  # fmt: skip
    parser.add_argument("--ray-address", default="auto",
                        help="a running Ray to join (default: the run starts one)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-video", action="store_true", help="no annotated.mp4")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the three runs")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats is 1 or more")
    if bool(args.videos) != bool(args.query):
        parser.error("give videos and --query together, or neither (a synthetic archive)")
    common = {"model": Path(args.model), "backend": "onnxruntime", "batch": args.batch,
              "annotate": not args.no_video}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        given = list(args.videos)
        if not args.videos:
            args.videos, args.query = synthetic_archive(tmp / "archive")
        rounds = [one_round(args, common, tmp / f"round{n}") for n in range(args.repeats)]
    report = {
        "machine": machine.describe(),
        "videos": given or [f"synthetic: seed {s}, {n} frames" for s, n in SYNTHETIC],
        "frames": rounds[0]["frames"],
        "segment_s": args.segment,
        "ray_address": args.ray_address,
        "rounds": rounds,
        **{k: statistics.median(r[k] for r in rounds) for k in RATIOS},
        "targets": RATIOS,
        "same_matches": all(r["same_matches"] for r in rounds),
    }
    machine.report(report, args.json)


if __name__ == "__main__":
    main()
