"""custom_ops' kernels give torchvision's results: RoIAlign values and gradients to the bit
(every sampling mode, both alignments, NCHW and channels-last maps, boxes empty, degenerate or
beyond the map), NMS / batched NMS / TopK + NMS to the index (ties included); the model runs
them and falls back to torchvision's cleanly; the CUDA sources compile where nvcc is.

Tests that need the built extension skip with the reason where it is not built, except
``test_extension_is_built``, which fails where a C++ compiler is there to build it.
"""

import importlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.ops import boxes as box_ops

import custom_ops
from custom_ops import toolkit

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "custom_ops" / "csrc"
built = pytest.mark.skipif(
    not custom_ops.status()["cpu"], reason=f"custom_ops: {custom_ops.status()['reason']}"
)
gpu = pytest.mark.cuda  # skipped where no GPU is (conftest.py)


def _rois(n_images, per_image, seed, dtype=torch.float32, height=15, width=20, scale=16):
    """(K, 5) boxes of every kind: inside, beyond the map on each side, tiny, zero-size,
    inverted (x2 < x1), and one box per image exactly on the map's border."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n_images):
        k = per_image
        xy = torch.rand(k, 2, generator=g) * torch.tensor([width, height]) * scale * 1.4
        xy -= 0.2 * torch.tensor([width, height]) * scale
        wh = torch.rand(k, 2, generator=g) * 250 - 20  # some negative: inverted boxes
        wh[: k // 8] = 0  # zero-size
        wh[k // 8 : k // 4] = torch.rand(k // 4 - k // 8, 2, generator=g)  # below a pixel
        boxes = torch.cat([xy, xy + wh], 1)
        border = torch.tensor([[0.0, 0.0, width * scale, height * scale]])
        boxes = torch.cat([boxes, border])
        rows.append(torch.cat([torch.full((len(boxes), 1), float(i)), boxes], 1))
    return torch.cat(rows).to(dtype)


def _both(fn, map_, rois, grad_dtype=None, **kwargs):
    """fn's output and the map's gradient for a fixed random output gradient (its values
    rounded to ``grad_dtype`` first, if given)."""
    x = map_.detach().clone().requires_grad_()
    out = fn(x, rois, **kwargs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(g.to(grad_dtype or out.dtype).to(out))
    return out.detach(), x.grad


def _custom(x, rois, output_size, scale, sampling_ratio, aligned):
    h, w = output_size
    return torch.ops.custom_ops.roi_align(x, rois, scale, h, w, sampling_ratio, aligned)


def _torchvision(x, rois, output_size, scale, sampling_ratio, aligned):
    h, w = output_size
    return torch.ops.torchvision.roi_align(x, rois, scale, h, w, sampling_ratio, aligned)


def test_extension_is_built():
    if not custom_ops.status()["cpu"] and shutil.which(os.environ.get("CXX", "c++")):
        pytest.fail(
            f"custom_ops is {custom_ops.status()['reason']} although a C++ compiler is here: "
            "`pip install --no-build-isolation -e .` (make venv) prints why"
        )


# ------------------------------------------------------------------------------ RoIAlign -- #
@built
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 3, 0, -1])  # fixed, and adaptive (<= 0)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [8, 70])  # a tail only; full blocks and a tail
def test_roi_align_matches_torchvision_bitwise(
    dtype, aligned, sampling_ratio, channels_last, channels
):
    g = torch.Generator().manual_seed(channels)
    map_ = torch.randn(3, channels, 15, 20, generator=g, dtype=dtype)
    if channels_last:
        map_ = map_.contiguous(memory_format=torch.channels_last)
    rois = _rois(3, 24, seed=channels, dtype=dtype)
    args = dict(output_size=(7, 5), scale=1 / 16, sampling_ratio=sampling_ratio, aligned=aligned)
    out, grad = _both(_custom, map_, rois, **args)
    ref, ref_grad = _both(_torchvision, map_, rois, **args)
    assert out.shape == ref.shape == (len(rois), channels, 7, 5)
    assert out.is_contiguous()
    assert torch.equal(out, ref)
    assert torch.equal(grad, ref_grad)
    assert grad.is_contiguous(memory_format=torch.channels_last) == channels_last


@built
def test_roi_align_empty_rois_and_strided_gradients():
    map_ = torch.randn(2, 16, 9, 11, requires_grad=True)
    rois = torch.zeros(0, 5)
    out = torch.ops.custom_ops.roi_align(map_, rois, 0.5, 3, 3, 2, False)
    assert out.shape == (0, 16, 3, 3)
    out.sum().backward()
    assert torch.equal(map_.grad, torch.zeros_like(map_))
    # a gradient with zero strides (from .sum()) and a transposed one
    rois = _rois(2, 8, seed=3, height=9, width=11, scale=2)
    for make_grad in (lambda o: torch.ones(()).expand(o.shape), lambda o: torch.randn(
        o.shape[::-1]).permute(3, 2, 1, 0)):  # fmt: skip
        results = []
        for op in ("custom_ops", "torchvision"):
            x = map_.detach().clone().requires_grad_()
            o = getattr(torch.ops, op).roi_align(x, rois, 0.5, 3, 3, 2, False)
            torch.manual_seed(0)
            o.backward(make_grad(o))
            results.append(x.grad)
        assert torch.equal(*results)


@built
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_roi_align_low_precision_rounds_the_fp32_result_once(dtype):
    """bf16 / fp16 maps, fp32 boxes: accumulated in fp32, rounded once. Against torchvision in
    fp32 on the same (rounded) values: equal to the bit; against the unrounded map, the
    dtype's rounding (measured: relative error <= 2^-8 for bf16, 2^-11 for fp16)."""
    g = torch.Generator().manual_seed(0)
    full = torch.randn(2, 48, 15, 20, generator=g).contiguous(memory_format=torch.channels_last)
    rois = _rois(2, 16, seed=5)
    low = full.to(dtype)
    args = dict(output_size=(7, 7), scale=1 / 16, sampling_ratio=2, aligned=False)
    out, grad = _both(_custom, low, rois, **args)
    ref, ref_grad = _both(_torchvision, low.float(), rois, grad_dtype=dtype, **args)
    assert out.dtype == grad.dtype == dtype
    assert torch.equal(out, ref.to(dtype))
    assert torch.equal(grad, ref_grad.to(dtype))
    exact = _torchvision(full, rois, **args)
    eps = {torch.bfloat16: 2**-8, torch.float16: 2**-11}[dtype]
    # map rounding (half an ulp) plus output rounding (half an ulp), on values of any sign
    tol = 2 * eps * exact.abs().amax() + 1e-6
    assert (out.float() - exact).abs().max() <= tol


@built
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("channels_last", [False, True])
def test_roi_align_gradcheck(aligned, sampling_ratio, channels_last):
    g = torch.Generator().manual_seed(1)
    map_ = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    if channels_last:
        map_ = map_.contiguous(memory_format=torch.channels_last)
    map_.requires_grad_()
    rois = torch.tensor(
        [[0, 3.3, 4.1, 40.7, 60.2], [1, -10.0, 7.0, 30.0, 120.0], [0, 50.0, 50.0, 51.0, 52.0]],
        dtype=torch.float64,
    )

    def fn(x):
        return torch.ops.custom_ops.roi_align(x, rois, 1 / 8, 3, 2, sampling_ratio, aligned)

    assert torch.autograd.gradcheck(fn, (map_,))


@built
def test_roi_align_registrations():
    """Schema, fake kernel, autograd registration and AOT dispatch, as torch checks them."""
    map_ = torch.randn(2, 5, 8, 9, requires_grad=True)
    rois = _rois(2, 4, seed=2, height=8, width=9, scale=4)
    torch.library.opcheck(
        torch.ops.custom_ops.roi_align.default, (map_, rois, 0.25, 3, 3, 2, False)
    )
    grad = torch.randn(len(rois), 5, 3, 3)
    torch.library.opcheck(
        torch.ops.custom_ops._roi_align_backward.default,
        (grad, rois, 0.25, 3, 3, 2, 5, 8, 9, 2, False, True),
    )


@built
def test_roi_align_compiles_and_exports():
    map_ = torch.randn(1, 6, 10, 12)
    rois = _rois(1, 6, seed=4, height=10, width=12, scale=8)

    def fn(x, r):
        return torch.ops.custom_ops.roi_align(x, r, 1 / 8, 4, 4, 2, False).square().sum()

    x = map_.clone().requires_grad_()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    compiled(x, rois).backward()
    y = map_.clone().requires_grad_()
    fn(y, rois).backward()
    assert torch.equal(x.grad, y.grad)

    class Pool(torch.nn.Module):
        def forward(self, x, r):
            return torch.ops.custom_ops.roi_align(x, r, 1 / 8, 4, 4, 2, False)

    exported = torch.export.export(Pool(), (map_, rois))
    assert "custom_ops.roi_align" in str(exported.graph)
    assert torch.equal(exported.module()(map_, rois), Pool()(map_, rois))


# ------------------------------------------------------------------------------ NMS -------- #
def _nms_cases():
    """(name, boxes, scores): random, heavy ties, identical boxes, degenerate boxes, 10k."""
    g = torch.Generator().manual_seed(0)

    def boxes(n, spread=500.0, size=200.0):
        xy = torch.rand(n, 2, generator=g) * spread
        return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * size + 1], 1)

    cases = [("empty", torch.zeros(0, 4), torch.zeros(0)), ("one", boxes(1), torch.rand(1))]
    cases.append(("random", boxes(300), torch.rand(300, generator=g)))
    b = boxes(500, spread=200)
    cases.append(("score ties", b, torch.randint(0, 5, (500,), generator=g).float()))
    b = boxes(1).repeat(64, 1)
    cases.append(("identical boxes, equal scores", b, torch.ones(64)))
    b = torch.cat([boxes(200, spread=100), boxes(1).repeat(200, 1)])
    cases.append(("identical boxes, ties", b, torch.randint(0, 3, (400,), generator=g).float()))
    b = boxes(100)
    b[::3, 2:] = b[::3, :2]  # zero area: IoU 0/0
    cases.append(("zero-area boxes", b, torch.rand(100, generator=g)))
    cases.append(("10k candidates", boxes(10_000, spread=1500), torch.rand(10_000, generator=g)))
    return cases


@built
@pytest.mark.parametrize("case", _nms_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(case, iou):
    _, boxes, scores = case
    ref = torchvision.ops.nms(boxes, scores, iou)
    assert torch.equal(torch.ops.custom_ops.nms(boxes, scores, iou), ref)
    assert torch.equal(torch.ops.custom_ops.nms(boxes, scores, iou, 7), ref[:7])
    assert torch.equal(
        custom_ops.nms(boxes.double(), scores.double(), iou), ref_double(boxes, scores, iou)
    )


def ref_double(boxes, scores, iou):
    return torchvision.ops.nms(boxes.double(), scores.double(), iou)


@built
@pytest.mark.parametrize("case", _nms_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("classes", [1, 3])
def test_batched_nms_matches_torchvision(case, classes):
    """Both of torchvision's strategies (boxes shifted apart up to 1000 boxes on the CPU, one
    NMS per class above), capped or not."""
    _, boxes, scores = case
    idxs = torch.arange(len(boxes)) % classes
    ref = box_ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(custom_ops.batched_nms(boxes, scores, idxs, 0.5), ref)
    assert torch.equal(custom_ops.batched_nms(boxes, scores, idxs, 0.5, max_keep=20), ref[:20])


@built
@pytest.mark.parametrize("case", _nms_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("k", [5, 6000])  # 6000: the RPN's default, above TensorRT's TopK
def test_topk_nms_matches_topk_then_nms(case, k):
    _, boxes, scores = case
    top = scores.topk(min(k, len(scores)))[1]
    ref = top[torchvision.ops.nms(boxes[top], scores[top], 0.7)][:300]
    assert torch.equal(torch.ops.custom_ops.topk_nms(boxes, scores, k, 0.7, 300), ref)
    assert torch.equal(custom_ops.topk_nms(boxes, scores, k, 0.7, 300), ref)


@built
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_nms_is_torchvisions_under_autocast(dtype):
    """Autocast training hands the NMS bf16 boxes: torchvision's autocast kernel computes it in
    fp32, and so do custom_ops' functions (the C++ kernel itself takes fp32 and fp64)."""
    _, boxes, scores = _nms_cases()[-1]
    low_boxes, low_scores = boxes.to(dtype), scores.to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = torchvision.ops.nms(low_boxes, low_scores, 0.5)
    assert len(ref) > 100
    assert torch.equal(custom_ops.nms(low_boxes, low_scores, 0.5), ref)
    top = low_scores.float().topk(3000)[1]
    want = top[torchvision.ops.nms(low_boxes[top].float(), low_scores[top].float(), 0.7)][:300]
    assert torch.equal(custom_ops.topk_nms(low_boxes, low_scores, 3000, 0.7, 300), want)


@built
def test_nms_registrations():
    boxes, scores = _nms_cases()[3][1:]
    torch.library.opcheck(torch.ops.custom_ops.nms.default, (boxes, scores, 0.5, 10))


# ------------------------------------------------------------------------------ the model -- #
def _tiny_outputs(model, images):
    out = model.predict(images)
    return [(o["boxes"], o["scores"], o["embeddings"]) for o in out]


@built
def test_model_runs_the_custom_kernels_with_identical_results(monkeypatch):
    """A tiny model's detections with the kernels on and off (SEQNET_CUSTOM_OPS=0): equal to the
    bit (RoIAlign and NMS are torchvision's to the bit); training losses too, gradients close
    (the fallback's matrix-product backward sums in another order)."""
    from tests.tiny import tiny_batch, tiny_model

    calls = {"roi_align": 0, "nms": 0}
    real = {name: getattr(torch.ops.custom_ops, name) for name in calls}

    class Counting:
        def __init__(self, name):
            self.name = name

        def __call__(self, *args):
            calls[self.name] += 1
            return real[self.name](*args)

    model = tiny_model().eval()
    images, targets = tiny_batch()
    with monkeypatch.context() as m:
        for name in calls:
            m.setattr(torch.ops.custom_ops, name, Counting(name))
        on = _tiny_outputs(model, images)
    assert calls["roi_align"] >= 2 * len(images) and calls["nms"] >= len(images)
    monkeypatch.setenv(custom_ops.ENV, "0")
    off = _tiny_outputs(model, images)
    for a, b in zip(on, off):
        for x, y in zip(a, b):
            assert torch.equal(x, y)

    losses, grads = [], []
    for setting in ("1", "0"):
        monkeypatch.setenv(custom_ops.ENV, setting)
        model = tiny_model().train()
        step = model(images, targets)
        sum(step.values()).backward()
        losses.append({k: v.item() for k, v in step.items()})
        grads.append([p.grad for p in model.parameters() if p.grad is not None])
    assert losses[0] == losses[1]
    for a, b in zip(*grads):
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-7


@built
@pytest.mark.golden
def test_golden_parity_with_custom_kernels(shared, monkeypatch):
    """The golden case (../shared/parity) through the reference model and the fast copy with the
    custom kernels on: within the parity tolerances of the golden outputs, and equal to the bit
    to the same model on torchvision's kernels. (tests/test_parity.py runs the whole suite on
    whichever kernels are built, so on these where they are.)"""
    from seqnet_train.config import load_cfg
    from seqnet_train.modeling import build_model
    from seqnet_train.modeling.inference import optimize_for_inference
    from tests.test_parity import assert_same_detections

    golden = torch.load(shared / "parity" / "golden_inference.pt", weights_only=True)
    sys.path.insert(0, str(shared / "parity"))
    from fill_weights import fill_

    cfg = load_cfg(None, [str(x) for x in golden["config_overrides"]])
    model = build_model(cfg, load_imagenet=False)
    fill_(model)
    model.eval()
    image = golden["images"][0]
    for net in (model, optimize_for_inference(model)):
        monkeypatch.setenv(custom_ops.ENV, "1")
        assert custom_ops.enabled()
        ours = net.predict([image])[0]
        assert_same_detections(ours, golden["gallery"][0])
        monkeypatch.setenv(custom_ops.ENV, "0")
        theirs = net.predict([image])[0]
        for key in ("boxes", "scores", "embeddings"):
            assert torch.equal(ours[key], theirs[key]), key


def test_fallback_when_the_extension_is_absent(monkeypatch, caplog):
    """No built extension (a failed or skipped build): everything runs on torchvision's
    kernels, says so once, and gives torchvision's results."""
    real_import = importlib.import_module

    def no_extension(name, *args):
        if name.startswith("custom_ops._C"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_extension)
    custom_ops._load.cache_clear()
    custom_ops._say.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="custom_ops"):
            assert not custom_ops.enabled()
            assert not custom_ops.enabled("cuda")
        assert "torchvision's kernels (not built" in caplog.text
        assert caplog.text.count("torchvision's kernels") == 1  # once

        from seqnet_train.modeling.roi_align import RoIAlign

        maps = [torch.randn(1, 8, 15, 20, requires_grad=True)]
        boxes = [_rois(1, 10, seed=0)[:, 1:]]
        out = RoIAlign(7, 1 / 16, 2)(maps, boxes)
        ref = torchvision.ops.roi_align(maps[0], boxes, 7, 1 / 16, 2)
        assert torch.equal(out, ref)
        out.sum().backward()
        b, s = _nms_cases()[3][1:]
        assert torch.equal(custom_ops.nms(b, s, 0.5, 9), torchvision.ops.nms(b, s, 0.5)[:9])
        idxs = torch.arange(len(b)) % 2
        ref = box_ops.batched_nms(b, s, idxs, 0.5)
        assert torch.equal(custom_ops.batched_nms(b, s, idxs, 0.5), ref)
        low = maps[0].detach().bfloat16()
        ref = torchvision.ops.roi_align(low.float(), boxes, 7, 1 / 16, 2).bfloat16()
        assert torch.equal(custom_ops.roi_align(low, boxes, 7, 1 / 16, 2), ref)
    finally:
        monkeypatch.undo()
        custom_ops._load.cache_clear()
        custom_ops._say.cache_clear()
    assert custom_ops.status()["cpu"] == (importlib.util.find_spec("custom_ops._C") is not None)


def test_env_switch_reports_torchvision(monkeypatch):
    monkeypatch.setenv(custom_ops.ENV, "0")
    assert custom_ops.status() == {"cpu": False, "cuda": False, "reason": "SEQNET_CUSTOM_OPS=0"}
    assert not custom_ops.enabled()


@pytest.mark.slow
def test_failed_build_still_installs(tmp_path):
    """setup.py with a compiler that fails: the build warns and succeeds, without the kernels."""
    env = {**os.environ, "CXX": "false", "CC": "false", "SEQNET_BUILD_CUDA": "0"}
    result = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "custom_ops._C not built" in result.stderr
    assert not list((tmp_path / "lib").rglob("_C*.so"))


# ------------------------------------------------------------------------------ CUDA ------- #
CUDA_SOURCES = sorted((CSRC / "cuda").glob("*.cu"))


@pytest.mark.slow
def test_cuda_sources_compile(tmp_path):
    """nvcc compiles every .cu source against this torch's headers (so GPU code cannot rot on
    machines without a GPU). Skips where no CUDA toolkit is found (custom_ops/toolkit.py; the
    pip packages nvidia-cuda-nvcc, nvidia-cuda-runtime, nvidia-cuda-crt and nvidia-cuda-cccl
    provide one) or torch has no CUDA headers."""
    home = toolkit.find_cuda_home()
    if home is None:
        pytest.skip("no CUDA toolkit (nvcc and cuda_runtime.h) found")
    if not torch.version.cuda:
        pytest.skip("torch is a CPU-only build: no CUDA headers to compile against")
    from torch.utils import cpp_extension

    includes = [*cpp_extension.include_paths(), str(CSRC), str(home / "include")]
    import sysconfig

    includes.append(sysconfig.get_paths()["include"])
    for source in CUDA_SOURCES:
        cmd = [str(home / "bin" / "nvcc"), "-c", str(source), "-o", str(tmp_path / "k.o"),
               "-std=c++20", "-O1", "--compiler-options", "-fPIC",
               "-gencode=arch=compute_90,code=sm_90", "-DTORCH_EXTENSION_NAME=_C_cuda",
               *(f"-I{p}" for p in includes)]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{source.name}:\n{result.stderr[-3000:]}"


def test_cuda_kernels_registered_where_built():
    if not custom_ops.status()["cuda"]:
        pytest.skip(f"CUDA kernels: {custom_ops.status()['reason'] or 'not loaded'}")
    for op in ("roi_align", "_roi_align_backward", "nms"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"custom_ops::{op}", "CUDA")


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_roi_align_matches_torchvision(dtype, aligned, sampling_ratio, channels_last):
    if not custom_ops.status()["cuda"]:
        pytest.fail(f"a GPU is here but the CUDA kernels are not: {custom_ops.status()['reason']}")
    g = torch.Generator().manual_seed(0)
    map_ = torch.randn(2, 40, 15, 20, generator=g)
    rois = _rois(2, 24, seed=0)
    if channels_last:
        map_ = map_.contiguous(memory_format=torch.channels_last)
    args = dict(output_size=(7, 5), scale=1 / 16, sampling_ratio=sampling_ratio, aligned=aligned)
    ref, ref_grad = _both(_torchvision, map_.double(), rois.double(), **args)  # CPU, double
    out, grad = _both(_custom, map_.cuda().to(dtype), rois.cuda(), **args)
    tol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2}[dtype]
    assert torch.allclose(out.double().cpu(), ref, atol=tol, rtol=tol)
    assert torch.allclose(grad.double().cpu(), ref_grad, atol=tol, rtol=tol)
    tv, tv_grad = _both(_torchvision, map_.cuda().to(dtype), rois.cuda().to(dtype), **args)
    if dtype != torch.float16:  # torchvision's fp16 kernel rounds its boxes and sums to fp16
        assert torch.allclose(out, tv, atol=tol, rtol=tol)
        assert torch.allclose(grad, tv_grad, atol=tol, rtol=tol)


@gpu
@pytest.mark.parametrize("case", _nms_cases(), ids=lambda c: c[0])
def test_cuda_nms_matches_torchvision(case):
    if not custom_ops.status()["cuda"]:
        pytest.fail(f"a GPU is here but the CUDA kernels are not: {custom_ops.status()['reason']}")
    _, boxes, scores = case
    boxes, scores = boxes.cuda(), scores.cuda()
    for iou in (0.3, 0.7):
        ref = torchvision.ops.nms(boxes, scores, iou)
        assert torch.equal(torch.ops.custom_ops.nms(boxes, scores, iou), ref)
        assert torch.equal(torch.ops.custom_ops.nms(boxes, scores, iou, 5), ref[:5])
        idxs = torch.arange(len(boxes), device="cuda") % 3
        ref = box_ops.batched_nms(boxes, scores, idxs, iou)
        assert torch.equal(custom_ops.batched_nms(boxes, scores, idxs, iou), ref)
