"""Person detection recall and AP on the gallery split (EVALUATION.md, "Detection")."""

import numpy as np

from seqnet_train.evaluation.ap import average_precision, pairwise_iou
from seqnet_train.identities import RAW_UNLABELED


def _true_positives(gt, dets, iou_thresh):
    """TP flag per detection: the established one-to-one rule on the GT x det IoU matrix M.

    Each det keeps only its best GT, each GT only its best det (both argmax of M, first on ties,
    M stored as float32 like the established code); a det is a TP if anything survives.
    """
    if len(gt) == 0:  # the established code crashes here; every detection is a false positive
        return np.zeros(len(dets), dtype=bool)
    m = pairwise_iou(gt, dets).astype(np.float32)
    t = m >= iou_thresh
    rows, cols = np.arange(len(gt)), np.arange(len(dets))
    best_gt = np.zeros_like(t)
    best_gt[np.argmax(m, axis=0), cols] = True
    best_det = np.zeros_like(t)
    best_det[rows, np.argmax(m, axis=1)] = True
    return (t & best_gt & best_det).any(axis=0)


def eval_detection(gt_boxes, gt_pids, dets, det_thresh=0.01, iou_thresh=0.5, labeled_only=False):
    """Detection recall and AP over gallery images.

    Args:
        gt_boxes, gt_pids: per image, GT boxes (n x 4 x1y1x2y2) and raw pids (n,).
        dets: per image, detections (k x 5: x1, y1, x2, y2, score), possibly empty.
        labeled_only: ignore unlabelled GT people and skip images without a labelled one.
    Returns:
        ``{"recall", "ap"}`` as fractions; AP = scikit-learn AP over all kept detections x recall.
    """
    y_true, y_score = [], []
    n_gt = n_tp = 0
    for boxes, pids, det in zip(gt_boxes, gt_pids, dets):
        boxes = np.asarray(boxes).reshape(-1, 4)
        if labeled_only:
            boxes = boxes[np.asarray(pids).ravel() != RAW_UNLABELED]
            if len(boxes) == 0:
                continue
        det = np.asarray(det).reshape(-1, 5)
        det = det[det[:, 4] >= det_thresh]
        n_gt += len(boxes)
        if len(det) == 0:
            continue
        tp = _true_positives(boxes, det[:, :4], iou_thresh)
        n_tp += int(tp.sum())
        y_true.append(tp)
        y_score.append(det[:, 4])
    recall = n_tp / n_gt if n_gt else 0.0
    if not y_true:
        return {"recall": recall, "ap": 0.0}
    ap = average_precision(np.concatenate(y_true), np.concatenate(y_score)) * recall
    return {"recall": recall, "ap": ap}
