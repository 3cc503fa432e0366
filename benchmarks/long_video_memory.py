"""``seqnet-run``'s peak memory against the video's length (issue 34: flat by design), printed as
JSON: for each length, a synthetic video is written (``seqnet synth --format video``, timed),
searched by ``seqnet-run`` in a process of its own (its peak resident memory), and its index
measured on disk (bytes per frame). ``--model random`` (the default) writes a small package of
random weights first: memory does not depend on the weights, and at ~30 frames/s on 2 cores it
makes 20,000 frames ten minutes (16 detections per frame, more than a trained model's).

    python benchmarks/long_video_memory.py [--model PACKAGE|random] [--frames 200 2000 20000]
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
import torch

from seqnet_export.run import write_graphs
from seqnet_train.cli import main as seqnet
from seqnet_train.config import load_cfg
from seqnet_train.modeling import build_model

RUN = "import sys; from seqnet_runtime.cli import main; main()"
# a fresh parent per run: ru_maxrss of RUSAGE_CHILDREN is the largest child's so far
MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
# --model random: ResNet-10, small inputs and RoIs, 20 proposals, every detection above 0.2
RANDOM = ["MODEL.BACKBONE", "resnet10", "INPUT.MIN_SIZE", "128", "INPUT.MAX_SIZE", "192",
          "MODEL.ROI_HEAD.POOL_SIZE", "[6, 3]", "MODEL.RPN.PRE_NMS_TOPN_TEST", "200",
          "MODEL.RPN.POST_NMS_TOPN_TEST", "20", "MODEL.ROI_HEAD.SCORE_THRESH_TEST", "0.2",
          "MODEL.LOSS.LUT_SIZE", "8", "MODEL.LOSS.CQ_SIZE", "16"]  # fmt: skip


def random_package(folder):
    """A package of random weights (seeded) in ``folder``, for runs whose cost, not accuracy,
    is measured."""
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_graphs(folder, build_model(load_cfg(None, RANDOM), load_imagenet=False).eval())
    return folder


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
    parser.add_argument("--model", default="random", help="model package, or random")
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 2000, 20000])
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], help="frame height width")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = random_package(tmp / "pkg") if args.model == "random" else Path(args.model)
        for frames in sorted(args.frames):
            results[frames] = measure(model.resolve(), frames, args.size, tmp)
            print(f"{frames} frames: {json.dumps(results[frames])}", file=sys.stderr)
    lengths = sorted(results)
    report = {
        "machine": machine.describe(),
        "model": args.model,
        "frame_size": args.size,
        "runs": results,
        "peak_growth_mb": round(
            results[lengths[-1]]["peak_rss_mb"] - results[lengths[0]]["peak_rss_mb"], 1
        ),
    }
    machine.report(report, args.json)


if __name__ == "__main__":
    main()
