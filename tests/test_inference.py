"""The fast inference copy: same outputs as the model it copies; optional modes are opt-in."""

import pytest
import torch

from seqnet_train.errors import SeqNetError
from seqnet_train.modeling.inference import optimize_for_inference
from tests.tiny import tiny_batch, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("MODEL.ROI_HEAD.SCORE_THRESH_TEST", "0.0").eval()


def test_fast_copy_matches_and_leaves_the_original_alone(model):
    images, _ = tiny_batch(n_images=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for want, got in zip(model.predict(images), fast.predict(images)):
        assert want["boxes"].shape == got["boxes"].shape and len(want["boxes"]) > 0
        torch.testing.assert_close(got["boxes"], want["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(got["embeddings"], want["embeddings"], rtol=0, atol=1e-4)
    boxes = [torch.tensor([[10.0, 10.0, 60.0, 100.0]])] * 3
    for want, got in zip(model.embed_boxes(images, boxes), fast.embed_boxes(images, boxes)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_bf16_mode_keeps_fp32_outputs_close(model):
    images, _ = tiny_batch(n_images=2)
    boxes = [torch.tensor([[10.0, 10.0, 60.0, 100.0]])] * 2
    fast = optimize_for_inference(model, "bf16")
    for want, got in zip(model.embed_boxes(images, boxes), fast.embed_boxes(images, boxes)):
        assert got.dtype == torch.float32
        assert (got - want).abs().max() < 0.1
    out = fast.predict(images)
    assert all(o["boxes"].dtype == torch.float32 and len(o["boxes"]) > 0 for o in out)


def test_unknown_or_unavailable_precision(model):
    with pytest.raises(SeqNetError, match="not one of"):
        optimize_for_inference(model, "int4")
    with pytest.raises(SeqNetError, match="needs a CUDA device"):
        optimize_for_inference(model, "fp16")
