"""Released-format checkpoints and bare state dicts load, old RPN names included."""

import logging

import pytest
import torch

from seqnet_train.errors import SeqNetError
from seqnet_train.modeling import load_checkpoint
from tests.tiny import tiny_batch, tiny_model


def _trained_state():
    model = tiny_model(seed=1).train()
    images, targets = tiny_batch()
    sum(model(images, targets).values()).backward()  # OIM memory and pointer move
    return model.state_dict()


def _outputs(model):
    images, _ = tiny_batch(seed=3)
    model.eval()
    return model.embed_boxes(images, [torch.tensor([[10.0, 10.0, 60.0, 100.0]])] * 2)


def _save(obj, path):
    torch.save(obj, path)
    return path


def test_released_layout_with_old_rpn_names_and_no_pointer(tmp_path):
    sd = _trained_state()
    released = {k: v for k, v in sd.items() if k != "roi_heads.reid_loss.cq_ptr"}
    for kind in ("weight", "bias"):
        released[f"rpn.head.conv.{kind}"] = released.pop(f"rpn.head.conv.0.0.{kind}")
    path = _save(
        {"model": released, "optimizer": {}, "lr_scheduler": {}, "epoch": 3}, tmp_path / "e.pth"
    )

    model = tiny_model(seed=2)
    ckpt = load_checkpoint(model, path)
    assert ckpt["epoch"] == 3
    for key, value in model.state_dict().items():
        if key != "roi_heads.reid_loss.cq_ptr":
            assert torch.equal(value, sd[key]), key
    reference = tiny_model(seed=1)
    reference.load_state_dict(sd)
    ours, theirs = _outputs(model), _outputs(reference)
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_bare_state_dict_round_trip(tmp_path):
    sd = _trained_state()
    model = tiny_model(seed=2)
    load_checkpoint(model, _save(sd, tmp_path / "bare.pth"))
    assert int(model.roi_heads.reid_loss.cq_ptr) == int(sd["roi_heads.reid_loss.cq_ptr"]) > 0
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


def test_other_oim_sizes_load_for_inference_with_a_warning(tmp_path, caplog):
    sd = _trained_state()
    path = _save({"model": sd}, tmp_path / "e.pth")
    model = tiny_model("MODEL.LOSS.LUT_SIZE", "20", "MODEL.LOSS.CQ_SIZE", "30")
    with caplog.at_level(logging.WARNING):
        load_checkpoint(model, path)
    assert "roi_heads.reid_loss.lut" in caplog.text and "roi_heads.reid_loss.cq" in caplog.text
    assert model.roi_heads.reid_loss.lut.shape == (20, 256)
    assert torch.equal(model.backbone.conv1.weight, sd["backbone.conv1.weight"])


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = _trained_state()
    sd.pop("roi_heads.embedding_head.rescaler.weight")
    sd["roi_heads.extra.weight"] = torch.zeros(1)
    with pytest.raises(SeqNetError, match="missing: roi_heads.embedding_head.rescaler.weight.*"
                       "unexpected: roi_heads.extra.weight"):  # fmt: skip
        load_checkpoint(tiny_model(), _save(sd, tmp_path / "bad.pth"))


def test_checkpoint_of_another_backbone_is_an_error(tmp_path):
    sd = _trained_state()
    with pytest.raises(SeqNetError, match="does not fit"):
        load_checkpoint(tiny_model("MODEL.BACKBONE", "resnet34"), _save(sd, tmp_path / "r18.pth"))


def test_resnet10_builds_trains_and_warns_of_random_init(tmp_path, caplog):
    """One BasicBlock per stage: a fraction of ResNet-18, the same heads and state-dict names."""
    from seqnet_train.config import load_cfg
    from seqnet_train.modeling import build_model
    from tests.tiny import TINY_OPTS

    with caplog.at_level(logging.WARNING):
        model = build_model(load_cfg(None, TINY_OPTS + ["MODEL.BACKBONE", "resnet10"]))
    assert "resnet10 has no published ImageNet weights" in caplog.text
    assert [len(model.backbone.layer3), len(model.roi_heads.reid_head.layer4)] == [1, 1]
    r18 = sum(p.numel() for p in tiny_model().parameters())
    assert sum(p.numel() for p in model.parameters()) < 0.65 * r18
    images, targets = tiny_batch()
    losses = model.train()(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    load_checkpoint(model, _save(model.state_dict(), tmp_path / "r10.pth"))
    with pytest.raises(SeqNetError, match="does not fit"):
        load_checkpoint(tiny_model(), tmp_path / "r10.pth")


def test_unreadable_checkpoints(tmp_path):
    with pytest.raises(SeqNetError, match="not found"):
        load_checkpoint(tiny_model(), tmp_path / "nope.pth")
    truncated = tmp_path / "truncated.pth"
    torch.save({"model": _trained_state()}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(SeqNetError, match="cannot read checkpoint"):
        load_checkpoint(tiny_model(), truncated)
