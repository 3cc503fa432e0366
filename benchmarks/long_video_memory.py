"""``seqnet-run``'s peak memory against the video's length (issue 34: flat by design), printed as
JSON: for each length, a synthetic video is written (``seqnet synth --format video``, timed),
searched by ``seqnet-run`` in a process of its own (its peak resident memory), and its index
measured on disk (bytes per frame).

    python benchmarks/long_video_memory.py --model PACKAGE [--frames 200 2000 20000]
        [--size 96 128] [--json OUT]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
from machine import cpu_name

from seqnet_runtime.cpu import cpu_features
from seqnet_train.cli import main as seqnet

RUN = "import sys; from seqnet_runtime.cli import main; main()"
# a fresh parent per run: ru_maxrss of RUSAGE_CHILDREN is the largest child's so far
MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_mb(args, cwd=None):
    """Peak resident memory (MB) of ``seqnet-run args`` in a process of its own, and its
    wall time (s)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-c", RUN, *args],
                         check=True, cwd=cwd, capture_output=True, text=True)  # fmt: skip
    return int(out.stdout.split()[-1]) / 1024, time.perf_counter() - start


def measure(model, frames, size, folder):
    video = folder / f"v{frames}"
    start = time.perf_counter()
    seqnet(["synth", "--format", "video", "--out", str(video), "--frames", str(frames),
            "--size", *map(str, size), "--seed", "4"])  # fmt: skip
    synth_s = time.perf_counter() - start
    query = sorted((video / "queries").glob("*.jpg"))[0]
    out = folder / f"out{frames}"
    args = [str(video / "video.mp4"), "--query", str(query), "--model", str(model),
            "--out", str(out), "--no-video", "--batch", "4"]  # fmt: skip
    peak, run_s = peak_mb(args)
    index = sum(p.stat().st_size for p in (out / "index").rglob("*") if p.is_file())
    return {
        "synth_s": round(synth_s, 1),
        "seqnet_run_s": round(run_s, 1),
        "peak_rss_mb": round(peak, 1),
        "index_bytes": index,
        "index_bytes_per_frame": round(index / frames, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model package")
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 2000, 20000])
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], help="frame height width")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for frames in sorted(args.frames):
            results[frames] = measure(Path(args.model).resolve(), frames, args.size, Path(tmp))
            print(f"{frames} frames: {json.dumps(results[frames])}", file=sys.stderr)
    lengths = sorted(results)
    report = {
        "machine": {"cpu": cpu_name(), "features": cpu_features(), "python": sys.version[:6]},
        "frame_size": args.size,
        "runs": results,
        "peak_growth_mb": round(
            results[lengths[-1]]["peak_rss_mb"] - results[lengths[0]]["peak_rss_mb"], 1
        ),
    }
    machine.report(report, args.json)


if __name__ == "__main__":
    main()
