"""Every protocol of a dataset scored from one outputs dict: flat metrics and per-query details."""

import logging

import numpy as np

from seqnet_train.data import load_queries, load_split
from seqnet_train.data.cuhk_sysu import protocol_arrays
from seqnet_train.errors import SeqNetError
from seqnet_train.evaluation.detection import eval_detection
from seqnet_train.evaluation.outputs import split_rows
from seqnet_train.evaluation.protocols import cuhk_protocol, identity_protocol, list_protocol
from seqnet_train.evaluation.search import Cbgm, keep_detections, search, summarize

log = logging.getLogger(__name__)

DETECTION_THRESH = 0.01  # detection AP/recall threshold of the training loop (EVALUATION.md)
CBGM_DEFAULTS = {"CUHK-SYSU": (10, 3), "PRW": (30, 4), "JSON": (10, 3)}  # (k1, k2), the paper's
HEADLINE = {"CUHK-SYSU": "G100", "PRW": "all", "JSON": "all"}  # protocol of the per-query record


def protocols(cfg, gallery, queries, gallery_names):
    """The dataset's search protocols, in report order."""
    dataset, root = cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT
    if dataset == "CUHK-SYSU":
        return [
            cuhk_protocol(protocol_arrays(root, 50 if g == -1 else g), gallery_names, g)
            for g in cfg.EVAL_GALLERY_SIZES
        ]
    qs = [q["query"] for q in queries]
    if all(q["gallery"] is not None for q in queries):
        return [list_protocol(queries, gallery_names)]
    out = [identity_protocol(gallery, qs)]
    if any(r["cam_id"] >= 0 for r in gallery):
        out.append(identity_protocol(gallery, qs, cross_cam=True))
    return out


def _check_names(outputs, gallery, queries):
    names = [r["img_name"] for r in gallery]
    if outputs["gallery_names"] != names:
        raise SeqNetError(
            f"the outputs' {len(outputs['gallery_names'])} gallery images are not the "
            f"{len(names)} of {gallery[0]['img_name']}...'s split, in order: wrong dataset?"
        )
    if outputs["query_names"] != [q["query"]["img_name"] for q in queries]:
        raise SeqNetError("the outputs' queries are not this dataset's queries, in order")


def score(cfg, outputs):
    """Detection and search metrics (flat keys, fractions) and per-query records.

    Returns ``(metrics, details)``; details maps ``"search/<protocol>"`` (and ``search_cbgm/``)
    to ``{"result": search() arrays, "protocol": Protocol}``, plus ``"queries"``/``"gallery"``.
    """
    dataset, root = cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT
    gallery = load_split(dataset, root, "gallery")
    queries = load_queries(dataset, root)
    _check_names(outputs, gallery, queries)
    metrics = {}
    dets = split_rows(outputs["gallery_dets"], outputs["gallery_counts"])
    boxes, pids = [r["boxes"] for r in gallery], [r["pids"] for r in gallery]
    for prefix, labeled in (("det", False), ("det_labeled", True)):
        r = eval_detection(boxes, pids, dets, DETECTION_THRESH, 0.5, labeled_only=labeled)
        metrics[f"{prefix}/recall"], metrics[f"{prefix}/ap"] = r["recall"], r["ap"]

    kept = keep_detections(
        outputs["gallery_dets"],
        outputs["gallery_feats"],
        outputs["gallery_counts"],
        cfg.EVAL_DET_THRESH,
        cams=[r["cam_id"] for r in gallery],
    )
    k1, k2 = CBGM_DEFAULTS.get(dataset, (10, 3))
    cbgm = Cbgm(
        k1=cfg.EVAL_CBGM_K1 or k1,
        k2=cfg.EVAL_CBGM_K2 or k2,
        ptr=np.r_[0, np.cumsum(outputs["query_counts"])],
        feats=outputs["query_feats"],
    )
    details = {"gallery": gallery, "queries": queries}
    headline = HEADLINE.get(dataset)
    for protocol in protocols(cfg, gallery, queries, outputs["gallery_names"]):
        modes = [("search", None)] + ([("search_cbgm", cbgm)] if cfg.EVAL_USE_CBGM else [])
        for prefix, rescore in modes:
            top = 10 if protocol.name == headline else 0
            result = search(kept, outputs["query_box_feats"], protocol, rescore, top=top)
            summary = summarize(result)
            if summary["no_gt"]:
                log.warning(
                    "%s/%s: %d queries have no GT occurrence in their gallery; left out of the "
                    "means (first: %s)",
                    prefix, protocol.name, len(summary["no_gt"]),
                    queries[summary["no_gt"][0]]["query"]["img_name"],
                )  # fmt: skip
            for k in ("mAP", "top1", "top5", "top10"):
                metrics[f"{prefix}/{protocol.name}/{k}"] = summary[k]
            details[f"{prefix}/{protocol.name}"] = {"result": result, "protocol": protocol}
    return metrics, details
