"""End-to-end ``seqnet-run`` throughput against its backend's own, on the same video in one run
(issue 22's target: at least 85%), printed as JSON.

The backend's own: the video's frames decoded up front, then ``session.detect`` on batches of
``--batch`` frames (after a warm-up batch). End to end: ``seqnet-run`` on the video, as a user
runs it (the search pass decoding in its thread and matching, then the pass that draws
``annotated.mp4``, the appearances, the pictures and the page), over its whole wall time but
the model's loading (measured apart, on the backend's own session).

    python benchmarks/run_throughput.py --model PACKAGE --video V.mp4 --query Q.jpg [...]
        [--backend onnxruntime] [--batch 4] [--json OUT]
"""

import argparse
import tempfile
import time
from pathlib import Path

import machine
import numpy as np

from seqnet_runtime import load, video
from seqnet_runtime.run import run


def backend_fps(session, frames, batch):
    session.detect(frames[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        session.detect(frames[i : i + batch])
    return len(frames) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model package")
    parser.add_argument("--video", required=True)
    parser.add_argument("--query", action="append", required=True, help="query crop(s)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    t = time.perf_counter()
    frames = [np.asarray(image) for _, _, image in video.frames(args.video)]  # as seqnet-run
    decode_s = time.perf_counter() - t
    t = time.perf_counter()
    session = load(Path(args.model), args.backend)
    load_s = time.perf_counter() - t
    own = backend_fps(session, frames, args.batch)
    del session
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = run(args.video, args.query, model=Path(args.model), backend=args.backend,
                     batch=args.batch, out=Path(tmp) / "run")  # fmt: skip
        wall = time.perf_counter() - t
    end_to_end = result.frames / (wall - load_s)
    report = {
        "machine": machine.describe(),
        "backend": args.backend,
        "batch": args.batch,
        "frames": len(frames),
        "frame_size": list(frames[0].shape[:2]),
        "decode_fps": round(len(frames) / decode_s, 1),
        "backend_fps": round(own, 2),
        "end_to_end_fps": round(end_to_end, 2),
        "end_to_end_vs_backend": round(end_to_end / own, 3),
        "target": 0.85,
        "seqnet_run_wall_s": round(wall, 2),
        "seqnet_run_search_pass_s": round(result.seconds, 2),
        "model_load_s": round(load_s, 2),
    }
    machine.report(report, args.json)


if __name__ == "__main__":
    main()
