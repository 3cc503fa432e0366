"""Eval parity: every metric of the standard protocols through PyTorch and through a model
package, on the same checkpoint and data, with the deltas and the per-detection differences,
as a table and JSON (../shared/DEPLOY.md: every metric within 0.1 points in fp32, 0.5 in fp16).

    python benchmarks/eval_parity.py --cfg CFG --ckpt CKPT --model PACKAGE
        [--backend onnxruntime] [--precision fp32|fp16] [--out DIR] [--json OUT] [KEY VALUE ...]

Both evaluations are ``seqnet eval``'s code (``evaluate`` over a runtime session); the
outputs files they write are compared detection by detection (matched by box).
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

CONTRACT_POINTS = {"fp32": 0.1, "fp16": 0.5}  # largest metric delta, in points (percent)
MATCH_PX = 1.0  # detections of both sides "the same" when their boxes lie within this


def detection_differences(ref, got):
    """Per split, over every image: detections without a counterpart within MATCH_PX, and the
    largest box, score and embedding differences of the matched ones."""
    out = {}
    for split in ("gallery", "query"):
        unmatched, box, score, emb, matched = 0, 0.0, 0.0, 0.0, 0
        pairs = zip(
            split_rows(ref[f"{split}_dets"], ref[f"{split}_counts"]),
            split_rows(ref[f"{split}_feats"], ref[f"{split}_counts"]),
            split_rows(got[f"{split}_dets"], got[f"{split}_counts"]),
            split_rows(got[f"{split}_feats"], got[f"{split}_counts"]),
        )
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


def compare(cfg, ckpt, package, backend="onnxruntime", precision="fp32", out=None):
    """Evaluate both ways into ``out`` (``torch/`` and ``<backend>/``); the comparison dict."""
    out = Path(out or tempfile.mkdtemp(prefix="seqnet-eval-parity-"))
    device = "cuda" if cfg.DEVICE.startswith("cuda") else "cpu"
    sessions = {
        "torch": TorchSession(ckpt, cfg),
        backend: load(package, backend, device=device, precision=precision),
    }
    metrics, outputs = {}, {}
    for name, session in sessions.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        run_cfg = cfg.clone()
        run_cfg.defrost()
        run_cfg.EVAL_USE_CACHE = False
        run_cfg.freeze()
        metrics[name] = evaluate(session, run_cfg, folder)
        outputs[name] = load_outputs(next(folder.glob("eval_outputs*.pt")))
    rows = {}
    for key, ref in metrics["torch"].items():
        got = metrics[backend].get(key)
        if isinstance(ref, (int, float)) and isinstance(got, (int, float)):
            rows[key] = {"torch": ref, backend: got, "delta_points": round(100 * (got - ref), 4)}
    worst = max((abs(r["delta_points"]) for r in rows.values()), default=0.0)
    return {
        "backend": backend,
        "precision": precision,
        "package": str(package),
        "checkpoint": str(ckpt),
        "dataset": cfg.INPUT.DATASET,
        "metrics": rows,
        "max_delta_points": worst,
        "contract_points": CONTRACT_POINTS[precision],
        "within_contract": worst <= CONTRACT_POINTS[precision],
        "detections": detection_differences(outputs["torch"], outputs[backend]),
    }


def table(result):
    backend = result["backend"]
    lines = [f"{'metric':28s} {'torch':>9s} {backend:>12s} {'delta (pts)':>12s}"]
    for key, row in result["metrics"].items():
        lines.append(
            f"{key:28s} {row['torch']:9.4f} {row[backend]:12.4f} {row['delta_points']:12.4f}"
        )
    for split, d in result["detections"].items():
        lines.append(
            f"{split}: {d['matched']} matched, {d['unmatched']} unmatched; largest differences: "
            f"box {d['max_box_diff_px']} px, score {d['max_score_diff']}, "
            f"embedding {d['max_embedding_diff']}"
        )
    verdict = "within" if result["within_contract"] else "OUTSIDE"
    lines.append(
        f"largest metric delta {result['max_delta_points']:.4f} points: {verdict} the "
        f"{result['precision']} contract ({result['contract_points']} points)"
    )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="the evaluation config (dataset, sizes)")
    parser.add_argument("--ckpt", required=True, help="the checkpoint the package came from")
    parser.add_argument("--model", required=True, help="the model package")
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--out", help="folder for both evaluations (default: a temporary one)")
    parser.add_argument("--json", help="also write the comparison here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_cfg(args.cfg, args.opts)
        result = compare(cfg, args.ckpt, args.model, args.backend, args.precision, args.out)
    except SeqNetError as e:  # a user's problem (a package without fp16 graphs...): one line
        sys.exit(f"eval_parity: error: {e}")
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["within_contract"] else 1


if __name__ == "__main__":
    sys.exit(main())
