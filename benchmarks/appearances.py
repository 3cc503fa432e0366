"""How well ``seqnet-run`` finds a query's appearances, over several synthetic videos, printed as
JSON: each video (``seqnet synth --format video``, one seed each, the demo's identities) is
searched for its queries and scored against its truth (``seqnet_runtime.video_score``: a true
appearance is found when a predicted one overlaps it in time and its best box is the person).
Beside the run's appearances (tracks, ``seqnet_runtime.tracks``), the same detections grouped
from each frame's best match alone, as before tracks, for comparison.

    python benchmarks/appearances.py --model PACKAGE [--seeds 0 1 2 3 4 5 6]
        [--threshold 0.5] [--gap 2] [--json OUT]
"""

import argparse
import json
import tempfile
from pathlib import Path

import machine
import numpy as np

from seqnet_runtime.appearances import group_appearances, to_json
from seqnet_runtime.run import run
from seqnet_runtime.video_score import load_run, score_appearances
from seqnet_train.cli import main as seqnet

DEMO_IDS = ["--train-ids=80", "--test-ids=30", "--queries=3"]  # as make demo's video


def best_match_appearances(unit, query, threshold, gap):
    """Appearances grouped from each frame's most similar detection (no tracks)."""
    sims = unit["embeddings"] @ np.asarray(query, np.float32)
    ends = np.cumsum(unit["counts"])
    records = []
    for f, t, lo, hi in zip(unit["frames"], unit["times"], ends - unit["counts"], ends):
        j = lo + int(np.argmax(sims[lo:hi])) if hi > lo else None
        records.append((int(f), float(t), None if j is None else float(sims[j]),
                        None if j is None else unit["boxes"][j].tolist()))  # fmt: skip
    return to_json(group_appearances(records, threshold, gap=gap))


def totals(rows):
    """Pooled counts of ``rows`` (score_appearances results): recall, precision, and how many
    queries got a count of appearances within one of the truth's."""
    keys = ("predicted", "correct", "true", "found")
    pooled = {k: sum(r[k] for r in rows) for k in keys}
    return {
        **pooled,
        "recall": round(pooled["found"] / max(pooled["true"], 1), 4),
        "precision": round(pooled["correct"] / max(pooled["predicted"], 1), 4),
        "count_within_one": sum(abs(r["predicted"] - r["true"]) <= 1 for r in rows),
        "queries": len(rows),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model package")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(7)))
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--gap", type=float, default=2.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    videos, tracked, best_match = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            folder, out = Path(tmp) / f"video{seed}", Path(tmp) / f"run{seed}"
            seqnet(
                ["synth", "--format", "video", "--out", str(folder), f"--seed={seed}", *DEMO_IDS]
            )
            queries = sorted(str(p) for p in (folder / "queries").glob("*.jpg"))
            run(folder / "video.mp4", queries, model=Path(args.model), backend="onnxruntime",
                threshold=args.threshold, gap=args.gap, out=out, annotate=False)  # fmt: skip
            truth = json.loads((folder / "truth.json").read_text())
            matches, unit = load_run(out)
            fps, per_query = float(truth["fps"]), {}
            for q in matches["queries"]:
                pid = truth["queries"][q["name"]]
                args_ = (truth["frames_truth"], pid, unit["frames"], fps, args.gap)
                mine = score_appearances(q["appearances"], *args_)
                best = best_match_appearances(unit, q["embedding"], args.threshold, args.gap)
                other = score_appearances(best, *args_)
                tracked.append(mine)
                best_match.append(other)
                per_query[q["name"]] = {"tracks": mine, "best_match_per_frame": other}
            videos.append({"seed": seed, "frames": len(unit["frames"]), "queries": per_query})
    report = {
        "machine": machine.describe(),
        "model": str(args.model),
        "threshold": args.threshold,
        "gap_s": args.gap,
        "overall": {"tracks": totals(tracked), "best_match_per_frame": totals(best_match)},
        "videos": videos,
    }
    machine.report(report, args.json)


if __name__ == "__main__":
    main()
