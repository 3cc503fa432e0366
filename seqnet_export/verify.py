"""Verification at export: the package's graphs on ONNX Runtime next to the PyTorch model.

The contract (DEPLOY.md, "What parity means"):

- fp32 package vs the PyTorch model: the same detections (count above the score threshold),
  each PyTorch box matched by position to one of the package's within 1e-3 px, scores and
  embeddings within 1e-4; query embeddings within 1e-4. Gallery, CBGM (the query image with its
  box) and query paths, on every sample image.
- fp16 package vs fp32 package: the fp32 detections scoring >= 0.5 matched at IoU >= 0.95
  (>= 99% of them), matched embeddings at cosine >= 0.999 (query embeddings too). ONNX Runtime's
  CPU provider runs an fp16 graph by casting each operator to fp32, so this checks the
  accuracy of fp16 storage between operators, not of fp16 arithmetic on a GPU.

Sample images are synthetic scenes with people, drawn by the training package's renderer
(``seqnet_train.data.synth_draw``: the exporter builds on the training package anyway) unless
the user gives a folder; the people's boxes, or boxes spread over the image, are the queries.
"""

import contextlib
import logging
import time

import numpy as np
import torch

from seqnet_runtime.boxes import pairwise_iou
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.images import list_images, read_pil, to_array
from seqnet_train.data.synth_draw import camera_style, random_look, render

log = logging.getLogger(__name__)

BOX_TOL, SCORE_TOL, EMB_TOL = 1e-3, 1e-4, 1e-4
FP16_SCORE, FP16_IOU, FP16_MATCHED, FP16_COSINE = 0.5, 0.95, 0.99, 0.999
INT8_SCORE, INT8_IOU, INT8_MATCHED = 0.5, 0.9, 0.9
INT8_COSINE_MEDIAN, INT8_COSINE_MIN = 0.98, 0.8
SAMPLE_SIZES = ((480, 640), (600, 400))  # landscape and portrait: two sizes, two graph shapes
MAX_USER_IMAGES = 4


def synthetic_images(seed=0, sizes=SAMPLE_SIZES):
    """[(H x W x 3 uint8 image, (k, 4) float32 boxes of its people)], deterministic."""
    rng = np.random.default_rng(seed)
    out = []
    for height, width in sizes:
        boxes = []
        for i in range(4):
            h = int(height * rng.uniform(0.35, 0.6))
            w = h * 0.4
            x1 = (i + rng.uniform(0.05, 0.4)) * width / 4.2
            y1 = rng.uniform(0.05, 0.95) * (height - h)
            boxes.append([x1, y1, min(x1 + w, width - 1), y1 + h])
        boxes = np.array(boxes, np.float32).round()
        people = [
            (tuple(int(v) for v in b), random_look(rng), bool(i % 2)) for i, b in enumerate(boxes)
        ]
        image = render(rng, camera_style(rng), (height, width), people)
        out.append((to_array(image), boxes))
    return out


def folder_images(folder, limit=MAX_USER_IMAGES):
    """[(image, boxes)] for the first ``limit`` images of ``folder``; the boxes are a fixed
    spread of person-shaped boxes (the query path needs some)."""
    paths = list_images(folder)[:limit]
    if not paths:
        raise SeqNetError(f"--verify-images {folder}: no images in it")
    out = []
    for path in paths:
        image = to_array(read_pil(path))
        height, width = image.shape[:2]
        boxes = np.array(
            [
                [0.1 * width, 0.2 * height, 0.3 * width, 0.8 * height],
                [0.6 * width, 0.1 * height, 0.8 * width, 0.9 * height],
            ],
            np.float32,
        )
        out.append((image, boxes))
    return out


def _tensor(image):
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)


def _max_abs(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) if np.size(a) else 0.0


def compare_detections(ref, ours):
    """Figures of ``ours`` against ``ref`` (dicts of numpy boxes, scores, embeddings): count
    difference, and for boxes matched by position the largest differences."""
    n_ref, n_ours = len(ref["boxes"]), len(ours["boxes"])
    out = {"detections": n_ref, "count_diff": n_ours - n_ref, "box": 0.0, "score": 0.0}
    out["embedding"] = 0.0
    if n_ref != n_ours or n_ref == 0:
        return out
    dist = np.abs(ref["boxes"][:, None, :] - ours["boxes"][None]).max(-1)
    match = dist.argmin(1)
    if len(set(match.tolist())) != len(match):
        out["count_diff"] = None  # two boxes matched one: not the same detections
        return out
    out["box"] = float(dist.min(1).max())
    out["score"] = _max_abs(ref["scores"], ours["scores"][match])
    out["embedding"] = _max_abs(ref["embeddings"], ours["embeddings"][match])
    return out


@contextlib.contextmanager
def _score_thresh(model, session, value):
    """Both sides at score threshold ``value`` (None: as they are) for a while."""
    if value is None:
        yield
        return
    saved = model.roi_heads.score_thresh
    model.roi_heads.score_thresh = value
    try:
        with session.override(score_thresh=value):
            yield
    finally:
        model.roi_heads.score_thresh = saved


def _worst(rows, key):
    return max((r[key] for r in rows), default=0.0)


def _to_numpy(d):
    return {k: d[k].numpy() for k in ("boxes", "scores", "embeddings")}


@torch.inference_mode()
def verify_fp32(model, session, samples):
    """fp32 package (``session``) vs the PyTorch ``model`` on ``samples`` [(image, boxes)].

    The first image runs every candidate (score threshold 0: every box that survives NMS is a
    detection, the most thorough comparison; a threshold keeps a subset of them), CBGM (its
    first box as the query) and the query path; the others the gallery path at the package's
    threshold. (Verification is most of an export's time: each mode once.)
    Returns (figures, runs): the figures for the manifest and the package's outputs (reused by
    the fp16 check)."""
    start = time.perf_counter()
    rows, queries, runs = [], [], []
    for i, (image, boxes) in enumerate(samples):
        tensor = _tensor(image)
        mode = "candidates" if i == 0 else "gallery"
        with _score_thresh(model, session, 0.0 if i == 0 else None):
            ref = _to_numpy(model.predict([tensor])[0])
            ours = session.detect([image])[0]
        rows.append(compare_detections(ref, ours) | {"mode": mode})
        run = {mode: ours}
        if i == 0:
            ctx = boxes[:1]
            ref = _to_numpy(model.predict([tensor], context_boxes=[torch.from_numpy(ctx)])[0])
            run["cbgm"] = session.detect([image], [ctx])[0]
            rows.append(compare_detections(ref, run["cbgm"]) | {"mode": "cbgm"})
            ref_q = model.embed_boxes([tensor], [torch.from_numpy(boxes)])[0].numpy()
            run["query"] = session.embed(image, boxes)
            queries.append(_max_abs(ref_q, run["query"]))
        runs.append(run)
    counts_equal = all(r["count_diff"] == 0 for r in rows)
    figures = {
        "images": len(samples),
        "sizes": sorted({f"{im.shape[1]}x{im.shape[0]}" for im, _ in samples}),
        "score_thresh": session.thresholds["score_thresh"],
        "detections": sum(r["detections"] for r in rows if r["mode"] == "gallery"),
        "candidates": sum(r["detections"] for r in rows if r["mode"] == "candidates"),
        "same_detections": counts_equal,
        "box_max_px": _worst(rows, "box"),
        "score_max": _worst(rows, "score"),
        "embedding_max": _worst(rows, "embedding"),
        "query_embedding_max": max(queries, default=0.0),
        "tolerances": {"box_px": BOX_TOL, "score": SCORE_TOL, "embedding": EMB_TOL},
        "seconds": round(time.perf_counter() - start, 1),
    }
    figures["passed"] = bool(
        counts_equal
        and figures["box_max_px"] <= BOX_TOL
        and figures["score_max"] <= SCORE_TOL
        and figures["embedding_max"] <= EMB_TOL
        and figures["query_embedding_max"] <= EMB_TOL
    )
    return figures, runs


def _cosine(a, b):
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


def _against_fp32(session, samples, runs32, score, iou_at_least):
    """``session``'s detections against the fp32 package's ``runs32`` on ``samples``: (fp32
    detections scoring >= ``score``, those matched at IoU >= ``iou_at_least``, the matched
    ones' largest box difference in px, cosines of matched and query embeddings)."""
    considered = matched = 0
    box, cosines = 0.0, []
    for (image, boxes), run in zip(samples, runs32):
        # every candidate where it ran (the gallery's detections are among them)
        modes = ("candidates" if "candidates" in run else "gallery", "cbgm")
        for mode in modes:
            if mode not in run:
                continue
            ref = run[mode]
            thresh = 0.0 if mode == "candidates" else session.thresholds["score_thresh"]
            ctx = [boxes[:1]] if mode == "cbgm" else None
            with session.override(score_thresh=thresh):
                ours = session.detect([image], ctx)[0]
            keep = ref["scores"] >= score
            considered += int(keep.sum())
            if not keep.any() or not len(ours["boxes"]):
                continue
            iou = np.nan_to_num(pairwise_iou(ref["boxes"][keep], ours["boxes"]))
            best = iou.argmax(1)
            ok = iou[np.arange(len(best)), best] >= iou_at_least
            matched += int(ok.sum())
            if ok.any():
                box = max(box, _max_abs(ref["boxes"][keep][ok], ours["boxes"][best[ok]]))
            cos = _cosine(ref["embeddings"][keep][ok], ours["embeddings"][best[ok]])
            cosines.extend(cos.tolist())
        if "query" in run:
            cosines.extend(_cosine(run["query"], session.embed(image, boxes)).tolist())
    return considered, matched, box, cosines


def verify_fp16(session16, samples, runs32):
    """fp16 package vs the fp32 package's outputs ``runs32`` (from ``verify_fp32``)."""
    start = time.perf_counter()
    considered, matched, _, cosines = _against_fp32(
        session16, samples, runs32, FP16_SCORE, FP16_IOU
    )
    fraction = matched / considered if considered else 1.0
    figures = {
        "ran_on": "ONNX Runtime CPU (fp16 storage between operators, fp32 arithmetic)",
        "detections_considered": considered,
        "matched_fraction": round(fraction, 6),
        "cosine_min": float(min(cosines, default=1.0)),
        "contract": {
            "score_at_least": FP16_SCORE,
            "iou_at_least": FP16_IOU,
            "matched_at_least": FP16_MATCHED,
            "cosine_at_least": FP16_COSINE,
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    figures["passed"] = bool(fraction >= FP16_MATCHED and figures["cosine_min"] >= FP16_COSINE)
    return figures


def verify_int8(sessions, samples, runs32):
    """int8 package vs the fp32 package's outputs ``runs32`` (from ``verify_fp32``), on each
    backend of ``sessions`` ({name: session of the int8 graphs}): a looser contract than
    fp16's (module docstring); the evaluation's parity (benchmarks/eval_parity.py) is the real
    one."""
    start = time.perf_counter()
    out = {}
    for name, session in sessions.items():
        considered, matched, box, cosines = _against_fp32(
            session, samples, runs32, INT8_SCORE, INT8_IOU
        )
        fraction = matched / considered if considered else 1.0
        cosines = np.array(cosines or [1.0])
        figures = {
            "detections_considered": considered,
            "matched_fraction": round(fraction, 6),
            "box_max_px": round(box, 4),
            "cosine_median": round(float(np.median(cosines)), 6),
            "cosine_min": round(float(cosines.min()), 6),
        }
        figures["passed"] = bool(
            fraction >= INT8_MATCHED
            and figures["cosine_median"] >= INT8_COSINE_MEDIAN
            and figures["cosine_min"] >= INT8_COSINE_MIN
        )
        out[name] = figures
    return {
        "backends": out,
        "contract": {
            "score_at_least": INT8_SCORE,
            "iou_at_least": INT8_IOU,
            "matched_at_least": INT8_MATCHED,
            "cosine_median_at_least": INT8_COSINE_MEDIAN,
            "cosine_min_at_least": INT8_COSINE_MIN,
        },
        "seconds": round(time.perf_counter() - start, 1),
        "passed": all(f["passed"] for f in out.values()),
    }


def parity_table(parity):
    """Lines of a short table of the parity figures."""
    lines = []
    fp32 = parity.get("fp32_vs_torch")
    if fp32:
        lines += [
            "parity            measured       contract    ",
            f"fp32 vs PyTorch   {fp32['images']} images: {fp32['candidates']} detections at "
            f"score > 0, {fp32['detections']} at > {fp32['score_thresh']:g}, "
            f"same counts: {fp32['same_detections']}",
            f"  box             {fp32['box_max_px']:.2e} px    <= {BOX_TOL:g} px",
            f"  score           {fp32['score_max']:.2e}       <= {SCORE_TOL:g}",
            f"  embedding       {fp32['embedding_max']:.2e}       <= {EMB_TOL:g}",
            f"  query embedding {fp32['query_embedding_max']:.2e}       <= {EMB_TOL:g}",
        ]
    for key, other in parity.items():
        if key.startswith("fp32_vs_torch_"):
            lines.append(
                f"fp32 on {key.rsplit('_', 1)[-1]:<9} box {other['box_max_px']:.2e} px, score "
                f"{other['score_max']:.2e}, embedding {other['embedding_max']:.2e}, same counts: "
                f"{other['same_detections']}"
            )
    fp16 = parity.get("fp16_vs_fp32")
    if fp16:
        lines += [
            f"fp16 vs fp32      {fp16['detections_considered']} detections >= {FP16_SCORE} "
            "(ONNX Runtime CPU)",
            f"  matched IoU>={FP16_IOU} {fp16['matched_fraction']:.2%}         "
            f">= {FP16_MATCHED:.0%}",
            f"  cosine min      {fp16['cosine_min']:.6f}       >= {FP16_COSINE}",
        ]
    int8 = parity.get("int8_vs_fp32")
    if int8:
        calibration = int8["calibration"]
        lines.append(
            f"int8 vs fp32      calibrated on {calibration['frames']} frames of "
            f"{calibration['source']}; detections >= {INT8_SCORE}"
        )
        for name, f in int8["backends"].items():
            lines += [
                f"  {name:15s} {f['detections_considered']} detections, matched at "
                f"IoU>={INT8_IOU} {f['matched_fraction']:.2%} (>= {INT8_MATCHED:.0%}), box "
                f"<= {f['box_max_px']:.2f} px",
                f"  {'':15s} cosine median {f['cosine_median']:.4f} (>= {INT8_COSINE_MEDIAN}), "
                f"min {f['cosine_min']:.4f} (>= {INT8_COSINE_MIN})",
            ]
    engine = parity.get("engine_fp32_vs_torch")  # the engine graphs, on ONNX Runtime
    if engine:
        lines.append(
            f"engine fp32 vs PyTorch: box {engine['box_max_px']:.2e} px, score "
            f"{engine['score_max']:.2e}, embedding {engine['embedding_max']:.2e}, query "
            f"{engine['query_embedding_max']:.2e}, same counts: {engine['same_detections']}"
        )
    engine16 = parity.get("engine_fp16_vs_engine_fp32")
    if engine16:
        lines.append(
            f"engine fp16 vs engine fp32: matched IoU>={FP16_IOU} "
            f"{engine16['matched_fraction']:.2%}, cosine min {engine16['cosine_min']:.6f}"
        )
    return lines
