"""Training mode: the seven losses on a tiny configuration are finite and can be minimised."""

import math

import pytest
import torch

from seqnet_train.errors import SeqNetError
from tests.tiny import tiny_batch, tiny_model

LOSSES = {
    "loss_rpn_reg", "loss_rpn_cls", "loss_proposal_reg", "loss_proposal_cls",
    "loss_box_reg", "loss_box_cls", "loss_box_reid",
}  # fmt: skip


def test_seven_finite_losses_and_backward():
    model = tiny_model().train()
    losses = model(*tiny_batch())
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.backbone.conv1.weight.grad is None  # the stem is frozen


def test_unfrozen_stem_trains():
    model = tiny_model("MODEL.FREEZE_STEM", "False").train()
    sum(model(*tiny_batch()).values()).backward()
    stem = [model.backbone.conv1.weight, model.backbone.bn1.weight, model.backbone.bn1.bias]
    assert all(p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0 for p in stem)


@pytest.mark.parametrize("size, bins", [("14", (14, 14)), ("[6, 3]", (6, 3))])
def test_square_and_tall_roi_pools_train_and_predict(size, bins):
    """The released square pool, and a tall one (people are tall: POOL_SIZE [H, W] pools them
    in fewer, better-placed bins)."""
    model = tiny_model("MODEL.ROI_HEAD.POOL_SIZE", size).train()
    assert model.roi_heads.box_roi_pool.output_size == bins
    losses = model(*tiny_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    images, _ = tiny_batch(seed=1)
    out = model.eval().predict(images)
    assert len(out) == 2 and all(o["embeddings"].shape[1:] == (256,) for o in out)


@pytest.mark.parametrize("size", ["[6]", "[6, 0]", "[6.5, 3]"])
def test_bad_roi_pool_size_fails_with_a_message(size):
    with pytest.raises(SeqNetError, match="POOL_SIZE"):
        tiny_model("MODEL.ROI_HEAD.POOL_SIZE", size)


def test_loss_weights_apply():
    base = tiny_model(seed=0).train()
    torch.manual_seed(5)
    plain = base(*tiny_batch())
    heavy = tiny_model("SOLVER.LW_PROPOSAL_REG", "20", seed=0).train()
    torch.manual_seed(5)
    weighted = heavy(*tiny_batch())
    doubled = weighted["loss_proposal_reg"].item(), 2 * plain["loss_proposal_reg"].item()
    assert math.isclose(*doubled, rel_tol=1e-5)
    assert math.isclose(weighted["loss_box_cls"].item(), plain["loss_box_cls"].item(), rel_tol=1e-5)


def test_sgd_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_model().train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.003, momentum=0.9)
    images, targets = tiny_batch()
    totals = []
    for _ in range(8):
        torch.manual_seed(0)  # same RoI samples each step: the loss curve is comparable
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        totals.append(loss.item())
    assert totals[-1] < 0.8 * totals[0], totals


def test_images_without_people():
    model = tiny_model().train()
    images, targets = tiny_batch()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_batch_without_labelled_people_has_zero_reid_loss():
    model = tiny_model().train()
    images, targets = tiny_batch()
    for t in targets:
        t["labels"] = torch.full_like(t["labels"], -1)
    losses = model(images, targets)
    assert losses["loss_box_reid"].item() == 0.0
    sum(losses.values()).backward()


def test_identity_outside_lut_is_rejected():
    model = tiny_model().train()  # LUT_SIZE 8
    images, targets = tiny_batch()
    targets[0]["labels"] = torch.tensor([0, 8, -1])
    with pytest.raises(ValueError, match="outside the lookup table"):
        model(images, targets)


def test_forward_in_eval_mode_points_to_predict():
    model = tiny_model().eval()
    with pytest.raises(RuntimeError, match="predict"):
        model(*tiny_batch())


def test_predict_handles_any_batch_and_empty_list():
    model = tiny_model("MODEL.ROI_HEAD.SCORE_THRESH_TEST", "0.0").eval()
    images, _ = tiny_batch(n_images=3)
    assert model.predict([]) == []
    batched = model.predict(images)
    single = [model.predict([img])[0] for img in images]
    assert len(batched) == len(single) == 3
    assert all(len(b["boxes"]) > 0 for b in single)
    for a, b in zip(batched, single, strict=True):  # measured: identical
        assert a.keys() == b.keys() == {"boxes", "scores", "labels", "embeddings"}
        for k in a:
            assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=1e-5)
        torch.testing.assert_close(a["embeddings"], b["embeddings"], rtol=0, atol=1e-5)
