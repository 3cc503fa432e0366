"""Context Bipartite Graph Matching (SeqNet, Li & Miao AAAI 2021, Sec. 3.4; EVALUATION.md).

The query image's other people are context: for each of the gallery images holding the k1
detections most similar to the query, match the query image's first k2 detections (query box
first) to that image's detections by maximum-weight bipartite matching; if the query box is
matched, its partner's similarity becomes the largest matched edge weight.
"""

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def cbgm_rescore(chunk, cbgm):
    """Revise ``chunk.S`` in place for every query of the chunk (see the module docstring)."""
    g, S = chunk.gallery, chunk.S
    k = min(cbgm.k1, S.shape[1])
    if k == 0:
        return
    vals, cols = torch.from_numpy(S).topk(k, dim=1)  # top-k1 before any revision
    vals, cols = vals.numpy(), cols.numpy()
    r, c = np.nonzero(np.isfinite(vals))
    det = chunk.det[r, cols[r, c]]
    img = g.image[det]
    first_col = cols[r, c] - (det - g.start[img])  # column of the image's first detection
    pairs = np.unique(np.stack([r, img, first_col], axis=1), axis=0)
    for row, image, col in pairs.tolist():
        q = chunk.q0 + row
        ctx = cbgm.feats[cbgm.ptr[q] : min(cbgm.ptr[q] + cbgm.k2, cbgm.ptr[q + 1])]
        s, n = g.start[image], g.count[image]
        weights = ctx @ g.feats[s : s + n].T
        qi, gi = linear_sum_assignment(weights, maximize=True)
        if len(qi) and qi[0] == 0:  # rows come back sorted: row 0 is the query box
            S[row, col + gi[0]] = weights[qi, gi].max()
