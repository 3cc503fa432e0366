"""Our RoIAlign gives torchvision's values and gradients, whatever the split and sampling."""

import functools

import pytest
import torch
from torchvision.ops import roi_align

from seqnet_train.modeling.roi_align import RoIAlign


def _boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 250 + 4  # some beyond the map, some 1-5 samples a bin
    return torch.cat([xy, xy + wh], 1)


def _reference(features, boxes, size=7, sampling_ratio=2):
    return torch.cat(
        [roi_align(f, [b], size, 1 / 16, sampling_ratio) for f, b in zip(features, boxes)]
    )


@pytest.mark.parametrize("counts", [[40], [16, 0, 9, 16], [0]])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", [7, (6, 3)])
@pytest.mark.parametrize("sampling_ratio", [2, 0])  # 0: ceil(bin size) samples, per RoI
def test_values_and_gradients_match_torchvision(counts, threads, size, sampling_ratio):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        maps = [torch.randn(1, 8, 15 + i, 20, generator=g) for i in range(len(counts))]
        boxes = [_boxes(n, i) for i, n in enumerate(counts)]
        results = []
        reference = functools.partial(_reference, size=size, sampling_ratio=sampling_ratio)
        for fn in (reference, RoIAlign(size, 1 / 16, sampling_ratio)):
            features = [m.clone().requires_grad_() for m in maps]
            out = fn(features, boxes)
            out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
            results.append((out, [f.grad for f in features]))
        (ref, ref_grads), (ours, grads) = results
        height, width = (size, size) if isinstance(size, int) else size
        assert ours.shape == ref.shape == (sum(counts), 8, height, width)
        assert torch.equal(ours, ref)
        for a, b in zip(grads, ref_grads, strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    finally:
        torch.set_num_threads(old)


def test_low_precision_maps_pool_in_fp32():
    maps = [torch.randn(1, 8, 15, 20).bfloat16().requires_grad_()]
    boxes = [_boxes(12, 0)]
    out = RoIAlign(7, 1 / 16, 2)(maps, boxes)
    assert out.dtype == torch.bfloat16
    ref = roi_align(maps[0].float(), boxes, 7, 1 / 16, 2).bfloat16()
    assert torch.equal(out, ref)
    out.float().sum().backward()
    assert maps[0].grad.dtype == torch.bfloat16
