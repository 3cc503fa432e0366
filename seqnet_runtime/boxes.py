"""Box overlap and average precision, in numpy: what the evaluation protocols, the export's
parity checks and the video benchmarks share (no torch, so the runtime can use it)."""

import numpy as np


def box_area(boxes):
    b = np.asarray(boxes, dtype=np.float64)
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def pairwise_iou(a, b):
    """IoU of every box of ``a`` (n x 4) with every box of ``b`` (m x 4), x1y1x2y2 continuous
    coordinates (no +1), float64 (n x m). Zero-area pairs give NaN, as the established code."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(1, -1, 4)
    return _iou(a, b)


def elementwise_iou(a, b):
    """IoU of ``a[i]`` with ``b[i]`` (both n x 4 x1y1x2y2), float64 (n,)."""
    return _iou(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _iou(a, b):
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (box_area(a) + box_area(b) - inter)


def average_precision(y_true, y_score):
    """scikit-learn's ``average_precision_score`` for binary labels, without its overhead.

    Scores are sorted descending; tied scores form one threshold, so precision is taken at the
    end of each tie group: AP = sum over groups of (recall step) x (precision). 0 without
    positives (scikit-learn warns and returns 0 or NaN there depending on the version).
    """
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
