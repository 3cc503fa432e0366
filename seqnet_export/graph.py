"""Export wrappers around a trained SeqNet: the same function as ``predict`` / ``embed_boxes``,
written with fixed shapes so that ``torch.onnx.export`` traces it into standard ONNX operators.

The training model stays as it is; these modules borrow its parts (backbone, RPN head and
anchors, RoI heads) and rewrite only the glue:

- the whole batch goes through the backbone and the RPN at once: the images of one call have
  one size, so their resizing and padding are the same as one by one;
- data-dependent filtering becomes masking: a row that the model would drop (score threshold,
  small box, padding) keeps its place and carries a negative score, which ``nms_fixed``
  (``seqnet_export.ops``) ignores; NMS returns the kept rows' indices in a fixed (B, max_out)
  table and a count per image;
- RPN top-k runs over B x anchors padded with -inf, so that ``k`` never exceeds the anchors;
- RoIAlign runs over all images' boxes with a batch index (torchvision's op, ``aligned=False``).

The ``engine`` flavour (``PackageGraph(model, engine=True)``) is the same function from the
operators TensorRT 10/11 and TensorRT-RTX build (``seqnet_export.engine_ops``, DEPLOY.md):
RoIAlign as two MatMuls per chunk of RoIs (``Wy @ map @ Wx^T``: torchvision's values to the
float rounding of the sums), NMS as a fixed-point Loop (torchvision's ``nms`` for the RPN, its
``batched_nms`` coordinate trick for the heads, as the model runs them, ties included), top-k
in TopK nodes of at most 3840, and stage 2 on all ``detections_per_img`` rows of every image
(no slice whose size depends on the data), the padding masked as above.

Inputs here are the network's: ``pixels`` (B, 3, Hp, Wp) normalised, resized and padded to a
multiple of 32, plus the resized and original sizes as float tensors (h, w).
``seqnet_export.preprocess`` builds the ONNX nodes that compute them from plain images, so the
package's graphs take (B, 3, H, W) images in [0, 1] and pixel boxes.
"""

import copy
import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from seqnet_export import engine_ops
from seqnet_export.ops import nms_fixed
from seqnet_train.modeling.inference import fold_batchnorm

ROI_MIN_SIZE = 1e-2  # SeqRoIHeads: remove_small_boxes(min_size=1e-2)
# the engine flavour's RoIAlign: MatMul intermediates per image and chunk of RoIs (at most
# ~230 MB per image with the chunk's outputs and the scaled map, ResNet-50 at 900/1500)
ROI_CHUNK_BYTES = 192 * 2**20
INVALID = -1.0  # score of a masked row (nms_fixed ignores scores below -0.5)


def export_copy(model, fp16=False):
    """An eval-mode copy of ``model`` with BatchNorm2d folded into the convolutions (one op
    fewer per conv in the graph; the same function within float rounding), its convolutional
    parts in fp16 if asked."""
    model = copy.deepcopy(model).eval().requires_grad_(False)
    heads = model.roi_heads
    for part in (model.backbone, model.rpn.head, heads.box_head, heads.reid_head):
        fold_batchnorm(part)
    if fp16:
        model.backbone, model.rpn.head = Half(model.backbone), Half(model.rpn.head)
        heads.box_head, heads.reid_head = Half(heads.box_head), Half(heads.reid_head)
    return model


def _cast(x, dtype):
    if isinstance(x, dict):
        return type(x)((k, _cast(v, dtype)) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return type(x)(_cast(v, dtype) for v in x)
    return x.to(dtype)


class Half(nn.Module):
    """``module`` with fp16 weights: inputs cast to fp16, outputs back to fp32. The fp16
    graphs run the convolutional parts so (backbone, RPN head, both layer4 heads); box
    decoding, RoIAlign (and its boxes), top-k, NMS, the small linear heads and the final L2
    norm stay fp32 (DEPLOY.md: an fp16 coordinate near 1500 px has a step of 1 px)."""

    def __init__(self, module):
        super().__init__()
        self.module = module.half()

    def forward(self, x):
        return _cast(self.module(_cast(x, torch.float16)), torch.float32)


def clip_boxes(boxes, size):
    """torchvision's clip_boxes_to_image with the size as a (h, w) float tensor."""
    zero = boxes.new_zeros(())
    x = torch.minimum(torch.maximum(boxes[..., 0::2], zero), size[1])
    y = torch.minimum(torch.maximum(boxes[..., 1::2], zero), size[0])
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def big_enough(boxes, min_size):
    """torchvision's remove_small_boxes as a mask."""
    ws, hs = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return (ws >= min_size) & (hs >= min_size)


def scale_boxes(boxes, new_size, old_size):
    """torchvision's resize_boxes (x by the width ratio, y by the height ratio) for (..., 4)
    boxes, the sizes being (h, w) float tensors."""
    ratio = new_size / old_size
    rh, rw = ratio[0], ratio[1]
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1 * rw, y1 * rh, x2 * rw, y2 * rh), dim=-1)


def take(values, index):
    """values (B, N, ...) gathered at index (B, K) -> (B, K, ...)."""
    shape = index.shape + values.shape[2:]
    flat = index.reshape(index.shape + (1,) * (values.dim() - 2))
    return torch.gather(values, 1, flat.expand(shape))


class _Parts(nn.Module):
    """What both graphs share: the backbone, RoIAlign and the re-id head with its embedding."""

    def __init__(self, model, engine=False):
        super().__init__()
        self.engine = engine
        heads = model.roi_heads
        self.backbone = model.backbone
        self.reid_head = heads.reid_head
        self.embedding_head = heads.embedding_head
        self.pool_size = tuple(heads.box_roi_pool.output_size)
        self.spatial_scale = heads.box_roi_pool.spatial_scale
        self.sampling_ratio = heads.box_roi_pool.sampling_ratio
        self.dim = heads.embedding_head.dim
        # the largest feature map side: the longest resized side, padded to 32, on the map
        longest = max(int(model.transform.min_size[-1]), int(model.transform.max_size))
        self.max_map = math.ceil(math.ceil(longest / 32) * 32 * self.spatial_scale)

    def pool(self, features, boxes):
        """RoIAlign of (B, K, 4) boxes, each on its image's map -> (B * K, C, h, w)."""
        if self.engine:
            pooled = engine_ops.roi_align(
                features, boxes, self.pool_size, self.spatial_scale, self.sampling_ratio,
                aligned=False, method="separable", chunk_bytes=ROI_CHUNK_BYTES,
                max_map=self.max_map,
            )  # fmt: skip
            return pooled.reshape((-1,) + tuple(pooled.shape[2:]))
        batch, k = boxes.shape[:2]
        index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype)
        index = index[:, None, None].expand(batch, k, 1)
        rois = torch.cat([index, boxes], dim=2).reshape(-1, 5)
        return torchvision.ops.roi_align(
            features,
            rois,
            self.pool_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=False,
        )

    def embed(self, features, boxes):
        """Stage-2 features of (B, K, 4) boxes: (feat_res5 (B*K, C), embeddings (B, K, D))."""
        feats = self.reid_head(self.pool(features, boxes))
        embeddings, _ = self.embedding_head(feats)
        return feats["feat_res5"], embeddings.reshape(boxes.shape[0], boxes.shape[1], self.dim)


class PackageGraph(_Parts):
    """Both paths in one trace (one export instead of two); ``seqnet_export.export`` cuts the
    ONNX graph into the detection and the query graph.

    forward(pixels, resized_hw, original_hw, context_boxes (B, 4) original pixels,
    use_context (B,) float 0/1, score_thresh, nms_thresh, nms_thresh_refined, rpn_nms_thresh,
    query_boxes (B, Q, 4) original pixels) -> boxes (B, K, 4) original pixels, scores (B, K),
    embeddings (B, K, D), count (B,) int64 — the gallery path and CBGM's query-image-as-gallery
    mode (``SeqNet.predict``): the first ``count`` rows of each image are its detections (best
    first), the rest zeros; where ``use_context`` is 1 the image's context box takes part with
    score 1 and its own embedding, and the embeddings are not confidence-weighted (CWS off) —
    and query_embeddings (B, Q, D), the query path (``SeqNet.embed_boxes``) on the same
    features.
    """

    def __init__(self, model, fp16=False, engine=False):
        model = export_copy(model, fp16)
        super().__init__(model, engine)
        heads = model.roi_heads
        rpn = model.rpn
        self.rpn_head = rpn.head
        self.register_buffer("cell_anchors", rpn.anchor_generator.cell_anchors[0].clone())
        self.rpn_coder = rpn.box_coder
        self.pre_nms_top_n = rpn._pre_nms_top_n["testing"]
        self.post_nms_top_n = rpn._post_nms_top_n["testing"]
        self.rpn_min_size = rpn.min_size
        self.rpn_score_thresh = rpn.score_thresh
        self.box_head = heads.box_head
        self.faster_rcnn_predictor = heads.faster_rcnn_predictor
        self.box_predictor = heads.box_predictor
        self.box_coder = heads.box_coder
        self.detections = heads.detections_per_img

    def anchors(self, pixels, features):
        """torchvision AnchorGenerator's anchors for one map, (Hf * Wf * A, 4), (y, x, a) order."""
        hf, wf = features.shape[-2:]
        stride_h, stride_w = pixels.shape[-2] // hf, pixels.shape[-1] // wf
        dtype = self.cell_anchors.dtype
        ys = torch.arange(hf, device=pixels.device, dtype=torch.int32).to(dtype) * stride_h
        xs = torch.arange(wf, device=pixels.device, dtype=torch.int32).to(dtype) * stride_w
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        return (shifts.view(-1, 1, 4) + self.cell_anchors.view(1, -1, 4)).reshape(-1, 4)

    def proposals(self, pixels, features, resized_hw, nms_thresh):
        """RegionProposalNetwork at test time: (B, post_nms_top_n, 4) proposals and (B,)
        counts (torchvision: top-k objectness, decode, clip, drop small, NMS, cap)."""
        batch = features.shape[0]
        logits, deltas = self.rpn_head([features])
        logits, deltas = logits[0], deltas[0]
        n_anchors = self.cell_anchors.shape[0]
        objectness = logits.permute(0, 2, 3, 1).reshape(batch, -1)
        hf, wf = deltas.shape[-2:]
        deltas = deltas.view(batch, n_anchors, 4, hf, wf).permute(0, 3, 4, 1, 2)
        deltas = deltas.reshape(batch, -1, 4)
        anchors = self.anchors(pixels, features)

        # top-k over the anchors, padded with -inf so that k never exceeds their number
        k = self.pre_nms_top_n
        padded = torch.cat([objectness, objectness.new_full((batch, k), float("-inf"))], dim=1)
        top, index = engine_ops.topk(padded, k, dim=1) if self.engine else padded.topk(k, dim=1)
        total = objectness.shape[1]
        valid = index < total
        index = torch.clamp(index, max=total - 1)
        boxes = self.rpn_coder.decode_single(
            take(deltas, index).reshape(-1, 4), anchors[index.reshape(-1)]
        ).reshape(batch, k, 4)
        boxes = clip_boxes(boxes, resized_hw)
        scores = torch.sigmoid(top)
        valid = valid & big_enough(boxes, self.rpn_min_size) & (scores >= self.rpn_score_thresh)
        keep, count = self.nms(boxes, scores, valid, nms_thresh, self.post_nms_top_n)
        return take(boxes, keep), count

    def nms(self, boxes, scores, valid, threshold, max_out, by_class=False):
        """(B, max_out) indices kept by NMS over the ``valid`` rows, best first, and (B,)
        counts. ``by_class``: the model's ``batched_nms`` with one class (the heads), whose
        coordinate trick shifts the boxes by their maximum + 1 (float rounding: the engine
        flavour does it too; the standard graphs run plain NMS)."""
        if not self.engine:
            return nms_fixed(boxes, torch.where(valid, scores, INVALID), threshold, max_out)
        if by_class:
            labels = torch.ones_like(scores, dtype=torch.int64)
            return engine_ops.batched_nms(boxes, scores, labels, threshold, max_out, valid)
        return engine_ops.nms(boxes, scores, threshold, max_out, valid)

    def detect(
        self,
        features,
        pixels,
        resized_hw,
        original_hw,
        context_boxes,
        use_context,
        score_thresh,
        nms_thresh,
        nms_thresh_refined,
        rpn_nms_thresh,
    ):
        """The gallery path on the backbone's ``features`` (``forward``'s inputs)."""
        batch = pixels.shape[0]
        proposals, n_proposals = self.proposals(pixels, features, resized_hw, rpn_nms_thresh)
        n = proposals.shape[1]
        rank = torch.arange(n, device=pixels.device)

        # stage 1: Faster R-CNN head on the proposals, then threshold, NMS and cap
        stage1 = self.box_head(self.pool(features, proposals))
        class_logits, deltas = self.faster_rcnn_predictor(stage1["feat_res5"])
        scores = F.softmax(class_logits, -1)[:, 1].reshape(batch, n)
        boxes = self._decode_person(deltas, proposals, resized_hw)
        valid = (rank < n_proposals[:, None]) & (scores > score_thresh)
        valid = valid & big_enough(boxes, ROI_MIN_SIZE)
        keep, n_det = self.nms(boxes, scores, valid, nms_thresh, self.detections, by_class=True)
        if self.engine:  # stage 2 on every row: no shape that depends on the data
            k = min(self.detections, n)
        else:  # stage 2 runs on as many rows as the image with the most detections has
            k = n_det.max().item()
            torch._check(k >= 0)
            torch._check(k <= self.detections)
        boxes, scores = take(boxes, keep[:, :k]), take(scores, keep[:, :k])
        det_valid = torch.arange(k, device=pixels.device) < n_det[:, None]

        # stage 2: the baseline head on the detections and the context box
        context = scale_boxes(context_boxes, resized_hw, original_hw)[:, None]
        feat_res5, embeddings = self.embed(features, torch.cat([boxes, context], dim=1))
        refined = self.box_predictor(feat_res5)
        width = refined.shape[-1]
        refined = refined.reshape(batch, k + 1, width)[:, :k].reshape(batch * k, width)
        refined = self._decode_person(refined, boxes, resized_hw)
        with_context = use_context > 0.5
        cws = torch.where(with_context[:, None], torch.ones_like(scores), scores)
        det_embeddings = embeddings[:, :k] * cws[:, :, None]
        valid = det_valid & (scores > score_thresh) & big_enough(refined, ROI_MIN_SIZE)

        # final NMS over the refined detections and the context box (appended last)
        boxes = torch.cat([refined, context], dim=1)
        scores = torch.cat([scores, scores.new_ones(batch, 1)], dim=1)
        valid = torch.cat([valid, with_context[:, None]], dim=1)
        embeddings = torch.cat([det_embeddings, embeddings[:, k:]], dim=1)
        keep, count = self.nms(
            boxes, scores, valid, nms_thresh_refined, self.detections, by_class=True
        )
        present = torch.arange(self.detections, device=pixels.device) < count[:, None]
        boxes = scale_boxes(take(boxes, keep), original_hw, resized_hw)
        boxes = torch.where(present[..., None], boxes, boxes.new_zeros(()))
        scores = torch.where(present, take(scores, keep), scores.new_zeros(()))
        embeddings = take(embeddings, keep)
        embeddings = torch.where(present[..., None], embeddings, embeddings.new_zeros(()))
        return boxes, scores, embeddings, count

    def _decode_person(self, deltas, boxes, size):
        """Class-1 boxes from (B*K, 8) deltas relative to (B, K, 4) boxes, clipped: (B, K, 4)."""
        batch, k = boxes.shape[:2]
        decoded = self.box_coder.decode_single(deltas, boxes.reshape(-1, 4))
        return clip_boxes(decoded.reshape(batch, k, 2, 4)[:, :, 1], size)

    def forward(
        self,
        pixels,
        resized_hw,
        original_hw,
        context_boxes,
        use_context,
        score_thresh,
        nms_thresh,
        nms_thresh_refined,
        rpn_nms_thresh,
        query_boxes,
    ):
        features = self.backbone(pixels)
        detections = self.detect(
            features,
            pixels,
            resized_hw,
            original_hw,
            context_boxes,
            use_context,
            score_thresh,
            nms_thresh,
            nms_thresh_refined,
            rpn_nms_thresh,
        )
        _, query = self.embed(features, scale_boxes(query_boxes, resized_hw, original_hw))
        return (*detections, query)
