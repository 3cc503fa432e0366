"""Export-friendly operators with fixed-size outputs: PyTorch custom ops and their ONNX forms.

torch.export cannot trace torchvision's NMS into a graph (its output size depends on the data),
so the export wrapper calls ``seqnet_export::nms_fixed`` instead: per image, the indices kept
by NMS (torchvision's semantics: a box is suppressed by a higher-scoring one when their IoU is
> the threshold; boxes with a negative score take no part), best first, padded to ``max_out``
with zeros, and how many are valid. Its eager form runs torchvision's ``nms`` (the model's own
function); its ONNX form is the standard ``NonMaxSuppression`` (natively batched) followed by a
scatter of the selected rows into a fixed (B, max_out) table.

RoIAlign is torchvision's op, translated here with every attribute written out (parsers'
defaults differ): ``mode="avg"``, ``sampling_ratio`` as configured and
``coordinate_transformation_mode="output_half_pixel"`` (torchvision's ``aligned=False``).
"""

import torch
import torchvision
from onnxscript import opset18 as op
from onnxscript.onnx_types import INT64

INVALID_BELOW = -0.5  # scores below this take no part in NMS (masked rows carry -1)


@torch.library.custom_op("seqnet_export::nms_fixed", mutates_args=())
def nms_fixed(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: torch.Tensor, max_out: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched NMS with a fixed-size output.

    Args:
        boxes: (B, N, 4) x1y1x2y2, float32.
        scores: (B, N) float32; rows with a score below ``INVALID_BELOW`` are ignored.
        iou_threshold: 0-d float32 tensor.
        max_out: rows kept per image at most.
    Returns:
        (B, max_out) int64 indices into N (best first, zeros past the count) and (B,) int64
        counts.
    """
    batch = boxes.shape[0]
    index = torch.zeros(batch, max_out, dtype=torch.int64, device=boxes.device)
    count = torch.zeros(batch, dtype=torch.int64, device=boxes.device)
    for b in range(batch):
        valid = torch.where(scores[b] > INVALID_BELOW)[0]
        keep = torchvision.ops.nms(boxes[b, valid], scores[b, valid], float(iou_threshold))
        keep = valid[keep[:max_out]]
        index[b, : len(keep)] = keep
        count[b] = len(keep)
    return index, count


@nms_fixed.register_fake
def _(boxes, scores, iou_threshold, max_out):
    batch = boxes.shape[0]
    return (
        boxes.new_empty((batch, max_out), dtype=torch.int64),
        boxes.new_empty((batch,), dtype=torch.int64),
    )


def nms_fixed_onnx(boxes, scores, iou_threshold, max_out: int):
    """ONNX form of ``nms_fixed``: NonMaxSuppression, then the selected (batch, box) rows
    scattered into a (B, max_out) table by their rank within their image (ONNX Runtime and
    TensorRT list them per image, best first)."""
    selected = op.NonMaxSuppression(
        boxes,
        op.Unsqueeze(scores, op.Constant(value_ints=[1])),
        op.Constant(value_ints=[max_out]),
        op.Reshape(iou_threshold, op.Constant(value_ints=[1])),
        op.Constant(value_floats=[INVALID_BELOW]),
    )
    image = op.Gather(selected, op.Constant(value_int=0), axis=1)  # (S,)
    box = op.Gather(selected, op.Constant(value_int=2), axis=1)  # (S,)
    zero = op.Constant(value_int=0)
    one = op.Constant(value_int=1)
    batch = op.Squeeze(op.Shape(scores, start=0, end=1), op.Constant(value_ints=[0]))
    n_selected = op.Squeeze(op.Shape(selected, start=0, end=1), op.Constant(value_ints=[0]))
    onehot = op.Equal(
        op.Unsqueeze(image, op.Constant(value_ints=[1])), op.Range(zero, batch, one)
    )  # (S, B)
    count = op.ReduceSum(
        op.Cast(onehot, to=INT64.dtype), op.Constant(value_ints=[0]), keepdims=0
    )  # (B,)
    first = op.CumSum(count, zero, exclusive=1)  # first row of each image in ``selected``
    rank = op.Sub(op.Range(zero, n_selected, one), op.Gather(first, image, axis=0))
    table = op.Expand(
        op.Constant(value_int=0),
        op.Concat(op.Shape(scores, start=0, end=1), op.Constant(value_ints=[max_out]), axis=0),
    )
    where = op.Concat(
        op.Unsqueeze(image, op.Constant(value_ints=[1])),
        op.Unsqueeze(rank, op.Constant(value_ints=[1])),
        axis=1,
    )
    return op.ScatterND(table, where, box), count


def roi_align_onnx(
    input,
    rois,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int = -1,
    aligned: bool = False,
):
    """torchvision::roi_align as ONNX RoiAlign (opset 16+), every attribute explicit."""
    batch_indices = op.Cast(
        op.Squeeze(
            op.Slice(
                rois,
                op.Constant(value_ints=[0]),
                op.Constant(value_ints=[1]),
                op.Constant(value_ints=[1]),
            ),
            op.Constant(value_ints=[1]),
        ),
        to=INT64.dtype,
    )
    boxes = op.Slice(
        rois, op.Constant(value_ints=[1]), op.Constant(value_ints=[5]), op.Constant(value_ints=[1])
    )
    return op.RoiAlign(
        input,
        boxes,
        batch_indices,
        mode="avg",
        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
        spatial_scale=spatial_scale,
        output_height=pooled_height,
        output_width=pooled_width,
        sampling_ratio=max(sampling_ratio, 0),
    )


TRANSLATIONS = {
    torch.ops.seqnet_export.nms_fixed.default: nms_fixed_onnx,
    torch.ops.torchvision.roi_align.default: roi_align_onnx,
}
