"""Score a ``seqnet-run`` output folder against a synthetic video's ground truth
(``seqnet synth --format video``): per query, AP, recall and false matches. numpy only.

    python benchmarks/video_search.py --run OUTDIR --truth DIR/truth.json
        [--iou 0.5] [--threshold S] [--min-visible V] [--json OUT]

Reads ``OUTDIR/matches.json`` (each query's name and embedding, the run's ``threshold``) and
``OUTDIR/index.npz`` (every processed frame's detections: boxes and embeddings, read directly
with numpy). A query is scored when its name (the query file's stem, ``p81``) is one of the
truth's queries; its person is that identity. Only the frames the run processed count (every
k-th with ``--every k``). A run stopped by Ctrl-C cannot be scored: its index keeps no
detections of a video it did not finish.

Definitions, per query, over the processed frames:

* an *appearance* is a truth box of the query's identity in a frame. Appearances at least
  ``min_visible`` visible (the truth's value, 0.5 by default: the still benchmark's rule that a
  query is at most half hidden) must be found; less visible ones are *ignored*: a detection
  on one is neither a hit nor a false match, and is left out of the ranking.
* **AP**: every detection of every processed frame, ranked by similarity (its embedding dot
  the query's). Greedily in that order, a detection is a true positive when it overlaps a
  not yet matched appearance in its frame at IoU >= ``iou``; ignored when it overlaps an
  ignored appearance instead; otherwise a false positive. AP is the step-wise area under the
  precision/recall curve of that ranking (ties form one step, as scikit-learn's
  ``average_precision_score``), times the share of appearances matched at all, so that an
  appearance no detection covers costs recall (as the CUHK-SYSU protocol does).
* **recall**: the share of appearances where the frame's most similar detection has
  similarity >= the threshold and overlaps the appearance at IoU >= ``iou``: what a user
  watching the run's per-frame best match above the threshold sees of that person.
* **false matches**: processed frames whose most similar detection has similarity >= the
  threshold but overlaps no appearance of the query's identity (ignored ones included) at IoU
  >= ``iou``; also as a share of the processed frames.
* **detected**: the share of appearances any detection overlaps at IoU >= ``iou`` (the
  detector's part of the recall: the ceiling for both numbers above).

The threshold is ``--threshold``, else the run's own. Prints a table and JSON (per query and
the mean over queries; with ``--json`` also written to a file).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


class ScoreError(Exception):
    """A run folder or truth file that cannot be scored, in one line."""


def average_precision(y_true, y_score):
    """scikit-learn's ``average_precision_score`` for binary labels (the same computation as
    ``seqnet_train.evaluation.ap.average_precision``, repeated here to keep this numpy only:
    importing the training package's evaluation imports torch). 0 without positives."""
    y_true = np.asarray(y_true, dtype=bool).ravel()
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-y_score, kind="stable")
    score, hit = y_score[order], y_true[order]
    ends = np.flatnonzero(np.r_[score[1:] != score[:-1], True])  # last index of each tie group
    tps = np.cumsum(hit)[ends]
    precision = tps / (ends + 1)
    recall_step = np.diff(np.r_[0, tps]) / n_pos
    return float(np.sum(recall_step * precision))


def iou(a, b):
    """IoU of every box of ``a`` (n x 4) with every box of ``b`` (m x 4), x1y1x2y2 (n x m)."""
    a = np.asarray(a, np.float64).reshape(-1, 1, 4)
    b = np.asarray(b, np.float64).reshape(1, -1, 4)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = inter / (area_a + area_b - inter)
    return np.nan_to_num(out, nan=0.0)


def load_run(run):
    """(matches dict, {frames, counts, boxes, embeddings} of the video's unit)."""
    run = Path(run)
    try:
        matches = json.loads((run / "matches.json").read_text())
    except (OSError, ValueError) as e:
        raise ScoreError(f"{run}: no readable matches.json ({e.__class__.__name__})") from None
    try:
        with np.load(run / "index.npz", allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            units = [key for key, _ in meta["units"]]
            if not units:
                raise ScoreError(
                    f"{run}/index.npz: holds no video (a run stopped by Ctrl-C keeps none of an "
                    "unfinished video's detections): score a complete run"
                )
            n = 0
            if len(units) > 1:  # the unit of the run's input, else the only one
                wanted = str(Path(matches.get("input", "")).resolve())
                if wanted not in units:
                    raise ScoreError(f"{run}/index.npz: several units, none is {wanted}")
                n = units.index(wanted)
            unit = {a: data[f"{n}/{a}"] for a in ("frames", "counts", "boxes", "embeddings")}
    except (OSError, ValueError, KeyError) as e:
        raise ScoreError(f"{run}: no readable index.npz ({e.__class__.__name__})") from None
    if int(unit["counts"].sum()) != len(unit["boxes"]) or len(unit["boxes"]) != len(
        unit["embeddings"]
    ):
        raise ScoreError(f"{run}/index.npz: counts, boxes and embeddings disagree")
    return matches, unit


def score_query(unit, truth_frames, pid, query, threshold, iou_min=0.5, min_visible=0.5):
    """The numbers of one query (embedding ``query``, identity ``pid``); see the module doc."""
    frames, counts = unit["frames"], unit["counts"]
    boxes = unit["boxes"].astype(np.float64)
    sims = unit["embeddings"].astype(np.float64) @ np.asarray(query, np.float64)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    det_frame = np.repeat(np.arange(len(frames)), counts)  # row of each detection's frame
    # the query person's appearance (at most one per frame) and whether it must be found
    gt_box = np.zeros((len(frames), 4))
    has = np.zeros(len(frames), bool)
    needed = np.zeros(len(frames), bool)
    for row, f in enumerate(frames):
        if not 0 <= f < len(truth_frames):
            raise ScoreError(f"the run processed frame {f}; the truth has {len(truth_frames)}")
        for r in truth_frames[f]:
            if r["id"] == pid:
                gt_box[row], has[row] = r["box"], True
                needed[row] = r["visible"] >= min_visible
    overlap = np.zeros(len(boxes), bool)  # detection overlaps its frame's appearance
    if len(boxes):
        ious = iou(boxes, gt_box)[np.arange(len(boxes)), det_frame]
        overlap = has[det_frame] & (ious >= iou_min)
    # AP: greedy by similarity, each appearance matched once
    taken = np.zeros(len(frames), bool)
    labels, keep = np.zeros(len(boxes), bool), np.ones(len(boxes), bool)
    for j in np.argsort(-sims, kind="stable"):
        row = det_frame[j]
        if overlap[j] and not taken[row]:
            taken[row] = True
            labels[j] = needed[row]
            keep[j] = needed[row]  # the first detection on an ignored appearance: left out
        elif overlap[j] and not needed[row]:
            keep[j] = False  # more detections on an ignored appearance: left out too
    n_needed = int(needed.sum())
    found = int(labels.sum())
    ap = 0.0
    if n_needed and found:
        ap = average_precision(labels[keep], sims[keep]) * found / n_needed
    # per frame: the most similar detection
    hits = false = 0
    for row in range(len(frames)):
        if not counts[row]:
            continue
        lo = starts[row]
        j = lo + int(np.argmax(sims[lo : lo + counts[row]]))
        if sims[j] < threshold:
            continue
        if overlap[j]:
            hits += int(needed[row])
        else:
            false += 1
    detected = int(np.sum([overlap[det_frame == row].any() for row in np.flatnonzero(needed)]))
    return {
        "ap": round(ap, 4),
        "recall": round(hits / n_needed, 4) if n_needed else None,
        "false_matches": false,
        "false_match_rate": round(false / len(frames), 4) if len(frames) else 0.0,
        "detected": round(detected / n_needed, 4) if n_needed else None,
        "appearances": n_needed,
        "ignored": int((has & ~needed).sum()),
    }


def score(run, truth, iou_min=0.5, threshold=None, min_visible=None):
    """Every query's numbers and their mean: a JSON-ready dict."""
    truth_path = Path(truth)
    try:
        truth = json.loads(truth_path.read_text())
        frames_truth, names = truth["frames_truth"], truth["queries"]
    except (OSError, ValueError, KeyError) as e:
        raise ScoreError(f"{truth_path}: not a video truth file ({e.__class__.__name__})") from None
    matches, unit = load_run(run)
    if threshold is None:
        threshold = matches.get("threshold")
        if threshold is None:
            raise ScoreError("the run records no threshold; give --threshold")
    if min_visible is None:
        min_visible = truth.get("min_visible", 0.5)
    per_query, skipped = {}, []
    for q in matches.get("queries", []):
        if q.get("name") not in names:
            skipped.append(q.get("name"))
            continue
        per_query[q["name"]] = {
            "id": names[q["name"]],
            **score_query(
                unit, frames_truth, names[q["name"]], q["embedding"], threshold, iou_min,
                min_visible,
            ),
        }  # fmt: skip
    if not per_query:
        raise ScoreError(f"no query of the run is one of the truth's ({', '.join(names)})")

    def mean(key):
        vals = [v[key] for v in per_query.values() if v[key] is not None]
        return round(float(np.mean(vals)), 4) if vals else None

    return {
        "run": str(run),
        "truth": str(truth_path),
        "iou": iou_min,
        "threshold": threshold,
        "min_visible": min_visible,
        "frames": len(unit["frames"]),
        "partial": bool(matches.get("partial", False)),
        "queries": per_query,
        "skipped": skipped,
        "mean": {k: mean(k) for k in ("ap", "recall", "detected", "false_match_rate")}
        | {"false_matches": sum(v["false_matches"] for v in per_query.values())},
    }


def table(result):
    """The per-query table as text."""
    head = f"{'query':<10}{'id':>5}{'AP':>8}{'recall':>8}{'false':>7}{'detected':>10}{'n':>5}"
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [head]
    for name, v in result["queries"].items():
        lines.append(
            f"{name:<10}{v['id']:>5}{fmt(v['ap']):>8}{fmt(v['recall']):>8}"
            f"{v['false_matches']:>7}{fmt(v['detected']):>10}{v['appearances']:>5}"
        )
    m = result["mean"]
    lines.append(
        f"{'mean':<10}{'':>5}{fmt(m['ap']):>8}{fmt(m['recall']):>8}"
        f"{m['false_matches']:>7}{fmt(m['detected']):>10}"
    )
    note = " (partial run)" if result["partial"] else ""
    lines.append(
        f"{result['frames']} processed frames{note}, threshold {result['threshold']}, "
        f"IoU >= {result['iou']}, appearances at least {result['min_visible']} visible"
    )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="seqnet-run output folder")
    p.add_argument("--truth", required=True, help="truth.json of seqnet synth --format video")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for a detection to find a person")
    p.add_argument("--threshold", type=float, help="similarity threshold (default: the run's)")
    p.add_argument("--min-visible", type=float, help="visibility floor (default: the truth's)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    try:
        result = score(args.run, args.truth, args.iou, args.threshold, args.min_visible)
    except ScoreError as e:
        sys.exit(f"video_search: error: {e}")
    print(table(result))
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
