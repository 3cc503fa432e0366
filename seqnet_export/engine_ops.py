"""Building blocks of the ``engine`` graph flavour: RoIAlign, NMS and top-k written with the
standard ONNX operators that TensorRT 10/11 and TensorRT-RTX build natively (DEPLOY.md,
"TensorRT"), for ``torch.onnx.export(..., dynamo=True)``.

Every function here computes in float32 and int64 only (no float64 anywhere), uses TopK
nodes of at most ``TOPK_LIMIT`` elements, no ``RoiAlign`` / ``NonMaxSuppression`` node, and
returns fixed-shape outputs:

- ``roi_align``: torchvision's ``roi_align`` as two MatMuls per chunk of RoIs, ``Wy @ map @
  Wx^T`` with torchvision's bilinear weights summed per bin, row and column
  (``method="separable"``, what the engine graphs use: exact to the order of the float sums,
  few nodes, small intermediates), or as GridSample (bilinear, zero padding, the sample
  coordinates computed as torchvision's kernel does, clamped into the map, samples that
  torchvision drops moved outside it) and a sum over each bin's samples (~2e-5 from
  torchvision on SeqNet-sized maps: GridSample's normalised coordinate), or, exactly, as one
  Gather of the samples' neighbours and one MatMul with torchvision's weights
  (``method="gather"``, 4x the intermediate); RoIs are processed in chunks so that the
  intermediate stays under ``ROI_ALIGN_CHUNK_BYTES`` per image.
- ``nms`` / ``batched_nms``: torchvision's greedy NMS (stable descending score order, a box
  suppressed when its float32 IoU with a kept box is > the threshold) as a fixed point,
  iterated in an ONNX ``Loop`` (``torch._higher_order_ops.while_loop``) until the keep mask
  stops changing; the output is a (max_out,) index table padded with zeros and a count.
- ``topk``: ``torch.topk`` (sorted, largest) with ``k`` above ``TOPK_LIMIT`` split into rounds
  of at most ``TOPK_LIMIT``, merged exactly.

Ties: torchvision's NMS sorts scores with a stable sort (lower index first among equal
scores); ``nms`` reproduces that order with pairwise comparisons, not with TopK, so that it
does not depend on a backend's TopK tie rule. ``topk`` follows ONNX TopK's rule (lower index
first among equal values, what ONNX Runtime does); ``torch.topk`` on the CPU leaves the order
of ties unspecified, so only its values are comparable there.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch._higher_order_ops import while_loop

TOPK_LIMIT = 3840  # TensorRT's largest k for one TopK layer (3841 fails)
ROI_ALIGN_CHUNK_BYTES = 128 * 2**20  # GridSample output (or Gather's) per image and chunk
NMS_BLOCK_ROWS = 1024  # rows of the N x N pairwise matrices computed at a time
_OUTSIDE = -3.0  # normalised grid x of a dropped sample: both neighbours are zero padding


# ---------------------------------------------------------------------------------------
# RoIAlign


def _pair(size):
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _axis_samples(start, end, bins, grid, max_grid, length, aligned):
    """One axis of torchvision's RoIAlign sample grid (``roi_align_kernel.cpp``, float32).

    ``start``/``end``: (B, K) scaled box edges; ``grid``: samples per bin (fixed
    ``sampling_ratio``) or None (adaptive: ceil(RoI size / bins) per RoI, at most
    ``max_grid``). Returns the sample positions clamped into [0, length - 1] as torchvision
    clamps them (B, K, bins * max_grid), whether each sample counts (torchvision skips those
    beyond [-1, length]; same shape) and the samples per bin (B, K)."""
    size = end - start
    if not aligned:
        size = torch.clamp(size, min=1.0)  # "force malformed RoIs to be 1x1"
    bin_size = size / float(bins)
    if grid is None:
        per_bin = torch.ceil(size / float(bins))
    else:
        per_bin = torch.full_like(size, float(grid))
    b = torch.arange(bins, dtype=torch.int32, device=start.device).to(torch.float32)
    i = torch.arange(max_grid, dtype=torch.int32, device=start.device).to(torch.float32)
    bin3, per_bin3 = bin_size[..., None, None], per_bin[..., None, None]
    # torchvision: start + p * bin_size + (i + .5f) * bin_size / grid, in this order
    # (a grid of <= 0 samples, an empty RoI with aligned=True, takes none: divide by 1)
    divisor = per_bin3 if grid is not None else torch.clamp(per_bin3, min=1.0)
    pos = (start[..., None, None] + b[:, None] * bin3) + ((i + 0.5) * bin3) / divisor
    length_f = torch.full((), length, dtype=torch.float32, device=start.device)
    counts = (pos >= -1.0) & (pos <= length_f)
    if grid is None:
        counts = counts & (i < per_bin3)
    # y <= 0: y = 0; y_low >= length - 1: y = length - 1
    pos = torch.minimum(torch.clamp(pos, min=0.0), length_f - 1.0)
    shape = pos.shape[:-2] + (bins * max_grid,)
    return pos.reshape(shape), counts.reshape(shape), per_bin


def _normalise(pos, length):
    """GridSample's coordinate (align_corners=False) of pixel positions: GridSample maps ``g``
    back to ``((g + 1) * length - 1) / 2``."""
    length_f = torch.full((), length, dtype=torch.float32, device=pos.device)
    return (2.0 * pos + 1.0) / length_f - 1.0


def _grid_sample_chunk(features, ys, xs, counted, out_h, out_w, max_grid):
    """Sums of each bin's samples by GridSample: (B, C, k, h, w)."""
    batch, channels = features.shape[:2]
    k, rows, cols = counted.shape[1:]
    gx = torch.where(counted, xs[..., None, :], xs.new_full((), _OUTSIDE))
    gy = ys[..., :, None].expand(counted.shape)
    grid = torch.stack((gx, gy), dim=-1).reshape(batch, k * rows, cols, 2)
    samples = F.grid_sample(
        features, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (B, C, k * rows, cols); a sample with x at _OUTSIDE reads only padding: 0
    samples = samples.reshape(batch, channels, k, out_h, max_grid, out_w, max_grid)
    return samples.sum(dim=(4, 6))


def _axis_neighbours(pos, length):
    """torchvision's bilinear neighbours and weights along one axis of clamped positions:
    (low, high) int64 and (l, h) = (pos - low, 1 - l)."""
    low_f = torch.floor(pos)
    low = low_f.to(torch.int64)
    high = torch.clamp(low + 1, max=length - 1)
    frac = pos - low_f
    return low, high, frac, 1.0 - frac


def _gather_chunk(table, batch_index, y, x, counted, width, out_h, out_w, max_grid):
    """Sums of each bin's samples by one Gather of every sample's four neighbours from
    ``table`` (B * H * W, C) and one MatMul with torchvision's weights: (B, k, h, w, C)."""
    y_low, y_high, ly, hy = y
    x_low, x_high, lx, hx = x
    batch, k, rows, cols = counted.shape
    # neighbours in torchvision's order: (low, low), (low, high), (high, low), (high, high)
    row = torch.stack((y_low, y_low, y_high, y_high), dim=-1)[..., :, None, :]
    col = torch.stack((x_low, x_high, x_low, x_high), dim=-1)[..., None, :, :]
    wy = torch.stack((hy, hy, ly, ly), dim=-1)[..., :, None, :]
    wx = torch.stack((hx, lx, hx, lx), dim=-1)[..., None, :, :]
    weight = torch.where(counted[..., None], wy * wx, wy.new_zeros(()))  # (B, k, rows, cols, 4)
    index = batch_index[:, None, None, None, None] + row * width + col
    # (B, k, h, G, w, G, 4) -> (B, k, h, w, G, G, 4): one bin's 4 G^2 terms together
    shape = (batch, k, out_h, max_grid, out_w, max_grid, 4)
    index = index.reshape(shape).permute(0, 1, 2, 4, 3, 5, 6).reshape(-1)
    weight = weight.reshape(shape).permute(0, 1, 2, 4, 3, 5, 6)
    terms = 4 * max_grid * max_grid
    values = table.index_select(0, index).reshape(-1, terms, table.shape[1])
    sums = torch.matmul(weight.reshape(-1, 1, terms), values)  # (B k h w, 1, C)
    return sums.reshape(batch, k, out_h, out_w, table.shape[1])


def _axis_matrix(pos, counts, length, bins, max_grid):
    """(B, K, bins, length) float32: per bin, the summed bilinear weight of each map row (or
    column) over the bin's counted samples, torchvision's neighbours and weights
    (``_axis_neighbours``). A sample's weight ``wy * wx`` factorises, and so does whether it
    counts (y in range and x in range), so a bin's sum is ``Wy @ map @ Wx^T``."""
    low, high, frac, rest = _axis_neighbours(pos, length)
    where = torch.arange(length, device=pos.device)
    zero = pos.new_zeros(())
    weight = torch.where(low[..., None] == where, rest[..., None], zero) + torch.where(
        high[..., None] == where, frac[..., None], zero
    )  # (B, K, bins * G, length)
    weight = torch.where(counts[..., None], weight, zero)
    shape = weight.shape[:2] + (bins, max_grid, weight.shape[-1])
    return weight.reshape(shape).sum(dim=3)


def _separable_chunk(features, rows, cols):
    """Sums of each bin's samples as two MatMuls, ``rows @ map @ cols^T`` per RoI, the map's
    columns contracted first: (B, k, C, h, w) from ``rows`` (B, k, h, H), ``cols`` (B, k, w,
    W) and ``features`` (B, C, H, W)."""
    by_column = torch.matmul(features[:, None], cols.transpose(-1, -2)[:, :, None])
    return torch.matmul(rows[:, :, None], by_column)  # (B, k, 1, h, H) @ (B, k, C, H, w)


def roi_align(
    features,
    boxes,
    output_size,
    spatial_scale,
    sampling_ratio,
    aligned=False,
    max_grid=None,
    method="grid_sample",
    rois_per_chunk=None,
    chunk_bytes=ROI_ALIGN_CHUNK_BYTES,
    max_map=None,
):
    """``torchvision.ops.roi_align`` of per-image boxes from standard operators.

    Args:
        features: (B, C, H, W) maps, computed in float32; C static.
        boxes: (B, K, 4) x1y1x2y2 boxes in input coordinates (times ``spatial_scale`` on the
            map), box k of image b on map b; K static, or dynamic (then in one chunk).
        output_size: (h, w) or one int.
        spatial_scale: float, the map's scale (1/16 for SeqNet's res4).
        sampling_ratio: samples per bin along each axis (SeqNet: 2); <= 0: torchvision's
            adaptive rule, ceil(RoI size / bins) per RoI and axis, which needs ``max_grid``.
        aligned: torchvision's ``aligned`` (SeqNet: False, ONNX ``output_half_pixel``).
        max_grid: adaptive only: the most samples per bin and axis the graph provides for; a
            RoI that needs more gets ``max_grid`` (torchvision would take more).
        method: ``"grid_sample"``: one GridSample per chunk (bilinear, zero padding; samples
            torchvision skips are moved outside the map), then a sum over each bin's samples.
            Its sample coordinate passes through GridSample's normalised grid, within half an
            ulp of a map-sized float (3.8e-6 px on a 94-wide map), so values can differ from
            torchvision's by that times the map's local slope (1.7e-5 on unit-normal maps of
            SeqNet's size, 57 x 94; 5e-6 on 13 x 17). ``"gather"``: each sample's four neighbours
            by one Gather and torchvision's own weights by one MatMul: torchvision's values
            up to the order of the float sums (~1e-7), with 4x GridSample's intermediate.
            ``"separable"``: a bin's sum is ``Wy @ map @ Wx^T`` (a sample's weight and whether
            it counts factorise by axis), two MatMuls per chunk with torchvision's weights
            summed per row and column: its values to the order of the sums too (~1e-7), an
            intermediate of C x H x w per RoI (H: the map's height) instead of the gather's
            16 C h w, few nodes (fast TensorRT builds), and MatMuls, what GPUs do best.
        rois_per_chunk: RoIs per GridSample / Gather / MatMul; by default as many as keep
            that intermediate within ``chunk_bytes`` per image (``roi_align_chunking``).
        max_map: ``"separable"``: the largest map height the chunks must allow for (the map
            is dynamic, the chunks are not); default: the example map's.
    Returns:
        (B, K, C, h, w) float32: torchvision's ``roi_align(features, rois, ...)`` for rois
        ``[b, *boxes[b, k]]``, as ``.reshape(B * K, C, h, w)``.
    """
    out_h, out_w = _pair(output_size)
    if sampling_ratio > 0:
        grid, max_grid = int(sampling_ratio), int(sampling_ratio)
    elif max_grid is None or max_grid < 1:
        raise ValueError("roi_align: an adaptive sampling_ratio (<= 0) needs max_grid >= 1")
    else:
        grid, max_grid = None, int(max_grid)
    if method not in ("grid_sample", "gather", "separable"):
        raise ValueError(f"roi_align: unknown method {method!r}")
    features = features.to(torch.float32)
    boxes = boxes.to(torch.float32)
    batch, channels, height, width = features.shape
    n_rois = boxes.shape[1]
    if not isinstance(n_rois, int):  # dynamic (a query graph's boxes): one chunk
        rois_per_chunk = n_rois
    elif rois_per_chunk is None:
        if not isinstance(channels, int):
            raise ValueError("roi_align: give rois_per_chunk when the channels are dynamic")
        if max_map is None and method == "separable":
            max_map = height if isinstance(height, int) else None
            if max_map is None:
                raise ValueError("roi_align: give max_map when the map height is dynamic")
        rois_per_chunk = roi_align_chunking(
            channels, n_rois, (out_h, out_w), max_grid, method, chunk_bytes, max_map
        )[1]
    if isinstance(n_rois, int):
        rois_per_chunk = max(1, math.ceil(n_rois / max(1, math.ceil(n_rois / rois_per_chunk))))

    # torchvision: roi_start = box * spatial_scale - offset, in float32
    offset = 0.5 if aligned else 0.0
    scaled = boxes * torch.tensor(spatial_scale, dtype=torch.float32) - offset
    x1, y1, x2, y2 = scaled.unbind(-1)
    ys, y_counts, grid_h = _axis_samples(y1, y2, out_h, grid, max_grid, height, aligned)
    xs, x_counts, grid_w = _axis_samples(x1, x2, out_w, grid, max_grid, width, aligned)
    counted = y_counts[..., :, None] & x_counts[..., None, :]  # (B, K, rows, cols)
    if grid is None:
        count = torch.clamp(grid_h * grid_w, min=1.0)  # (B, K): torchvision's max(gh*gw, 1)
    elif grid & (grid - 1) == 0:
        # sum / 2^n == sum of (values / 2^n), exactly: scale the map once, no division later
        features = features * (1.0 / (grid * grid))
        count = None
    else:
        count = torch.full((), float(grid * grid), dtype=torch.float32, device=boxes.device)

    if method == "grid_sample":
        ys, xs = _normalise(ys, height), _normalise(xs, width)
    elif method == "separable":
        rows = _axis_matrix(ys, y_counts, height, out_h, max_grid)  # (B, K, h, H)
        cols = _axis_matrix(xs, x_counts, width, out_w, max_grid)  # (B, K, w, W)
    else:
        table = features.permute(0, 2, 3, 1).reshape(-1, channels)  # (B * H * W, C)
        # the boxes' batch, not the map's (the same number): a graph whose boxes have a batch
        # dimension of their own keeps it apart from the images' (torch.export would unify them)
        area = torch.arange(boxes.shape[0], device=boxes.device) * (height * width)
        y_axis = _axis_neighbours(ys, height)
        x_axis = _axis_neighbours(xs, width)
    outputs = []
    chunks = (
        [slice(s, min(s + rois_per_chunk, n_rois)) for s in range(0, n_rois, rois_per_chunk)]
        if isinstance(n_rois, int)
        else [slice(None)]
    )
    for part in chunks:
        if method == "separable":
            sums = _separable_chunk(features, rows[:, part], cols[:, part])  # (B, k, C, h, w)
        elif method == "grid_sample":
            sums = _grid_sample_chunk(
                features, ys[:, part], xs[:, part], counted[:, part], out_h, out_w, max_grid
            ).permute(0, 2, 1, 3, 4)  # (B, k, C, h, w)
        else:
            sums = _gather_chunk(
                table,
                area,
                tuple(t[:, part] for t in y_axis),
                tuple(t[:, part] for t in x_axis),
                counted[:, part],
                width,
                out_h,
                out_w,
                max_grid,
            ).permute(0, 1, 4, 2, 3)  # (B, k, C, h, w)
        if count is not None:
            sums = sums / (count if grid is not None else count[:, part, None, None, None])
        outputs.append(sums)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


def roi_align_chunking(
    channels,
    n_rois,
    output_size,
    grid,
    method="grid_sample",
    chunk_bytes=ROI_ALIGN_CHUNK_BYTES,
    max_map=None,
):
    """(chunks, RoIs per chunk, bytes of one chunk's intermediate per image) as ``roi_align``
    chooses them: GridSample's output is C x (h G) x (w G) float32 per RoI, the gathered
    neighbours 4 times that (``grid`` G: samples per bin and axis), the separable form's
    C x H x w (``max_map``: the largest map height H)."""
    out_h, out_w = _pair(output_size)
    if method == "separable":
        per_roi = channels * int(max_map) * out_w * 4
    else:
        per_roi = channels * out_h * grid * out_w * grid * 4 * (4 if method == "gather" else 1)
    per_chunk = max(1, chunk_bytes // per_roi)
    n_chunks = max(1, math.ceil(n_rois / per_chunk))
    per_chunk = max(1, math.ceil(n_rois / n_chunks))
    return n_chunks, per_chunk, per_chunk * per_roi


# ---------------------------------------------------------------------------------------
# NMS


def iou_threshold_f32(threshold):
    """The float32 ``t`` such that ``iou > t`` (float32) is ``iou > threshold`` (torchvision
    compares its float32 IoU with the threshold as a double): the largest float32 <= it."""
    value = np.float32(threshold)
    if float(value) > float(threshold):
        value = np.nextafter(value, np.float32(-np.inf))
    return float(value)


def _threshold(iou_threshold, like):
    if isinstance(iou_threshold, torch.Tensor):
        return iou_threshold.to(torch.float32)  # the caller's float32 (see iou_threshold_f32)
    return torch.tensor(iou_threshold_f32(iou_threshold), dtype=torch.float32, device=like.device)


def _box_index(scores):
    """(B, N) int64 box numbers plus a per-image offset (0 or 1) read from the scores: ``i <
    j`` is unchanged, but the (rows x N) comparisons no longer depend on constants alone, which
    exporters and TensorRT would fold into N x N constants (36 MB at N = 6000)."""
    offset = (scores[:, :1] > 0).to(torch.int64)
    return torch.arange(scores.shape[1], device=scores.device)[None, :] + offset


def _precedes(scores, index, rows):
    """(B, len(rows), N): box i (of ``rows``) comes before box j in torchvision's order (score
    descending, stable: lower index first among equal scores)."""
    s_i, s_j = scores[:, rows, None], scores[:, None, :]
    return (s_i > s_j) | ((s_i == s_j) & (index[:, rows, None] < index[:, None, :]))


def _overlaps(boxes, rows, threshold):
    """(B, len(rows), N): IoU(i, j) > threshold, computed as torchvision's CPU kernel does."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    xx1 = torch.maximum(x1[:, rows, None], x1[:, None, :])
    yy1 = torch.maximum(y1[:, rows, None], y1[:, None, :])
    xx2 = torch.minimum(x2[:, rows, None], x2[:, None, :])
    yy2 = torch.minimum(y2[:, rows, None], y2[:, None, :])
    inter = torch.clamp(xx2 - xx1, min=0.0) * torch.clamp(yy2 - yy1, min=0.0)
    iou = inter / ((area[:, rows, None] + area[:, None, :]) - inter)
    return iou > threshold


def _row_blocks(n, block_rows):
    if not isinstance(n, int):
        return [slice(None)]
    return [slice(s, min(s + block_rows, n)) for s in range(0, n, block_rows)] or [slice(None)]


def nms(boxes, scores, iou_threshold, max_out=None, valid=None, block_rows=NMS_BLOCK_ROWS):
    """``torchvision.ops.nms`` with a fixed-size output.

    Args:
        boxes: (N, 4) or (B, N, 4) x1y1x2y2, float32, finite.
        scores: (N,) or (B, N) float32.
        iou_threshold: a float (compared as torchvision does, see ``iou_threshold_f32``) or a
            0-d float32 tensor used as it is (feed ``iou_threshold_f32(t)``).
        max_out: rows of the output (default N, static).
        valid: optional (N,) / (B, N) bool: boxes outside it take no part (as if removed
            before torchvision's ``nms``; their indices never appear).
        block_rows: rows of the pairwise matrices computed at a time (bounds the IoU
            intermediates to a few block_rows x N float32 tensors).
    Returns:
        (indices, count): (max_out,) / (B, max_out) int64 indices of the kept boxes, best
        first (torchvision's ``nms(...)[:max_out]``), zeros past ``count``; count () / (B,)
        int64.

    The greedy pass is the unique fixed point of ``keep[j] = valid[j] and no kept i before j
    has IoU(i, j) > t``; iterating it from ``keep = valid`` fixes one more box of the order per
    round at least, so the ONNX Loop stops (keep unchanged) after at most N + 1 rounds, at
    torchvision's answer. Each round is one (1 x N) x (N x N) MatMul.
    """
    single = boxes.dim() == 2
    if single:
        boxes, scores = boxes[None], scores[None]
        valid = None if valid is None else valid[None]
    boxes, scores = boxes.to(torch.float32), scores.to(torch.float32)
    batch, n = scores.shape
    if max_out is None:
        if not isinstance(n, int):
            raise ValueError("nms: give max_out when the number of boxes is dynamic")
        max_out = n
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    threshold = _threshold(iou_threshold, boxes)
    box_index = _box_index(scores)

    # suppress[b, i, j] = 1: i comes before j, both valid, IoU > t
    blocks = []
    for rows in _row_blocks(n, block_rows):
        pair = valid[:, rows, None] & valid[:, None, :]
        blocks.append(_precedes(scores, box_index, rows) & _overlaps(boxes, rows, threshold) & pair)
    suppress = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
    suppress = suppress.to(torch.float32)  # (B, N, N): the Loop's MatMul operand

    def unchanged_yet(keep, changed):
        return changed.clone()

    def round_(keep, changed):
        hits = torch.matmul(keep.to(torch.float32)[:, None, :], suppress)[:, 0, :]
        new = valid & (hits < 0.5)
        return new, (new != keep).to(torch.int32).sum() > 0

    keep, changed = valid.clone(), torch.ones((), dtype=torch.bool, device=boxes.device)
    if torch.compiler.is_exporting() or torch.compiler.is_compiling():
        keep, _ = while_loop(unchanged_yet, round_, (keep, changed))  # an ONNX Loop
    else:  # eager: the same rounds (while_loop would compile them with torch.compile)
        while changed:
            keep, changed = round_(keep, changed)

    # rank of each kept box among the kept ones, in torchvision's order
    keep_f = keep.to(torch.float32)[:, None, :]
    rank = None
    for rows in _row_blocks(n, block_rows):
        before = torch.matmul(
            keep_f[:, :, rows], _precedes(scores, box_index, rows).to(torch.float32)
        )
        rank = before if rank is None else rank + before
    rank = rank[:, 0, :].to(torch.int64)
    index = torch.arange(n, device=boxes.device)
    target = torch.where(keep & (rank < max_out), rank, index + max_out)  # all distinct
    table = torch.zeros(batch, max_out + n, dtype=torch.int64, device=boxes.device)
    table = table.scatter(1, target, index.expand(batch, n))[:, :max_out]
    count = torch.clamp(keep.to(torch.int64).sum(1), max=max_out)
    if single:
        return table[0], count[0]
    return table, count


def batched_nms(
    boxes, scores, idxs, iou_threshold, max_out=None, valid=None, block_rows=NMS_BLOCK_ROWS
):
    """``torchvision.ops.batched_nms`` by its coordinate trick
    (``_batched_nms_coordinate_trick``: each category's boxes shifted by ``idxs * (max + 1)``,
    ``max`` over the valid boxes, then one NMS), the arithmetic of torchvision's to the bit:
    what torchvision runs for N <= 1000 boxes on the CPU (<= 5000 on CUDA) or when tracing.
    ``idxs``: (N,) / (B, N) integer categories; the rest as ``nms``."""
    single = boxes.dim() == 2
    if single:
        boxes, scores, idxs = boxes[None], scores[None], idxs[None]
        valid = None if valid is None else valid[None]
    boxes = boxes.to(torch.float32)
    if valid is None:
        top = boxes.amax(dim=(1, 2))
    else:
        masked = torch.where(valid[..., None], boxes, boxes.new_full((), float("-inf")))
        top = masked.amax(dim=(1, 2))
        top = torch.where(valid.to(torch.int32).sum(dim=1) > 0, top, top.new_zeros(()))
    one = torch.ones((), dtype=torch.float32, device=boxes.device)
    offsets = idxs.to(torch.float32) * (top[:, None] + one)
    indices, count = nms(
        boxes + offsets[..., None], scores, iou_threshold, max_out, valid, block_rows
    )
    if single:
        return indices[0], count[0]
    return indices, count


# ---------------------------------------------------------------------------------------
# top-k


def topk(x, k, dim=-1, limit=TOPK_LIMIT):
    """``torch.topk(x, k, dim)`` (largest, sorted) from TopK nodes of at most ``limit``
    elements: (values, int64 indices).

    Round one is one TopK; each further round takes the next ``<= limit`` elements of the
    order (value descending, lower index first among equal values) from what the rounds before
    left: the unselected elements equal to the last value taken and, after them, the
    ``-inf`` elements below it, both in index order (one TopK over ``-index``), and the finite
    elements below the last value (one TopK over them, the rest ``-inf``), interleaved by
    their counts. Needs ``x.shape[dim] <= 2**23`` (indices are float32 keys) and no NaN.
    """
    if k <= limit:
        return torch.topk(x, k, dim=dim)
    moved = x.movedim(dim, -1)
    shape = moved.shape
    n = shape[-1]
    flat = moved.reshape(-1, n)
    rows = flat.shape[0]
    values, index = torch.topk(flat, limit, dim=1)
    taken = [index]
    selected = torch.zeros_like(flat, dtype=torch.bool).scatter(
        1, index, torch.ones_like(index, dtype=torch.bool)
    )
    last = values[:, -1:]
    position = torch.arange(n, dtype=torch.int32, device=x.device).to(torch.float32)
    n_f = torch.full((), n, dtype=torch.float32, device=x.device)
    neg_inf = flat.new_full((), float("-inf"))
    done = limit
    while done < k:
        step = min(limit, k - done)
        tie = (flat == last) & ~selected
        below_inf = (flat == neg_inf) & (last > neg_inf)
        key = torch.where(tie, -position, torch.where(below_inf, -position - n_f, -2.0 * n_f - 1.0))
        _, in_order = torch.topk(key, step, dim=1)  # ties at ``last``, then -inf: by index
        finite = (flat < last) & (flat > neg_inf)
        _, by_value = torch.topk(torch.where(finite, flat, neg_inf), step, dim=1)
        n_tie = tie.to(torch.int32).sum(1, keepdim=True)
        n_finite = finite.to(torch.int32).sum(1, keepdim=True)
        p = torch.arange(step, dtype=torch.int32, device=x.device)[None, :].expand(rows, step)
        from_value = (p >= n_tie) & (p < n_tie + n_finite)
        at_value = torch.clamp(p - n_tie, min=0, max=step - 1).to(torch.int64)
        at_order = torch.where(p < n_tie, p, torch.clamp(p - n_finite, min=0)).to(torch.int64)
        part = torch.where(from_value, by_value.gather(1, at_value), in_order.gather(1, at_order))
        taken.append(part)
        selected = selected.scatter(1, part, torch.ones_like(part, dtype=torch.bool))
        last = flat.gather(1, part[:, -1:])
        done += step
    index = torch.cat(taken, dim=1)
    values = flat.gather(1, index)
    out_shape = shape[:-1] + (k,)
    return (
        values.reshape(out_shape).movedim(-1, dim),
        index.reshape(out_shape).movedim(-1, dim),
    )
