"""A faster copy of a trained SeqNet for inference, at parity with the original function.

Three changes, each measured on the golden weights (2 CPU threads, ``bench/bench_inference.py``):

- every BatchNorm2d is folded into the convolution before it (a frozen BN is an affine map;
  folding removes a full pass over each feature map): ~20% on the backbone and layer4;
- convolution weights and inputs use the channels-last memory format, which oneDNN runs
  much faster on CPUs (and which suits tensor cores on GPUs): another ~1.4x;
- on CPUs, the two layer4 heads run on at most 128 RoIs at a time: the working set stays
  small (layer4 on 300 RoIs 8% faster, on the 1,200 of a batch of 4 images 16%).

RoIAlign runs across threads in the model itself (``seqnet_train.modeling.roi_align``), for
training as well.

Optional faster modes (``INFERENCE.PRECISION`` bf16 / fp16, ``INFERENCE.COMPILE``) run only the
convolutional parts in low precision or compiled; box regression, scores and embeddings stay
fp32 (box deltas decoded in bf16 would be off by pixels). Their accuracy cost is measured by
``bench/bench_inference.py``. On CUDA, ``cuda_graphs`` replays the backbone (static shapes per
frame size) as one CUDA graph; the heads' sizes depend on the data and run as they are.

The copy has no BatchNorm2d left, so it cannot train or load checkpoints: keep the original
for that and call this again after the weights change.
"""

import copy
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from seqnet_train.errors import SeqNetError


def _fuse(conv, bn):
    """``conv`` with ``bn`` folded in, computed in float64 and rounded once to the conv's dtype:
    folded in float32 the boxes of the golden cases moved by 1.03e-3 px, beyond their 1e-3."""
    dtype = conv.weight.dtype
    fused = fuse_conv_bn_eval(copy.deepcopy(conv).double(), copy.deepcopy(bn).double())
    return fused.to(dtype)


def fold_batchnorm(module):
    """Fold each ``conv -> BatchNorm2d`` pair of ResNet blocks and stems, in place."""
    pairs = [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]
    for mod in list(module.modules()):
        for conv, bn in pairs:
            if isinstance(getattr(mod, bn, None), nn.BatchNorm2d):
                setattr(mod, conv, _fuse(getattr(mod, conv), getattr(mod, bn)))
                setattr(mod, bn, nn.Identity())
        down = getattr(mod, "downsample", None)
        if isinstance(down, nn.Sequential) and isinstance(down[1], nn.BatchNorm2d):
            down[0] = _fuse(down[0], down[1])
            down[1] = nn.Identity()
    return module


class Autocast(nn.Module):
    """Run ``module`` under autocast to ``dtype``; outputs (tensors or a dict) back in fp32."""

    def __init__(self, module, dtype):
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, *args):
        device = "cuda" if any(a.is_cuda for a in args if torch.is_tensor(a)) else "cpu"
        # no cast cache: each weight is cast once per call anyway, and a CUDA graph captured
        # with the cache would replay casts into memory freed when the region ends
        with torch.autocast(device, dtype=self.dtype, cache_enabled=False):
            return _fp32(self.module(*args))


def _fp32(out):
    if isinstance(out, dict):
        return type(out)((k, _fp32(v)) for k, v in out.items())
    if isinstance(out, (list, tuple)):
        return type(out)(_fp32(v) for v in out)
    return out.float()


class RoIChunks(nn.Module):
    """``head`` (a dict of per-RoI outputs) run on at most ``size`` RoIs at a time."""

    def __init__(self, head, size=128):
        super().__init__()
        self.head = head
        self.size = size

    def forward(self, x):
        if len(x) <= self.size:
            return self.head(x)
        parts = [self.head(chunk) for chunk in x.split(self.size)]
        return OrderedDict((k, torch.cat([p[k] for p in parts])) for k in parts[0])


class CudaGraphs(nn.Module):
    """``module`` (one tensor in, one out) replayed as a CUDA graph captured once per input
    shape: one launch instead of one per kernel, where shapes repeat (a video's frames)."""

    def __init__(self, module):
        super().__init__()
        self.module = module
        self.graphs = {}  # (shape, stride, dtype): (graph, static input, static output)

    def forward(self, x):
        key = (x.shape, x.stride(), x.dtype)
        if key not in self.graphs:
            static = x.clone()
            side = torch.cuda.Stream()  # warm-up off the capturing stream, as the docs ask
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.module(static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.module(static)
            self.graphs[key] = (graph, static, out)
        graph, static, out = self.graphs[key]
        static.copy_(x)
        graph.replay()
        return out.clone()  # the next replay overwrites ``out``


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def optimize_for_inference(model, precision="fp32", compile=False, cuda_graphs=False):
    """An eval-mode copy of ``model``: BatchNorm folded, channels-last convolutions, RoI heads
    in chunks on CPUs; optionally low-precision or compiled convolutional parts, and on CUDA
    the backbone replayed as CUDA graphs."""
    if precision not in PRECISIONS:
        raise SeqNetError(f"INFERENCE.PRECISION {precision!r} is not one of {list(PRECISIONS)}")
    device = next(model.parameters()).device
    if precision == "fp16" and device.type != "cuda":
        raise SeqNetError("INFERENCE.PRECISION fp16 needs a CUDA device; use bf16 on the CPU")
    if cuda_graphs and (device.type != "cuda" or compile):
        raise SeqNetError("CUDA graphs need the model on a CUDA device, and no torch.compile")
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    heads = fast.roi_heads
    convolutional = [
        (fast, "backbone"),
        (fast.rpn, "head"),
        (heads, "box_head"),
        (heads, "reid_head"),
    ]
    for parent, name in convolutional:
        part = fold_batchnorm(getattr(parent, name)).to(memory_format=torch.channels_last)
        if compile:
            part = torch.compile(part, dynamic=True)
        if PRECISIONS[precision] is not None:
            part = Autocast(part, PRECISIONS[precision])
        if parent is heads and device.type == "cpu":
            part = RoIChunks(part)
        if cuda_graphs and name == "backbone":
            part = CudaGraphs(part)
        setattr(parent, name, part)
    return fast
