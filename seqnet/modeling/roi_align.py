"""torchvision's RoIAlign over one feature map per image, spread across CPU threads.

torchvision's CPU RoIAlign kernels, forward and backward, run on one thread: in a training
step of the demo configuration they took a fifth of the time with 2 threads. Every RoI is
independent, so the work is cut into (image, chunk of RoIs) pieces that run in parallel
threads (the kernels free the GIL); the gradients of an image's pieces are summed. The values
are torchvision's; only the order of the gradient sums differs from one call per image.
"""

import functools
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn


class RoIAlign(nn.Module):
    """RoIAlign (torchvision's op) of per-image boxes on per-image maps.

    ``forward(features, boxes)``: ``features`` one (1, C, H_i, W_i) map per image, ``boxes``
    one (K_i, 4) x1y1x2y2 tensor per image, in the maps' input coordinates; returns
    (sum K_i, C, H, W) in image order, differentiable with respect to the maps.
    ``output_size``: (H, W), or one number for a square.
    """

    def __init__(self, output_size, spatial_scale, sampling_ratio):
        super().__init__()
        square = isinstance(output_size, int)
        self.output_size = (output_size, output_size) if square else tuple(output_size)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, features, boxes):
        rois = [torch.cat([b.new_zeros(len(b), 1), b], 1) for b in boxes]
        return _ParallelRoIAlign.apply(self, rois, *features)

    def _pieces(self, rois):
        """[(image, rois)]: about as many pieces as threads, never splitting below 8 RoIs."""
        threads = 1 if rois[0].is_cuda else torch.get_num_threads()
        per_image = max(1, threads // len(rois))
        return [
            (i, chunk)
            for i, r in enumerate(rois)
            for chunk in (r.chunk(min(per_image, max(1, len(r) // 8))) if len(r) else [r])
        ]

    def _op(self, feature, rois):
        h, w = self.output_size
        return torch.ops.torchvision.roi_align(
            feature, rois, self.spatial_scale, h, w, self.sampling_ratio, False
        )

    def _op_backward(self, grad, rois, shape):
        out_h, out_w = self.output_size
        n, c, h, w = shape
        return torch.ops.torchvision._roi_align_backward(
            grad, rois, self.spatial_scale, out_h, out_w, n, c, h, w, self.sampling_ratio, False
        )


def _run(jobs, fn):
    """``fn(*job)`` for every job, in parallel CPU threads when there are several."""
    if len(jobs) < 2 or torch.get_num_threads() < 2 or jobs[0][0].is_cuda:
        return [fn(*job) for job in jobs]
    return list(_executor(torch.get_num_threads()).map(lambda job: fn(*job), jobs))


@functools.cache
def _executor(threads):
    return ThreadPoolExecutor(threads, thread_name_prefix="roi_align")


class _ParallelRoIAlign(torch.autograd.Function):
    """Computed in fp32 (as torchvision's autocast rule), returned in the maps' dtype."""

    @staticmethod
    def forward(ctx, layer, rois, *features):
        pieces = layer._pieces(rois)
        ctx.layer, ctx.pieces = layer, pieces
        ctx.shapes = [f.shape for f in features]
        ctx.dtypes = [f.dtype for f in features]
        maps = [f.float() for f in features]
        outputs = _run([(maps[i], r.float()) for i, r in pieces], layer._op)
        return torch.cat(outputs).to(features[0].dtype)

    @staticmethod
    def backward(ctx, grad):
        layer, pieces = ctx.layer, ctx.pieces
        grads = grad.float().split([len(r) for _, r in pieces])
        jobs = [(g.contiguous(), r.float(), ctx.shapes[i]) for g, (i, r) in zip(grads, pieces)]
        parts = _run(jobs, layer._op_backward)
        sums = [None] * len(ctx.shapes)
        for (i, _), part in zip(pieces, parts):
            sums[i] = part if sums[i] is None else sums[i] + part
        return None, None, *(s.to(d) for s, d in zip(sums, ctx.dtypes))
