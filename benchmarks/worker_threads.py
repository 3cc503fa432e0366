"""Frames per second of W processes detecting at once with T threads each, on one video: what
a Ray worker of T CPUs does beside the others on its machine (the per-worker figure behind the
archive's extrapolation to N machines), and what giving each more threads than its CPUs costs.
Printed as JSON.

    python benchmarks/worker_threads.py --model PACKAGE [VIDEO] [--layouts 1x1,1x2,2x1,2x2]
        [--frames 100] [--batch 4] [--json OUT]

A layout WxT: W processes, each with a session of T ONNX Runtime threads, detect the video's
first ``--frames`` frames (as an archive segment: decoding included) after a warm-up, all
starting together; each process's frames/s, and their sum. Without a video, a synthetic one
(``seqnet synth --format video --seed 1``, the archive benchmark's first).
"""

import argparse
import multiprocessing
import queue
import tempfile
import time
from pathlib import Path

import machine

from seqnet_runtime.archive import Segment, detect_segment
from seqnet_runtime.backend import load
from seqnet_train.cli import main as seqnet


def worker(model, video, threads, frames, batch, start, results):
    """Puts ``(frames/s, None)``, or ``(None, what went wrong)``: a process that died without a
    word would leave the others at the barrier and the parent at its queue for ever."""
    try:
        session = load(model, "onnxruntime", threads=threads)
        detect_segment(session, Segment(video, "warm-up", 0, batch, 1, batch), batch)
        start.wait()  # every process loaded and warm: they detect at the same time
        began = time.perf_counter()
        _, _, done, error = detect_segment(
            session, Segment(video, "timed", 0, frames, 1, frames), batch
        )
        if error:
            raise RuntimeError(error)
        results.put((done / (time.perf_counter() - began), None))
    except Exception as e:
        start.abort()  # the others waiting at the barrier stop too
        results.put((None, f"{type(e).__name__}: {e}"))


def run_layout(model, video, workers, threads, frames, batch):
    """Each of ``workers`` processes' frames/s, detecting at once with ``threads`` each."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(workers), context.Queue()
    processes = [
        context.Process(target=worker, args=(model, video, threads, frames, batch, start, results))
        for _ in range(workers)
    ]
    for p in processes:
        p.start()
    outcomes = []
    while len(outcomes) < workers:
        try:
            outcomes.append(results.get(timeout=1))
        except queue.Empty:  # one killed (out of memory, a crash in a library) never reports
            if killed := [p.exitcode for p in processes if p.exitcode]:
                for p in processes:
                    p.kill()
                died = f"a {workers}x{threads} worker died (exit code {killed[0]})"
                raise SystemExit(died) from None
    for p in processes:
        p.join()
    # the cause first: the others only report the barrier it broke
    errors = sorted((e for _, e in outcomes if e), key=lambda e: "BrokenBarrierError" in e)
    if errors:
        raise SystemExit(f"a {workers}x{threads} worker failed: {errors[0]}")
    return sorted(f for f, _ in outcomes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?")
    parser.add_argument("--model", required=True, help="model package")
    parser.add_argument("--layouts", default="1x1,1x2,2x1,2x2",
                        help="WORKERSxTHREADS, comma-separated")  # fmt: skip
    parser.add_argument("--frames", type=int, default=100, help="frames each process detects")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    try:
        layouts = [tuple(int(n) for n in x.split("x")) for x in args.layouts.split(",")]
    except ValueError:
        parser.error(f"--layouts: WORKERSxTHREADS, comma-separated, got {args.layouts!r}")
    if not layouts or any(len(x) != 2 or min(x) < 1 for x in layouts):
        parser.error(f"--layouts: WORKERSxTHREADS, each 1 or more, got {args.layouts!r}")
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        if video is None:
            length = f"--frames={args.frames + args.batch}"
            seqnet(["synth", "--format", "video", "--out", f"{tmp}/v", "--seed=1", length,
                    "--train-ids=80", "--test-ids=30"])  # fmt: skip
            video = str(Path(tmp) / "v" / "video.mp4")
        rows = []
        for workers, threads in layouts:
            fps = run_layout(args.model, video, workers, threads, args.frames, args.batch)
            each = [round(f, 2) for f in fps]
            rows.append({"workers": workers, "threads": threads, "fps_each": each,
                         "fps_total": round(sum(fps), 2)})  # fmt: skip
    machine.report(
        {"machine": machine.describe(), "video": args.video or "synthetic: seed 1",
         "frames": args.frames, "batch": args.batch, "layouts": rows},
        args.json,
    )  # fmt: skip


if __name__ == "__main__":
    main()
