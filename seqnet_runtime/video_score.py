"""Score a ``seqnet-run`` output folder against a synthetic video's ground truth
(``seqnet synth --format video``): per query, AP, recall and false matches. numpy only.

    python -m seqnet_runtime.video_score --run OUTDIR --truth DIR/truth.json
        [--iou 0.5] [--threshold S] [--min-visible V] [--gap SECONDS] [--json OUT]

Reads ``OUTDIR/matches.json`` (each query's name and embedding, the run's ``threshold``) and
``OUTDIR/index/`` (every processed frame's detections: boxes and embeddings; see
``seqnet_runtime.index``). A query is scored when its name (the query file's stem,
``p81``) is one of the truth's queries; its person is that identity. Only the frames the run
processed count (every k-th with ``--every k``). A run stopped by Ctrl-C cannot be scored:
its index keeps no detections of a video it did not finish.

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

**Appearance scores** (``result["appearances"]``; issue 33): what a user reading the run's
*appearances* ("seen from 3.4 s to 6.6 s, best look at 4.1 s", ``seqnet_runtime.appearances``)
gets right. Unlike the per-frame appearances above, these are spans of time:

* a *true appearance* of the query's identity is a maximal run of processed frames where the
  truth shows them (any part visible), split where two such frames are more than ``gap``
  seconds apart (``--gap``, 2 s by default as ``seqnet_runtime.appearances``) or where the true
  box jumps (back at another place: that module's position rule, so that a run that finds
  every box groups them alike). It must be
  found when at least one of its frames shows ``min_visible`` of the person; else it is
  *ignored* (counted apart; a predicted appearance on it is correct and finds nothing);
* the *predicted appearances* are the query's ``appearances`` in matches.json when the run
  wrote them (and ``--threshold`` is not another one); else they are grouped here from the
  index (each processed frame's most similar detection and its box), as the runtime groups them;
* a predicted appearance is *correct* when its best box overlaps the identity's true box in
  its best frame at IoU >= ``iou`` (the person at all visible there); **precision** = correct
  / predicted;
* a true appearance is *found* when a correct predicted appearance overlaps it in time (frame
  span) and it is the true appearance nearest that predicted appearance's best frame;
  **recall** = found / true (the required ones). ``split``: true appearances found by more
  than one predicted appearance (one sighting reported in pieces). ``overall``: every query's
  counts pooled.

The threshold is ``--threshold``, else the run's own. Prints a table and JSON (per query and
the mean over queries; with ``--json`` also written to a file).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from seqnet_runtime.appearances import DEFAULT_GAP, Appearance, group_appearances, to_json
from seqnet_runtime.boxes import average_precision, pairwise_iou
from seqnet_runtime.index import load_index
from seqnet_runtime.tracks import TrackLog


class ScoreError(Exception):
    """A run folder or truth file that cannot be scored, in one line."""


def load_run(run):
    """(matches dict, {frames, counts, boxes, embeddings, and times where the index has them}
    of the video's unit)."""
    run = Path(run)
    try:
        matches = json.loads((run / "matches.json").read_text())
    except (OSError, ValueError) as e:
        raise ScoreError(f"{run}: no readable matches.json ({e.__class__.__name__})") from None
    units = load_index(run / "index")
    if not units:
        raise ScoreError(
            f"{run}/index: holds no video (a run stopped by Ctrl-C keeps none of an unfinished "
            "video's detections, and an unreadable index is none): score a complete run"
        )
    key = next(iter(units))
    if len(units) > 1:  # the unit of the run's input, else the only one
        key = str(Path(matches.get("input", "")).resolve())
        if key not in units:
            raise ScoreError(f"{run}/index: several units, none is {key}")
    try:
        unit = units[key].arrays()
    except (OSError, ValueError, KeyError) as e:
        raise ScoreError(f"{run}: unreadable index ({e.__class__.__name__})") from None
    if int(unit["counts"].sum()) != len(unit["boxes"]) or len(unit["boxes"]) != len(
        unit["embeddings"]
    ):
        raise ScoreError(f"{run}/index: counts, boxes and embeddings disagree")
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
        ious = pairwise_iou(boxes, gt_box)[np.arange(len(boxes)), det_frame]
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


def true_appearances(truth_frames, pid, frames, fps, gap=DEFAULT_GAP, min_visible=0.5):
    """The person ``pid``'s appearances in the processed ``frames``: the frames where the truth
    shows them (any part visible) grouped as ``seqnet_runtime.appearances`` groups a query's
    matches, on the true boxes: split where two such frames are more than ``gap`` seconds
    apart (``fps``: the video's frame rate) or the box jumps (back at another place).
    ``[{"first", "last", "frames", "required"}]`` in time order: frame numbers, how many frames
    show the person, and whether one of them shows at least ``min_visible`` of them (else the
    appearance is *ignored*)."""
    records, visible = [], {}
    for f in frames:
        if not 0 <= f < len(truth_frames):
            raise ScoreError(f"the run processed frame {f}; the truth has {len(truth_frames)}")
        rows = [r for r in truth_frames[f] if r["id"] == pid and r["visible"] > 0]
        if rows:
            visible[int(f)] = rows[0]["visible"]
            records.append((int(f), f / fps, 1.0, rows[0]["box"]))
    found = sorted(group_appearances(records, 1.0, gap=gap), key=lambda a: a.first)
    return [
        {"first": a.first, "last": a.last, "frames": a.frames,
         "required": any(visible[r[0]] >= min_visible for r in a.track)}
        for a in found
    ]  # fmt: skip


def predicted_appearances(unit, query, threshold, fps, gap=DEFAULT_GAP):
    """A query's appearances (``seqnet_runtime.appearances``, JSON form) from the index, as
    ``seqnet-run`` finds them: the video's detections tracked, the query's tracks taken
    (``seqnet_runtime.tracks``), their records grouped in time."""
    frames, counts = unit["frames"], unit["counts"]
    times = unit.get("times")
    if times is None:
        times = np.asarray(frames, np.float64) / fps
    sims = unit["embeddings"] @ np.asarray(query, np.float32)
    log = TrackLog(1)
    ends = np.cumsum(counts)
    for f, t, lo, hi in zip(frames, times, ends - counts, ends):
        log.add(f, t, unit["boxes"][lo:hi], unit["embeddings"][lo:hi], sims[lo:hi])
    return to_json(group_appearances(log.records(0, threshold), threshold, gap=gap))


def _person_box(truth_frames, pid, frame):
    if not 0 <= frame < len(truth_frames):
        raise ScoreError(f"an appearance's best frame is {frame}; the truth has "
                         f"{len(truth_frames)}")  # fmt: skip
    boxes = [r["box"] for r in truth_frames[frame] if r["id"] == pid and r["visible"] > 0]
    return boxes[0] if boxes else None


def score_appearances(
    predicted, truth_frames, pid, frames, fps, gap=DEFAULT_GAP, iou_min=0.5, min_visible=0.5
):
    """Appearance precision and recall of one query (identity ``pid``); see the module doc.

    ``predicted``: the query's appearances, ``seqnet_runtime.appearances`` dicts (``first``,
    ``last``, ``best`` {``frame``, ``box``}; what matches.json holds) or ``Appearance``
    objects; ``frames``: the processed frames (the true appearances are made of those).
    ``true``, ``found`` and ``split`` count the required true appearances; ``ignored``, the
    others (a predicted appearance on one is correct, and finds nothing)."""
    predicted = [to_json([p])[0] if isinstance(p, Appearance) else p for p in predicted]
    true = true_appearances(truth_frames, pid, frames, fps, gap, min_visible)
    correct, finders = 0, [0] * len(true)
    for p in predicted:
        best = p["best"]
        person = _person_box(truth_frames, pid, int(best["frame"]))
        if person is None or best["box"] is None:
            continue
        if not pairwise_iou(best["box"], person)[0, 0] >= iou_min:  # NaN (no area): no
            continue
        correct += 1  # its best look is the person
        if not true:
            continue
        # the true appearance nearest its best frame (0 inside), if the two overlap in time
        f = int(best["frame"])
        n = min(range(len(true)), key=lambda k: max(true[k]["first"] - f, f - true[k]["last"], 0))
        if p["first"] <= true[n]["last"] and true[n]["first"] <= p["last"]:
            finders[n] += 1
    required = [k for t, k in zip(true, finders) if t["required"]]
    found = sum(1 for k in required if k)
    return {
        "precision": round(correct / len(predicted), 4) if predicted else None,
        "recall": round(found / len(required), 4) if required else None,
        "predicted": len(predicted),
        "correct": correct,
        "true": len(required),
        "found": found,
        "split": sum(1 for k in required if k > 1),
        "ignored": len(true) - len(required),
    }


def score(run, truth, iou_min=0.5, threshold=None, min_visible=None, gap=DEFAULT_GAP):
    """Every query's numbers and their mean, and the appearance scores: a JSON-ready dict."""
    truth_path = Path(truth)
    try:
        truth = json.loads(truth_path.read_text())
        frames_truth, names, fps = truth["frames_truth"], truth["queries"], float(truth["fps"])
    except (OSError, ValueError, KeyError) as e:
        raise ScoreError(f"{truth_path}: not a video truth file ({e.__class__.__name__})") from None
    matches, unit = load_run(run)
    own = threshold is None or threshold == matches.get("threshold")  # the run's appearances
    if threshold is None:
        threshold = matches.get("threshold")
        if threshold is None:
            raise ScoreError("the run records no threshold; give --threshold")
    if min_visible is None:
        min_visible = truth.get("min_visible", 0.5)
    per_query, skipped, spans = {}, [], {}
    for q in matches.get("queries", []):
        if q.get("name") not in names:
            skipped.append(q.get("name"))
            continue
        if own and q.get("appearances") is not None:
            predicted, source = q["appearances"], "matches.json"
        else:
            predicted = predicted_appearances(unit, q["embedding"], threshold, fps, gap)
            source = "index"
        spans[q["name"]] = {
            **score_appearances(
                predicted, frames_truth, names[q["name"]], unit["frames"], fps, gap, iou_min,
                min_visible,
            ),
            "from": source,
        }  # fmt: skip
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
        "appearances": {"gap": gap, "queries": spans, "overall": _overall(spans)},
    }


def _overall(spans):
    """The appearance counts of every query pooled, and the precision and recall of the pool."""
    keys = ("predicted", "correct", "true", "found", "split", "ignored")
    n = {k: sum(v[k] for v in spans.values()) for k in keys}
    return {
        "precision": round(n["correct"] / n["predicted"], 4) if n["predicted"] else None,
        "recall": round(n["found"] / n["true"], 4) if n["true"] else None,
        **n,
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
    spans = result.get("appearances")
    if spans:
        lines += ["", f"{'query':<10}{'precision':>10}{'recall':>8}{'correct':>9}{'found':>7}"
                  f"{'split':>7}  appearances from"]  # fmt: skip
        for name, v in [*spans["queries"].items(), ("overall", spans["overall"])]:
            lines.append(
                f"{name:<10}{fmt(v['precision']):>10}{fmt(v['recall']):>8}"
                f"{v['correct']:>5}/{v['predicted']:<3}{v['found']:>3}/{v['true']:<3}"
                f"{v['split']:>7}  {v.get('from', '')}"
            )
        lines.append(f"appearances: split at gaps over {spans['gap']:g} s")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="seqnet-run output folder")
    p.add_argument("--truth", required=True, help="truth.json of seqnet synth --format video")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for a detection to find a person")
    p.add_argument("--threshold", type=float, help="similarity threshold (default: the run's)")
    p.add_argument("--min-visible", type=float, help="visibility floor (default: the truth's)")
    p.add_argument("--gap", type=float, default=DEFAULT_GAP, help="seconds of absence that end "
                   "an appearance, for the appearance scores (default %(default)s)")  # fmt: skip
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    try:
        result = score(args.run, args.truth, args.iou, args.threshold, args.min_visible, args.gap)
    except ScoreError as e:
        sys.exit(f"video_search: error: {e}")
    print(table(result))
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
