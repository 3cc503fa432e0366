"""Eval parity: every metric of the standard protocols through PyTorch and through a model
package, on the same checkpoint and data, with the deltas and the per-detection differences,
as a table and JSON (../shared/DEPLOY.md: every metric within 0.1 points in fp32, 0.5 in fp16;
int8 and bf16 within 1.0 point of the package's fp32 on the same backend).

    python benchmarks/eval_parity.py --cfg CFG --ckpt CKPT --model PACKAGE
        [--backend onnxruntime [openvino]] [--precision fp32 [fp16 int8 bf16]] [--out DIR]
        [--json OUT] [KEY VALUE ...]

Every backend x precision asked for is evaluated (PyTorch once): one table each, then a
summary table of all. int8 and bf16 are held to the package's fp32 on the same backend (their
contract), and their detections are matched at IoU >= 0.9 (box differences in px, embedding
cosines) as well as within 1 px. A top-k metric moves in steps of one query (3.3 points on a
set of 30 queries): a result beyond the contract only so says it (``beyond_only_by_one_query``).
Every evaluation is ``seqnet eval``'s code (``evaluate`` over a runtime session); the outputs
files they write are compared detection by detection.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from seqnet_runtime import load
from seqnet_runtime.errors import SeqNetError
from seqnet_train.backend import TorchSession
from seqnet_train.config import load_cfg
from seqnet_train.evaluation import evaluate
from seqnet_train.evaluation.outputs import load_outputs, split_rows

# largest metric delta, in points (percent): fp32 and fp16 against PyTorch, int8 and bf16
# against the package's fp32 on the same backend
CONTRACT_POINTS = {"fp32": 0.1, "fp16": 0.5, "int8": 1.0, "bf16": 1.0}
AGAINST_FP32 = ("int8", "bf16")
MATCH_PX = 1.0  # detections of both sides "the same" when their boxes lie within this
MATCH_IOU = 0.9  # ... and for int8 / bf16, "the same person" when their boxes overlap so
BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "int8", "bf16")


def _per_image(ref, got, split):
    """(ref detections, ref embeddings, got detections, got embeddings) of each image."""
    return zip(
        split_rows(ref[f"{split}_dets"], ref[f"{split}_counts"]),
        split_rows(ref[f"{split}_feats"], ref[f"{split}_counts"]),
        split_rows(got[f"{split}_dets"], got[f"{split}_counts"]),
        split_rows(got[f"{split}_feats"], got[f"{split}_counts"]),
    )


def detection_differences(ref, got):
    """Per split, over every image: detections without a counterpart within MATCH_PX, and the
    largest box, score and embedding differences of the matched ones."""
    out = {}
    for split in ("gallery", "query"):
        unmatched, box, score, emb, matched = 0, 0.0, 0.0, 0.0, 0
        pairs = _per_image(ref, got, split)
        for rd, rf, gd, gf in pairs:
            if not len(rd) or not len(gd):
                unmatched += len(rd) + len(gd)
                continue
            dist = np.abs(rd[:, None, :4] - gd[None, :, :4]).max(-1)
            j = dist.argmin(1)
            near = dist[np.arange(len(rd)), j]
            ok = near <= MATCH_PX
            unmatched += int((~ok).sum()) + len(gd) - len(set(j[ok].tolist()))
            if ok.any():
                matched += int(ok.sum())
                box = max(box, float(near[ok].max()))
                score = max(score, float(np.abs(rd[ok, 4] - gd[j[ok], 4]).max()))
                emb = max(emb, float(np.abs(rf[ok] - gf[j[ok]]).max()))
        out[split] = {
            "matched": matched,
            "unmatched": unmatched,
            "max_box_diff_px": round(box, 5),
            "max_score_diff": round(score, 6),
            "max_embedding_diff": round(emb, 6),
        }
    return out


def matched_at_iou(ref, got, iou_at_least=MATCH_IOU):
    """Per split, over every image: ``ref``'s detections matched by one of ``got``'s at IoU >=
    ``iou_at_least`` (the best overlap), the largest box difference of the matched ones in px,
    and their embeddings' cosines (minimum, median)."""
    from seqnet_runtime.boxes import pairwise_iou

    out = {}
    for split in ("gallery", "query"):
        total, matched, box, cosines = 0, 0, 0.0, []
        pairs = _per_image(ref, got, split)
        for rd, rf, gd, gf in pairs:
            total += len(rd)
            if not len(rd) or not len(gd):
                continue
            iou = np.nan_to_num(pairwise_iou(rd[:, :4], gd[:, :4]))
            j = iou.argmax(1)
            ok = iou[np.arange(len(rd)), j] >= iou_at_least
            if ok.any():
                matched += int(ok.sum())
                box = max(box, float(np.abs(rd[ok, :4] - gd[j[ok], :4]).max()))
                a, b = rf[ok], gf[j[ok]]
                norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
                cosines += ((a * b).sum(1) / norms).tolist()
        out[split] = {
            "detections": total,
            "matched": matched,
            "matched_fraction": round(matched / total, 6) if total else 1.0,
            "max_box_diff_px": round(box, 3),
            "cosine_min": round(float(min(cosines, default=1.0)), 6),
            "cosine_median": round(float(np.median(cosines)) if cosines else 1.0, 6),
        }
    return out


def _evaluate(session, cfg, folder):
    """``seqnet eval``'s metrics of ``session`` (no cache) and its outputs file's contents."""
    folder.mkdir(parents=True, exist_ok=True)
    run_cfg = cfg.clone()
    run_cfg.defrost()
    run_cfg.EVAL_USE_CACHE = False
    run_cfg.freeze()
    metrics = evaluate(session, run_cfg, folder)
    return metrics, load_outputs(next(folder.glob("eval_outputs*.pt")))


def _deltas(ref, got, ref_name, got_name):
    rows = {}
    for key, value in ref.items():
        other = got.get(key)
        if isinstance(value, (int, float)) and isinstance(other, (int, float)):
            rows[key] = {ref_name: value, got_name: other,
                         "delta_points": round(100 * (other - value), 4)}  # fmt: skip
    return rows


def compare_all(cfg, ckpt, package, combos, out=None):
    """Evaluate PyTorch once and the package on every (backend, precision) of ``combos`` into
    ``out`` (``torch/``, ``<backend>_<precision>/``); a comparison dict per combination (see
    ``compare``), in order. int8 and bf16 bring their backend's fp32 along (their reference)."""
    out = Path(out or tempfile.mkdtemp(prefix="seqnet-eval-parity-"))
    device = "cuda" if cfg.DEVICE.startswith("cuda") else "cpu"
    needed = list(combos)
    for backend, precision in combos:
        if precision in AGAINST_FP32 and (backend, "fp32") not in needed:
            needed.insert(needed.index((backend, precision)), (backend, "fp32"))
    sessions = {  # all opened first: a refusal (bf16 on this CPU...) costs no evaluation
        (b, p): load(package, b, device=device, precision=p) for b, p in needed
    }
    runs = {"torch": _evaluate(TorchSession(ckpt, cfg), cfg, out / "torch")}
    for (backend, precision), session in sessions.items():
        runs[backend, precision] = _evaluate(session, cfg, out / f"{backend}_{precision}")
    results, contract = [], CONTRACT_POINTS
    for backend, precision in combos:
        metrics, outputs = runs[backend, precision]
        name = f"{backend} {precision}"
        reference = (backend, "fp32") if precision in AGAINST_FP32 else "torch"
        ref_metrics, ref_outputs = runs[reference]
        ref_name = "torch" if reference == "torch" else f"{backend} fp32"
        rows = _deltas(ref_metrics, metrics, ref_name, name)
        worst = max((abs(r["delta_points"]) for r in rows.values()), default=0.0)
        # a top-k metric moves in steps of one query: 3.3 points on a set of 30
        step = 100 / max(len(outputs["query_names"]), 1)
        beyond = sorted(k for k, r in rows.items() if abs(r["delta_points"]) > contract[precision])
        by_one_query = bool(beyond) and all(
            "/top" in k and abs(rows[k]["delta_points"]) <= step + 1e-6 for k in beyond
        )
        vs_torch = _deltas(runs["torch"][0], metrics, "torch", name)
        result = {
            "backend": backend,
            "precision": precision,
            "name": name,
            "reference": ref_name,
            "package": str(package),
            "checkpoint": str(ckpt),
            "dataset": cfg.INPUT.DATASET,
            "metrics": rows,
            "max_delta_points": worst,
            "max_delta_points_vs_torch": max(
                (abs(r["delta_points"]) for r in vs_torch.values()), default=0.0
            ),
            "contract_points": CONTRACT_POINTS[precision],
            "within_contract": worst <= CONTRACT_POINTS[precision],
            "beyond_contract": beyond,
            "query_step_points": round(step, 4),
            "beyond_only_by_one_query": by_one_query,
            "detections": detection_differences(ref_outputs, outputs),
            "matched_at_iou": matched_at_iou(ref_outputs, outputs),
        }
        results.append(result)
    return results


def compare(cfg, ckpt, package, backend="onnxruntime", precision="fp32", out=None):
    """Evaluate both ways into ``out``; the comparison dict: per metric the reference's value
    (PyTorch; the package's fp32 on ``backend`` for int8 and bf16), the package's and the
    delta in points, the largest delta against the contract, and the detections' differences
    (within MATCH_PX, and matched at IoU >= MATCH_IOU)."""
    return compare_all(cfg, ckpt, package, [(backend, precision)], out)[0]


def table(result):
    name, ref = result["name"], result["reference"]
    lines = [f"{'metric':28s} {ref:>14s} {name:>20s} {'delta (pts)':>12s}"]
    for key, row in result["metrics"].items():
        lines.append(f"{key:28s} {row[ref]:14.4f} {row[name]:20.4f} {row['delta_points']:12.4f}")
    for split, d in result["detections"].items():
        lines.append(
            f"{split}: {d['matched']} matched within {MATCH_PX:g} px, {d['unmatched']} "
            f"unmatched; largest differences: box {d['max_box_diff_px']} px, score "
            f"{d['max_score_diff']}, embedding {d['max_embedding_diff']}"
        )
    for split, d in result["matched_at_iou"].items():
        lines.append(
            f"{split}: {d['matched']}/{d['detections']} ({d['matched_fraction']:.2%}) matched at "
            f"IoU >= {MATCH_IOU}; box <= {d['max_box_diff_px']} px; embedding cosine min "
            f"{d['cosine_min']:.4f}, median {d['cosine_median']:.4f}"
        )
    verdict = "within" if result["within_contract"] else "OUTSIDE"
    lines.append(
        f"largest metric delta {result['max_delta_points']:.4f} points against {ref}: {verdict} "
        f"the {result['precision']} contract ({result['contract_points']} points)"
    )
    if result["beyond_only_by_one_query"]:
        lines.append(
            f"  beyond it only {', '.join(result['beyond_contract'])}: by one query (a query is "
            f"{result['query_step_points']:.2f} points of a top-k metric on this set)"
        )
    return "\n".join(lines)


def _verdict(result):
    if result["within_contract"]:
        return "within"
    if result["beyond_only_by_one_query"]:
        return f"OUTSIDE by one query on top-k ({len(result['beyond_contract'])} metrics)"
    return "OUTSIDE"


def summary(results):
    """One line per backend x precision: the largest deltas, the contract, the detections."""
    lines = [f"{'backend x precision':24s} {'vs':>16s} {'max delta':>10s} {'vs torch':>9s} "
             f"{'contract':>9s} {'matched@IoU0.9':>15s} {'cos min':>8s}  verdict"]  # fmt: skip
    for r in results:
        g = r["matched_at_iou"]["gallery"]
        lines.append(
            f"{r['name']:24s} {r['reference']:>16s} {r['max_delta_points']:10.4f} "
            f"{r['max_delta_points_vs_torch']:9.4f} {r['contract_points']:9.1f} "
            f"{g['matched_fraction']:15.2%} {g['cosine_min']:8.4f}  "
            f"{_verdict(r)}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="the evaluation config (dataset, sizes)")
    parser.add_argument("--ckpt", required=True, help="the checkpoint the package came from")
    parser.add_argument("--model", required=True, help="the model package")
    parser.add_argument("--backend", nargs="+", default=["onnxruntime"], choices=BACKENDS)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS)
    parser.add_argument("--out", help="folder for the evaluations (default: a temporary one)")
    parser.add_argument("--json", help="also write the comparisons here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    combos = [(b, p) for b in args.backend for p in args.precision]
    if len(combos) > 1:  # bf16 is OpenVINO's (its trunk in bf16): no other backend runs it
        skipped = [(b, p) for b, p in combos if p == "bf16" and b != "openvino"]
        combos = [c for c in combos if c not in skipped] or combos
        for b, p in skipped:
            print(f"not evaluated: {b} {p} (bf16 runs on openvino only)")
    try:
        cfg = load_cfg(args.cfg, args.opts)
        results = compare_all(cfg, args.ckpt, args.model, combos, args.out)
    except SeqNetError as e:  # a user's problem (a package without fp16 graphs...): one line
        sys.exit(f"eval_parity: error: {e}")
    for result in results:
        print(f"== {result['name']}")
        print(table(result))
    if len(results) > 1:
        print("== summary")
        print(summary(results))
    if args.json:
        data = results[0] if len(results) == 1 else results
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0 if all(r["within_contract"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
