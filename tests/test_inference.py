"""The fast inference copy: same outputs as the model it copies; optional modes are opt-in.

The optional modes (bf16, torch.compile) are compared with the fp32 copy on hand-made
proposals, with every NMS keeping all boxes in their order: one output row per proposal in the
same order in both runs, so that a difference is the mode's, not a flipped NMS or top-k choice
among the near-tied scores of an untrained model.
"""

import copy

import pytest
import torch

from seqnet_train.errors import SeqNetError
from seqnet_train.modeling import roi_heads
from seqnet_train.modeling.inference import Autocast, CudaGraphs, optimize_for_inference
from tests.tiny import tiny_batch, tiny_model

# bf16 costs measured on this model and batch (seed 0; AMD EPYC with AVX512-BF16, torch 2.14.1):
# boxes 0.28 px, scores 1.4e-4, embeddings 3.3e-3 (elements ~0.04), RPN head outputs 7.6e-4.
# Tolerances: about 3x that.
BF16_TOL = {"boxes": 1.0, "scores": 5e-4, "embeddings": 1e-2}
BF16_RPN_TOL = 3e-3
# torch.compile measured: identical outputs here (inductor calls the same convolution kernels);
# generated code may reorder fp32 arithmetic elsewhere, so the fast copy's tolerances.
COMPILE_TOL = {"boxes": 1e-3, "scores": 1e-5, "embeddings": 1e-5}
QUERY_BOXES = [torch.tensor([[10.0, 10.0, 60.0, 100.0], [70.0, 5.0, 110.0, 90.0]])] * 2


@pytest.fixture(scope="module")
def model():
    return tiny_model("MODEL.ROI_HEAD.SCORE_THRESH_TEST", "0.0").eval()


def _max_diffs(want, got):
    """Per-key max difference of two predict() outputs, after checking counts and shapes."""
    assert len(want) == len(got) > 0
    diffs = {k: 0.0 for k in ("boxes", "scores", "embeddings")}
    for w, g in zip(want, got, strict=True):
        assert len(w["boxes"]) > 0
        for k in diffs:
            assert g[k].shape == w[k].shape and g[k].dtype == w[k].dtype == torch.float32, k
            diffs[k] = max(diffs[k], (g[k] - w[k]).abs().max().item())
    return diffs


def _embed_diff(want, got):
    assert len(want) == len(got) > 0
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype == torch.float32
    return max((g - w).abs().max().item() for w, g in zip(want, got))


def test_fast_copy_matches_and_leaves_the_original_alone(model):
    images, _ = tiny_batch(n_images=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    want, got = model.predict(images), fast.predict(images)
    assert len(want) == len(got) == 3
    # measured: boxes 2.5e-4 px, scores 1.2e-7, embeddings 1.5e-6
    diffs = _max_diffs(want, got)
    assert diffs["boxes"] <= 1e-3 and diffs["scores"] <= 1e-5, diffs
    assert diffs["embeddings"] <= 1e-5, diffs
    boxes = [torch.tensor([[10.0, 10.0, 60.0, 100.0]])] * 3
    assert _embed_diff(model.embed_boxes(images, boxes), fast.embed_boxes(images, boxes)) <= 1e-5


def _hand_proposals():
    """24 boxes of varied sizes and places, in the transformed image's pixels."""
    xy = [(x, y) for x in range(0, 120, 15) for y in range(0, 60, 20)]
    return torch.tensor([[x, y, x + 25 + y / 4, y + 50 + x / 3] for x, y in xy])


def _on_hand_proposals(net, images, monkeypatch):
    """predict() on the hand-made proposals, every NMS keeping all boxes in order."""
    # the name the heads call (custom_ops' NMS, or torchvision's where it is not built)
    monkeypatch.setattr(roi_heads, "batched_nms", lambda boxes, *_: torch.arange(len(boxes)))
    net.rpn.forward = lambda image_list, features: (
        [_hand_proposals()] * len(image_list.image_sizes),
        {},
    )
    try:
        out = net.predict(images)
    finally:
        del net.rpn.forward
    assert all(len(o["boxes"]) == len(_hand_proposals()) for o in out)
    return out


def _convolutional_parts(fast):
    heads = fast.roi_heads  # RoIChunks around the heads on CPUs
    return {"backbone": fast.backbone, "rpn.head": fast.rpn.head,
            "box_head": heads.box_head.head, "reid_head": heads.reid_head.head}  # fmt: skip


def test_bf16_mode_runs_in_bf16_within_its_measured_cost(model, monkeypatch):
    images, _ = tiny_batch(n_images=2)
    fp32, bf16 = optimize_for_inference(model), optimize_for_inference(model, "bf16")
    conv_dtypes = {}
    for name, part in _convolutional_parts(bf16).items():
        assert isinstance(part, Autocast) and part.dtype == torch.bfloat16, name
        conv = next(m for m in part.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, i, out, n=name: conv_dtypes.update({n: out.dtype}))

    diffs = _max_diffs(
        _on_hand_proposals(fp32, images, monkeypatch), _on_hand_proposals(bf16, images, monkeypatch)
    )
    diffs["query"] = _embed_diff(
        fp32.embed_boxes(images, QUERY_BOXES), bf16.embed_boxes(images, QUERY_BOXES)
    )
    image_list, _ = fp32.transform(images[:1])
    features = [fp32.backbone(image_list.tensors)]
    rpn_want, rpn_got = fp32.rpn.head(features), bf16.rpn.head(features)
    rpn_pairs = [(w, g) for ws, gs in zip(rpn_want, rpn_got, strict=True) for w, g in zip(ws, gs)]
    assert len(rpn_pairs) == 2 and all(g.dtype == torch.float32 for _, g in rpn_pairs)
    diffs["rpn"] = max((g - w).abs().max().item() for w, g in rpn_pairs)

    assert conv_dtypes == dict.fromkeys(_convolutional_parts(bf16), torch.bfloat16)
    assert all(d > 0 for d in diffs.values()), diffs  # bf16 did run: outputs differ from fp32
    for k, tol in BF16_TOL.items():
        assert diffs[k] <= tol, (k, diffs)
    assert diffs["query"] <= BF16_TOL["embeddings"] and diffs["rpn"] <= BF16_RPN_TOL, diffs


@pytest.mark.slow
def test_compiled_copy_gives_the_same_outputs(model, monkeypatch):
    """INFERENCE.COMPILE: torch.compile of the convolutional parts, same outputs (CPU)."""
    images, _ = tiny_batch(n_images=2)
    eager, compiled = optimize_for_inference(model), optimize_for_inference(model, compile=True)
    for name, part in _convolutional_parts(compiled).items():
        assert isinstance(part, torch._dynamo.eval_frame.OptimizedModule), name
    torch._dynamo.utils.counters.clear()
    diffs = _max_diffs(
        _on_hand_proposals(eager, images, monkeypatch),
        _on_hand_proposals(compiled, images, monkeypatch),
    )
    diffs["query"] = _embed_diff(
        eager.embed_boxes(images, QUERY_BOXES), compiled.embed_boxes(images, QUERY_BOXES)
    )
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 4  # one per part at least
    for k, tol in COMPILE_TOL.items():
        assert diffs[k] <= tol, (k, diffs)
    assert diffs["query"] <= COMPILE_TOL["embeddings"], diffs


def test_unknown_or_unavailable_precision(model):
    with pytest.raises(SeqNetError, match="not one of"):
        optimize_for_inference(model, "int4")
    with pytest.raises(SeqNetError, match="needs a CUDA device"):
        optimize_for_inference(model, "fp16")
    with pytest.raises(SeqNetError, match="CUDA graphs need"):
        optimize_for_inference(model, cuda_graphs=True)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graphs_replay_the_backbone_exactly(model, precision):
    """The backbone replayed as CUDA graphs, one per frame shape, gives the outputs of the same
    copy run kernel by kernel; a graph is reused for frames of its shape."""
    on_gpu = copy.deepcopy(model).cuda()
    plain = optimize_for_inference(on_gpu, precision)
    graphed = optimize_for_inference(on_gpu, precision, cuda_graphs=True)
    assert isinstance(graphed.backbone, CudaGraphs)
    images, _ = tiny_batch(n_images=3)
    images = [im.cuda() for im in images]
    for _ in range(2):  # capture, then replay
        diffs = _max_diffs(plain.predict(images), graphed.predict(images))
        assert diffs["boxes"] <= 1e-3 and diffs["scores"] <= 1e-5, diffs
        assert diffs["embeddings"] <= 1e-5, diffs
    shapes = {tuple(plain.transform([im])[0].tensors.shape) for im in images}
    assert len(graphed.backbone.graphs) == len(shapes)
