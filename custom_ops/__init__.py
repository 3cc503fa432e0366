"""The toolkit's RoIAlign, NMS and TopK + NMS kernels (C++ and CUDA), as torch operators.

Built by setup.py into ``custom_ops._C`` (CPU) and ``custom_ops._C_cuda`` (CUDA), they register
``torch.ops.custom_ops.{roi_align, _roi_align_backward, nms, topk_nms}`` with the dispatcher
(``TORCH_LIBRARY``); this module adds their autograd formula and fake kernels, so eager
mode, autograd, ``torch.compile`` and ``torch.export`` all see them.

The functions here take torchvision's arguments and give torchvision's results. They run the
custom kernels where those are built and loaded for the tensors' device, and torchvision's
otherwise: when the extension was not built (no torch at build time, a failed compile), cannot
be loaded (built against another torch), or ``SEQNET_CUSTOM_OPS=0`` is set. ``enabled()`` says
which, and logs it once.
"""

import functools
import importlib
import logging
import os

import torch
import torchvision
from torchvision.ops import boxes as box_ops

log = logging.getLogger(__name__)

ENV = "SEQNET_CUSTOM_OPS"  # "0": torchvision's kernels even where the custom ones are built


@functools.cache
def _load():
    """{device type: loaded}, and why not where not: ({"cpu": bool, "cuda": bool}, reason)."""
    try:
        importlib.import_module("custom_ops._C")
    except ModuleNotFoundError:
        return {"cpu": False, "cuda": False}, "not built (setup.py builds them: `make venv`)"
    except (ImportError, OSError) as e:  # built against another torch, say
        log.warning("custom_ops: the built kernels do not load (%s); rebuild them", e)
        return {"cpu": False, "cuda": False}, f"built but not loadable: {e}"
    _register()
    loaded, reason = {"cpu": True, "cuda": False}, ""
    if torch.version.cuda:
        try:
            importlib.import_module("custom_ops._C_cuda")
            loaded["cuda"] = True
        except ModuleNotFoundError:
            reason = "CUDA kernels not built"
        except (ImportError, OSError) as e:
            reason = f"CUDA kernels not loadable: {e}"
    return loaded, reason


@functools.cache
def _say(message):
    log.info("%s", message)


def status():
    """What runs: {"cpu": bool, "cuda": bool} (custom kernels in use per device) and why not."""
    if os.environ.get(ENV, "1") == "0":
        return {"cpu": False, "cuda": False, "reason": f"{ENV}=0"}
    loaded, reason = _load()
    return {**loaded, "reason": reason}


def enabled(device_type="cpu"):
    """Whether the custom kernels run for tensors on ``device_type``; logs the answer once."""
    s = status()
    on = s.get(device_type, False)
    if on:
        cuda = "" if s["cuda"] else f" (CUDA: torchvision's; {s['reason']})"
        _say(f"custom_ops: RoIAlign and NMS run on the toolkit's C++ kernels{cuda}")
    else:
        _say(f"custom_ops: RoIAlign and NMS run on torchvision's kernels ({s['reason']})")
    return on


# --------------------------------------------------------------------------- registration -- #
@functools.cache
def _register():
    """Autograd and fake kernels of the C++ operators (once, after the library is loaded)."""

    @torch.library.register_fake("custom_ops::roi_align")
    def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
        torch._check(input.dim() == 4, lambda: "input must be (N, C, H, W)")
        torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: "rois must be (K, 5)")
        return input.new_empty((rois.size(0), input.size(1), pooled_height, pooled_width))

    @torch.library.register_fake("custom_ops::_roi_align_backward")
    def _(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
          width, sampling_ratio, aligned, channels_last):  # fmt: skip
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        shape = (batch_size, channels, height, width)
        return torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)

    @torch.library.register_fake("custom_ops::nms")
    def _(boxes, scores, iou_threshold, max_keep=-1):
        kept = torch.library.get_ctx().new_dynamic_size()
        return boxes.new_empty((kept,), dtype=torch.int64)

    def setup_context(ctx, inputs, output):
        input, rois, *args = inputs
        ctx.save_for_backward(rois)
        ctx.args = args
        ctx.shape = input.shape
        ctx.channels_last = _channels_last(input)

    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.args
        grad_input = torch.ops.custom_ops._roi_align_backward(
            grad, rois, spatial_scale, pooled_height, pooled_width, *ctx.shape,
            sampling_ratio, aligned, ctx.channels_last,
        )  # fmt: skip
        return grad_input, None, None, None, None, None, None

    torch.library.register_autograd("custom_ops::roi_align", backward, setup_context=setup_context)


def _channels_last(t):
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


# --------------------------------------------------------------------------- operators ----- #
def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """``torchvision.ops.roi_align``: (K, C, *output_size) from an (N, C, H, W) map and boxes,
    a (K, 5) tensor of (batch index, x1, y1, x2, y2) or a list of (K_i, 4) tensors.

    The custom kernel also takes bf16 / fp16 maps with fp32 boxes, computing in fp32 and
    rounding once; torchvision's path (the fallback) does the same by casting.
    """
    rois = boxes if torch.is_tensor(boxes) else _rois(boxes)
    height, width = (output_size, output_size) if isinstance(output_size, int) else output_size
    args = (float(spatial_scale), int(height), int(width), int(sampling_ratio), bool(aligned))
    if enabled(input.device.type):
        return torch.ops.custom_ops.roi_align(input, rois, *args)
    if input.dtype in (torch.bfloat16, torch.float16):
        out = torch.ops.torchvision.roi_align(input.float(), rois.float(), *args)
        return out.to(input.dtype)
    return torch.ops.torchvision.roi_align(input, rois.to(input.dtype), *args)


def _rois(boxes):
    index = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(index), torch.cat(boxes)], 1)


def _fp32(*tensors):
    """bf16 / fp16 boxes and scores (autocast training) in fp32, as torchvision's autocast
    kernels of its NMS take them."""
    return [t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors]


def nms(boxes, scores, iou_threshold, max_keep=None):
    """``torchvision.ops.nms``, ``[:max_keep]`` (the custom kernel stops once it has them)."""
    boxes, scores = _fp32(boxes, scores)
    if enabled(boxes.device.type):
        limit = -1 if max_keep is None else int(max_keep)
        return torch.ops.custom_ops.nms(boxes, scores, float(iou_threshold), limit)
    return torchvision.ops.nms(boxes, scores, iou_threshold)[:max_keep]


# Above this many box coordinates torchvision runs NMS class by class rather than shifting each
# class's boxes apart (torchvision.ops.boxes.batched_nms); the two differ in float rounding.
_PER_CLASS_ABOVE = {"cpu": 4000}
_PER_CLASS_ABOVE_ELSEWHERE = 100_000


def batched_nms(boxes, scores, idxs, iou_threshold, max_keep=None):
    """``torchvision.ops.batched_nms`` (NMS within each class of ``idxs``), ``[:max_keep]``.

    Follows torchvision's two strategies, chosen by the same size rule, so that the results
    are torchvision's to the index, ties included.
    """
    device = boxes.device.type
    if not enabled(device):
        return box_ops.batched_nms(boxes, scores, idxs, iou_threshold)[:max_keep]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    per_class = _PER_CLASS_ABOVE.get(device, _PER_CLASS_ABOVE_ELSEWHERE)
    if boxes.numel() > per_class and not torchvision._is_tracing():
        kept = torch.zeros_like(scores, dtype=torch.bool)
        for label in torch.unique(idxs):
            members = torch.where(idxs == label)[0]
            kept[members[nms(boxes[members], scores[members], iou_threshold)]] = True
        kept = torch.where(kept)[0]
        return kept[scores[kept].sort(descending=True)[1]][:max_keep]
    # Shift each class's boxes beyond all others: one NMS, already in decreasing score order.
    shift = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + shift[:, None], scores, iou_threshold, max_keep)


def topk_nms(boxes, scores, k, iou_threshold, max_keep=None):
    """The ``k`` best-scoring boxes (``scores.topk``), NMS over them, ``[:max_keep]``: indices
    into ``boxes`` by decreasing score. Any number of candidates and any ``k``."""
    boxes, scores = _fp32(boxes, scores)
    if enabled(boxes.device.type):
        limit = -1 if max_keep is None else int(max_keep)
        return torch.ops.custom_ops.topk_nms(boxes, scores, int(k), float(iou_threshold), limit)
    index = scores.topk(len(scores) if k < 0 else min(int(k), len(scores)))[1]
    return index[torchvision.ops.nms(boxes[index], scores[index], iou_threshold)[:max_keep]]
