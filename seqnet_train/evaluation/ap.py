"""Average precision and IoU for the detection and search protocols: the runtime's
(``seqnet_runtime.boxes``, numpy only), and the search protocol's matching threshold."""

import numpy as np

from seqnet_runtime.boxes import average_precision, elementwise_iou, pairwise_iou

__all__ = ["average_precision", "elementwise_iou", "match_threshold", "pairwise_iou"]


def match_threshold(gt_boxes):
    """Search TP IoU threshold per GT box: min(0.5, wh / ((w + 10)(h + 10))), w, h = x2-x1, y2-y1
    (EVALUATION.md step 5: small people need less overlap)."""
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    w, h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    return np.minimum(0.5, w * h / ((w + 10) * (h + 10)))
