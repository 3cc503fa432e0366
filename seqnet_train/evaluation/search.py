"""Person search scoring, vectorised: one padded similarity matrix per chunk of queries.

EVALUATION.md steps 1-6 without per-query Python loops. For a chunk of queries the gallery
detections of each query are laid out as one row of a matrix ``S`` (similarities, ``-inf``
padding), so labelling, CBGM and AP are array operations:

- AP_q = sum over the query's TPs t of #TP(score >= s_t) / #det(score >= s_t), divided by the
  GT occurrences. This is scikit-learn's AP x (TP / GT): tied scores share one threshold.
- top-k_q = the best TP has at most k detections scoring >= its own (ties count against it).
"""

from dataclasses import dataclass

import numpy as np
import torch

from seqnet_train.evaluation.ap import elementwise_iou, match_threshold
from seqnet_train.evaluation.cbgm import cbgm_rescore

TOPK = (1, 5, 10)
CHUNK_ELEMENTS = 1 << 23  # similarities per chunk (32 MiB float32): bounds memory at any size
DENSE_FRACTION = 0.05  # explicit galleries denser than this use one matrix product per chunk


@dataclass
class Gallery:
    """Kept detections (score >= threshold) of every gallery image, rows grouped by image.

    boxes: N x 4 x1y1x2y2; scores: N; feats: N x D float32; start/count: first row and number of
    rows of each image (I,); image: image index of each row (N,); cams: camera per image or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    feats: np.ndarray
    start: np.ndarray
    count: np.ndarray
    image: np.ndarray
    cams: np.ndarray | None = None


def keep_detections(dets, feats, counts, det_thresh, cams=None):
    """Gallery from concatenated detections (N x 5: box, score), features and per-image counts."""
    dets = np.asarray(dets, dtype=np.float32).reshape(-1, 5)
    image = np.repeat(np.arange(len(counts)), np.asarray(counts, dtype=np.int64))
    keep = dets[:, 4] >= det_thresh
    image = image[keep]
    count = np.bincount(image, minlength=len(counts)).astype(np.int64)
    return Gallery(
        boxes=dets[keep, :4],
        scores=dets[keep, 4],
        feats=np.ascontiguousarray(np.asarray(feats, dtype=np.float32)[keep]),
        start=np.cumsum(count) - count,
        count=count,
        image=image,
        cams=None if cams is None else np.asarray(cams),
    )


@dataclass
class Protocol:
    """Which gallery images each query searches, and where its person is.

    n_gt: GT occurrences per query (Q,), counted as the protocol defines them.
    gt_query, gt_image, gt_box: one GT box (x1y1x2y2) per (query, image) holding the person.
    Explicit galleries (CUHK-SYSU TestG<G>): ``gallery_ptr`` (Q + 1) into ``gallery_image``,
    each image once per query. Implicit ones (PRW, CUHK-SYSU pool): every image except
    ``exclude_image[q]`` (-1: none), and, when ``query_cams`` is set, except the query's camera.
    """

    name: str
    n_gt: np.ndarray
    gt_query: np.ndarray
    gt_image: np.ndarray
    gt_box: np.ndarray
    gallery_ptr: np.ndarray | None = None
    gallery_image: np.ndarray | None = None
    exclude_image: np.ndarray | None = None
    query_cams: np.ndarray | None = None

    @property
    def num_queries(self):
        return len(self.n_gt)


@dataclass
class Cbgm:
    """CBGM settings and the query images' context: rows ``ptr[q]:ptr[q+1]`` of ``feats`` are
    query q's own-image detections, its query box first (SPEC 2.10)."""

    k1: int
    k2: int
    ptr: np.ndarray
    feats: np.ndarray


class _Chunk:
    """Queries ``q0..q1`` of a protocol as a padded similarity matrix.

    S: c x L similarities (-inf = not in the gallery); det: c x L gallery row of each column;
    ``column(q, img)``: column of the first detection of image ``img`` in query q's row.
    """

    def __init__(self, gallery, query_feats, protocol, q0, q1):
        self.gallery, self.q0, self.q1 = gallery, q0, q1
        qf = np.asarray(query_feats[q0:q1], dtype=np.float32)
        if protocol.gallery_ptr is None:
            self._implicit(qf, protocol)
        else:
            self._explicit(qf, protocol)

    def _implicit(self, qf, p):
        g = self.gallery
        self.S = (torch.from_numpy(qf) @ torch.from_numpy(g.feats).T).numpy()
        self.det = np.broadcast_to(np.arange(len(g.image)), self.S.shape)
        excl = p.exclude_image[self.q0 : self.q1] if p.exclude_image is not None else None
        if excl is not None:
            for r in np.flatnonzero(excl >= 0):  # the query's own image
                a = g.start[excl[r]]
                self.S[r, a : a + g.count[excl[r]]] = -np.inf
        if p.query_cams is not None:
            same = g.cams[g.image][None, :] == p.query_cams[self.q0 : self.q1, None]
            self.S[same] = -np.inf
        self._keys = None

    def _explicit(self, qf, p):
        g = self.gallery
        lo, hi = p.gallery_ptr[self.q0], p.gallery_ptr[self.q1]
        eq = np.repeat(np.arange(self.q1 - self.q0), np.diff(p.gallery_ptr[self.q0 : self.q1 + 1]))
        eimg = p.gallery_image[lo:hi]
        n = g.count[eimg]
        eq, eimg, n = eq[n > 0], eimg[n > 0], n[n > 0]
        ends = np.cumsum(n)
        q_first = np.searchsorted(eq, np.arange(self.q1 - self.q0))  # first entry of each query
        q_base = np.r_[0, ends][q_first]
        ecol = ends - n - q_base[eq]
        width = int((ecol + n).max()) if len(n) else 1
        self.S = np.full((self.q1 - self.q0, width), -np.inf, dtype=np.float32)
        self.det = np.full(self.S.shape, -1, dtype=np.int64)
        within = np.arange(int(ends[-1]) if len(n) else 0) - np.repeat(ends - n, n)
        rq, rc = np.repeat(eq, n), np.repeat(ecol, n) + within
        self.det[rq, rc] = np.repeat(g.start[eimg], n) + within
        if len(rq) > DENSE_FRACTION * len(qf) * len(g.image):  # large galleries: one product
            dense = (torch.from_numpy(qf) @ torch.from_numpy(g.feats).T).numpy()
            self.S[rq, rc] = dense[rq, self.det[rq, rc]]
        else:
            self._by_image(qf, eq, eimg, ecol)
        keys = eq * len(g.count) + eimg
        order = np.argsort(keys)
        self._keys, self._cols = keys[order], ecol[order]

    def _by_image(self, qf, eq, eimg, ecol):
        """Small galleries: each image's detections meet only the queries that search it."""
        g = self.gallery
        if not len(eimg):  # no gallery image of these queries kept a detection
            return
        order = np.argsort(eimg, kind="stable")
        bounds = np.flatnonzero(np.r_[True, eimg[order][1:] != eimg[order][:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:]):
            idx = order[a:b]
            img = eimg[idx[0]]
            s, k = g.start[img], g.count[img]
            block = qf[eq[idx]] @ g.feats[s : s + k].T
            self.S[eq[idx, None], ecol[idx, None] + np.arange(k)] = block

    def column(self, q, img):
        """Columns of (local query, image) pairs; -1 where the image is not in that gallery."""
        if self._keys is None:
            first = self.gallery.start[img]
            return np.where(self.S[q, first] > -np.inf, first, -1)
        key = q * len(self.gallery.count) + img
        pos = np.clip(np.searchsorted(self._keys, key), 0, max(len(self._keys) - 1, 0))
        found = (self._keys[pos] == key) if len(self._keys) else np.zeros(len(key), bool)
        return np.where(found, self._cols[pos] if len(self._keys) else -1, -1)


def _chunks(protocol, gallery):
    """Consecutive query ranges whose padded matrices hold about CHUNK_ELEMENTS each."""
    nq = protocol.num_queries
    if protocol.gallery_ptr is None:
        step = max(1, CHUNK_ELEMENTS // max(len(gallery.image), 1))
        return [(a, min(a + step, nq)) for a in range(0, nq, step)]
    per_entry = gallery.count[protocol.gallery_image]
    rows = np.add.reduceat(np.r_[per_entry, 0], protocol.gallery_ptr[:-1]) * (
        np.diff(protocol.gallery_ptr) > 0
    )
    out, a, widest = [], 0, 0
    for q in range(nq):
        widest = max(widest, int(rows[q]))
        if q > a and (q - a + 1) * widest > CHUNK_ELEMENTS:
            out.append((a, q))
            a, widest = q, int(rows[q])
    if nq:
        out.append((a, nq))
    return out


def _label(chunk, protocol, gt_sel):
    """Step 5: per GT (query, image), the most similar detection with IoU >= the threshold.

    Returns local query, column and score of each true positive.
    """
    g = chunk.gallery
    detected = g.count[protocol.gt_image[gt_sel]] > 0  # undetected images hold no TP
    q = protocol.gt_query[gt_sel][detected] - chunk.q0
    img = protocol.gt_image[gt_sel][detected]
    box = protocol.gt_box[gt_sel][detected]
    col = chunk.column(q, img)
    q, img, col, box = q[col >= 0], img[col >= 0], col[col >= 0], box[col >= 0]
    n = g.count[img]
    pair = np.repeat(np.arange(len(q)), n)
    within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    rows = g.start[img][pair] + within
    sims = chunk.S[q[pair], col[pair] + within]
    hit = elementwise_iou(g.boxes[rows], box[pair]) >= match_threshold(box)[pair]
    if not hit.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    pair, within, sims = pair[hit], within[hit], sims[hit]
    order = np.lexsort((within, -sims, pair))  # best similarity first, then detection order
    first = order[np.r_[True, pair[order][1:] != pair[order][:-1]]]
    p = pair[first]
    return q[p], col[p] + within[first], sims[first]


def _rank_counts(S, tp_q, tp_score, num_rows):
    """For each query's TPs (sorted ascending, +inf padded to m): #TP >= s and #det >= s."""
    counts = np.bincount(tp_q, minlength=num_rows)
    m = int(counts.max()) if len(counts) else 0
    B = np.full((num_rows, max(m, 1)), np.inf, dtype=np.float32)
    order = np.lexsort((tp_score, tp_q))
    slot = np.arange(len(tp_q)) - np.repeat(np.cumsum(counts) - counts, counts)
    B[tp_q[order], slot] = tp_score[order]
    valid = np.isfinite(B)
    idx = torch.searchsorted(torch.from_numpy(B), torch.from_numpy(S), right=True)
    hist = torch.zeros((num_rows, B.shape[1] + 1), dtype=torch.int64)
    hist.scatter_add_(1, idx, torch.ones_like(idx))
    n_ge = hist.flip(1).cumsum(1).flip(1)[:, 1:].numpy()  # n_ge[:, k] = #det >= B[:, k]
    tp_ge = ((B[:, None, :] >= B[:, :, None]) & valid[:, None, :]).sum(-1)
    return B, valid, n_ge, tp_ge, counts


def search(gallery, query_feats, protocol, cbgm=None, top=0):
    """Score one search protocol.

    Args:
        gallery: ``keep_detections`` output; query_feats: Q x D query-box embeddings.
        protocol: a ``Protocol``; cbgm: a ``Cbgm`` to rescore with, or None.
        top: also return the ``top`` best gallery detections of each query.
    Returns:
        dict of per-query arrays: ``ap`` (Q,), ``hits`` (Q x 3 for top-1/5/10), ``n_gt``,
        ``n_tp``; with ``top``: ``top`` list of (image, box, score, is_tp) lists.
    """
    nq = protocol.num_queries
    ap, hits = np.zeros(nq), np.zeros((nq, len(TOPK)), dtype=bool)
    n_tp = np.zeros(nq, dtype=np.int64)
    ranked = [None] * nq if top else None
    gt_order = np.argsort(protocol.gt_query, kind="stable")
    gt_bounds = np.searchsorted(protocol.gt_query[gt_order], np.arange(nq + 1))
    for q0, q1 in _chunks(protocol, gallery):
        chunk = _Chunk(gallery, query_feats, protocol, q0, q1)
        c = q1 - q0
        if cbgm is not None:
            cbgm_rescore(chunk, cbgm)
        tq, tcol, tscore = _label(chunk, protocol, gt_order[gt_bounds[q0] : gt_bounds[q1]])
        B, valid, n_ge, tp_ge, counts = _rank_counts(chunk.S, tq, tscore, c)
        n_gt = np.maximum(protocol.n_gt[q0:q1], 1)
        ap[q0:q1] = np.where(valid, tp_ge / np.maximum(n_ge, 1), 0).sum(1) / n_gt
        best = n_ge[np.arange(c), np.maximum(counts - 1, 0)]
        hits[q0:q1] = (counts > 0)[:, None] & (best[:, None] <= np.array(TOPK))
        n_tp[q0:q1] = counts
        if top:
            _record_top(chunk, top, tq, tcol, ranked)
    return {"ap": ap, "hits": hits, "n_gt": np.asarray(protocol.n_gt), "n_tp": n_tp, "top": ranked}


def _record_top(chunk, top, tq, tcol, ranked):
    g = chunk.gallery
    k = min(top, chunk.S.shape[1])
    vals, cols = torch.from_numpy(chunk.S).topk(k, dim=1)
    vals, cols = vals.numpy(), cols.numpy()
    tp = set(zip(tq.tolist(), tcol.tolist()))
    for r in range(chunk.q1 - chunk.q0):
        keep = np.isfinite(vals[r])
        rows = chunk.det[r, cols[r][keep]]
        ranked[chunk.q0 + r] = [
            (int(g.image[d]), g.boxes[d].tolist(), float(s), (r, int(col)) in tp)
            for d, s, col in zip(rows, vals[r][keep], cols[r][keep])
        ]


def summarize(result):
    """Means over queries with at least one GT occurrence: mAP, top1, top5, top10 (fractions).

    Queries without any occurrence are listed under ``no_gt`` (the established code divides by
    zero there) and left out of the means.
    """
    ok = result["n_gt"] > 0
    out = {"mAP": float(result["ap"][ok].mean()) if ok.any() else 0.0}
    for i, k in enumerate(TOPK):
        out[f"top{k}"] = float(result["hits"][ok, i].mean()) if ok.any() else 0.0
    out["no_gt"] = np.flatnonzero(~ok).tolist()
    return out
