"""An archive's throughput three ways in one run, on the same videos, printed as JSON: each
video through ``seqnet-run`` one after the other; the archive in this process; the archive on
a local Ray (``--ray auto``, ``--workers N``). Frames per second are frames over wall time,
the model's loading included (it is part of what a user waits for); Ray's start-up (Ray and
its workers' models) is also given apart.

    python benchmarks/archive_throughput.py --model PACKAGE --query Q.jpg V1.mp4 V2.mp4 ...
        [--segment 5] [--workers 1] [--batch 4] [--no-video] [--json OUT]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import machine
from machine import cpu_name

from seqnet_runtime.archive import search_archive
from seqnet_runtime.cpu import cpu_features
from seqnet_runtime.run import run


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--model", required=True, help="model package")
    parser.add_argument("--query", action="append", required=True, help="query crop(s)")
    parser.add_argument("--segment", type=float, default=5.0, help="seconds per segment")
    parser.add_argument("--workers", type=int, default=1, help="Ray workers")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-video", action="store_true", help="no annotated.mp4")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    common = {"model": Path(args.model), "backend": "onnxruntime", "batch": args.batch,
              "annotate": not args.no_video}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sequential, frames = 0.0, 0
        for n, path in enumerate(args.videos):
            result, seconds = timed(run, path, args.query, out=tmp / f"one{n}", **common)
            sequential, frames = sequential + seconds, frames + result.frames
        archive = {"segment": args.segment, **common}
        _, local = timed(search_archive, args.videos, args.query, out=tmp / "local", **archive)
        _, on_ray = timed(search_archive, args.videos, args.query, out=tmp / "ray", ray="auto",
                          workers=args.workers, **archive)  # fmt: skip
        ray_run = json.loads((tmp / "ray" / "run.json").read_text())
        same = (tmp / "local" / "matches.json").read_text() == (
            tmp / "ray" / "matches.json"
        ).read_text()
    fps = {"sequential": frames / sequential, "in_process": frames / local, "ray": frames / on_ray}
    report = {
        "machine": {
            "cpu": cpu_name(),
            "features": cpu_features(),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "videos": len(args.videos),
        "frames": frames,
        "segment_s": args.segment,
        "ray_workers": args.workers,
        "fps": {k: round(v, 2) for k, v in fps.items()},
        "in_process_vs_sequential": round(fps["in_process"] / fps["sequential"], 3),
        "ray_vs_in_process": round(fps["ray"] / fps["in_process"], 3),
        "ray_startup_s": ray_run["startup_s"],
        "targets": {"in_process_vs_sequential": 0.95, "ray_vs_in_process": 0.9},
        "same_matches": same,
    }
    machine.report(report, args.json)


if __name__ == "__main__":
    main()
