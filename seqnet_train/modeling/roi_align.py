"""torchvision's RoIAlign over one feature map per image: the toolkit's kernels when built.

With ``custom_ops`` built (setup.py), each image's RoIs go to ``torch.ops.custom_ops.roi_align``:
torchvision's values and gradients to the bit, threaded and vectorised over channels on the
CPU (``custom_ops/csrc``), with its own CUDA kernels. Without it (or with
``SEQNET_CUSTOM_OPS=0``) the fallback below runs torchvision's kernel; ``custom_ops`` logs once
which.

Fallback forward: torchvision's CPU kernel runs on one thread, so the work is cut into (image,
chunk of RoIs) pieces that run in parallel threads (the kernel frees the GIL); the values are
torchvision's. Backward: torchvision's CPU kernel recomputes every sample's position for every
channel and scatters one value at a time: 7 ms for 8 RoIs on a 256-channel map, 9x its forward,
a tenth of a demo training step. RoIAlign is linear and its bilinear weights factor into a row
and a column part, so the map's gradient is ``sum_k Wy_k^T G_k Wx_k``: two small matrix
products (einsum) with the same sampling rules. Only the order of the float sums differs.
"""

import functools
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

import custom_ops


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
        custom_ops.enabled()  # says, once, which kernels the model runs on

    def forward(self, features, boxes):
        rois = [torch.cat([b.new_zeros(len(b), 1), b], 1) for b in boxes]
        if custom_ops.enabled(features[0].device.type):
            h, w = self.output_size
            args = (self.spatial_scale, h, w, self.sampling_ratio, False)
            out = [torch.ops.custom_ops.roi_align(f, r, *args) for f, r in zip(features, rois)]
            return out[0] if len(out) == 1 else torch.cat(out)
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

    def _map_gradient(self, grad, rois, shape):
        """(1, C, H, W) gradient of one image's map from its RoIs' (K, C, h, w) gradients."""
        if not len(rois):
            return grad.new_zeros(shape)
        out_h, out_w = self.output_size
        x1, y1, x2, y2 = (rois[:, 1:] * self.spatial_scale).unbind(1)  # aligned=False
        rows = _axis_weights(y1, (y2 - y1).clamp(min=1), out_h, self.sampling_ratio, shape[2])
        cols = _axis_weights(x1, (x2 - x1).clamp(min=1), out_w, self.sampling_ratio, shape[3])
        return torch.einsum("kph,kcpq,kqw->chw", rows, grad, cols).unsqueeze(0)


def _axis_weights(start, size, bins, sampling_ratio, length):
    """(K, bins, length): each output bin's bilinear weights along one axis, averaged over its
    samples, by torchvision's rules (``roi_align_kernel.cpp``): ``sampling_ratio`` samples a bin,
    or ceil(bin size) when it is 0; samples beyond [-1, length] weigh nothing; the others are
    clamped into the map."""
    bin_size = size / bins
    if sampling_ratio > 0:
        grid = torch.full_like(size, sampling_ratio, dtype=torch.long)
    else:
        grid = torch.ceil(bin_size).long()
    i = torch.arange(int(grid.max()), device=size.device)
    b = torch.arange(bins, device=size.device)
    bin_size, grid3 = bin_size[:, None, None], grid[:, None, None]
    pos = start[:, None, None] + b[:, None] * bin_size + (i + 0.5) * bin_size / grid3
    weight = ((pos >= -1) & (pos <= length) & (i < grid3)) / grid3
    pos = pos.clamp(min=0)
    low = pos.long().clamp(max=length - 1)
    high = (low + 1).clamp(max=length - 1)
    frac = pos - low  # at the last row/column low == high: the weights add up to ``weight``
    out = pos.new_zeros(len(size), bins, length)
    out.scatter_add_(2, low, weight * (1 - frac))
    return out.scatter_add_(2, high, weight * frac)


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
        ctx.layer, ctx.rois = layer, rois
        ctx.shapes = [f.shape for f in features]
        ctx.dtypes = [f.dtype for f in features]
        maps = [f.float() for f in features]
        outputs = _run([(maps[i], r.float()) for i, r in pieces], layer._op)
        return torch.cat(outputs).to(features[0].dtype)

    @staticmethod
    def backward(ctx, grad):
        grads = grad.float().split([len(r) for r in ctx.rois])
        return (
            None,
            None,
            *(
                ctx.layer._map_gradient(g, r.float(), shape).to(dtype)
                for g, r, shape, dtype in zip(grads, ctx.rois, ctx.shapes, ctx.dtypes)
            ),
        )
