"""OIM: the vectorised memory update equals SPEC's per-sample loop; safe on odd batches."""

import pytest
import torch
import torch.nn.functional as F

from seqnet_train.identities import UNLABELED
from seqnet_train.modeling.oim import OIMLoss


def loop_update(lut, cq, ptr, x, y, m):
    """SPEC's update rule, one sample at a time (as the release's backward did)."""
    lut, cq = lut.clone(), cq.clone()
    for xi, yi in zip(x, y):
        if yi != UNLABELED:
            lut[yi] = m * lut[yi] + (1 - m) * xi
            lut[yi] /= lut[yi].norm()
        else:
            cq[ptr] = xi
            ptr = (ptr + 1) % len(cq)
    return lut, cq, ptr


def make_oim(num_pids=5, cq_size=4, seed=0):
    oim = OIMLoss(8, num_pids, cq_size, momentum=0.5, scalar=30.0)
    g = torch.Generator().manual_seed(seed)
    oim.lut.copy_(F.normalize(torch.randn(num_pids, 8, generator=g), dim=1))
    oim.cq.copy_(F.normalize(torch.randn(cq_size, 8, generator=g), dim=1))
    return oim


@pytest.mark.parametrize(
    "ids",
    [
        [0, 1, 2],  # distinct identities
        [3, 3, 1, 3, UNLABELED, 1],  # repeated identities: order matters
        [UNLABELED] * 7,  # more unlabelled samples than queue slots: wraps
        [2, UNLABELED, UNLABELED, 4, 2, UNLABELED],
    ],
)
def test_update_matches_loop(ids):
    oim = make_oim().train()
    oim.cq_ptr.fill_(3)
    y = torch.tensor(ids)
    x = F.normalize(torch.randn(len(ids), 8, generator=torch.Generator().manual_seed(1)), dim=1)
    want_lut, want_cq, want_ptr = loop_update(oim.lut, oim.cq, 3, x, y, 0.5)
    oim(x.clone().requires_grad_(), y)
    torch.testing.assert_close(oim.lut, want_lut, rtol=0, atol=1e-6)
    torch.testing.assert_close(oim.cq, want_cq, rtol=0, atol=0)
    assert int(oim.cq_ptr) == want_ptr


def test_loss_is_cross_entropy_over_labelled_samples():
    oim = make_oim().eval()  # eval: no memory update
    x = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    y = torch.tensor([1, UNLABELED, 4, UNLABELED])
    logits = 30.0 * x[[0, 2]] @ torch.cat([oim.lut, oim.cq]).t()
    want = F.cross_entropy(logits, y[[0, 2]])
    torch.testing.assert_close(oim(x, y), want)


def test_all_unlabelled_gives_zero_loss_and_zero_grad():
    oim = make_oim().train()
    x = F.normalize(torch.randn(3, 8), dim=1).requires_grad_()
    loss = oim(x, torch.full((3,), UNLABELED))
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert int(oim.cq_ptr) == 3  # the samples still entered the queue


def test_empty_batch():
    oim = make_oim().train()
    x = torch.zeros(0, 8, requires_grad=True)
    loss = oim(x, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0


def test_backward_after_update_uses_memory_before_update():
    oim = make_oim().train()
    before = torch.cat([oim.lut, oim.cq]).clone()
    x = F.normalize(torch.randn(2, 8), dim=1).requires_grad_()
    y = torch.tensor([0, 0])
    oim(x, y).backward()  # would fail if the update touched a tensor autograd saved
    ref = x.detach().clone().requires_grad_()
    F.cross_entropy(30.0 * ref @ before.t(), y).backward()
    torch.testing.assert_close(x.grad, ref.grad)


@pytest.mark.parametrize("bad", [5, 7, -2])
def test_label_outside_lut_is_an_error(bad):
    oim = make_oim(num_pids=5)
    with pytest.raises(ValueError, match="outside the lookup table"):
        oim(F.normalize(torch.randn(2, 8), dim=1), torch.tensor([0, bad]))


def test_memory_and_pointer_are_in_the_state_dict():
    oim = make_oim().train()
    oim(F.normalize(torch.randn(3, 8), dim=1), torch.tensor([UNLABELED, 2, UNLABELED]))
    restored = OIMLoss(8, 5, 4)
    restored.load_state_dict(oim.state_dict())
    assert int(restored.cq_ptr) == 2
    assert torch.equal(restored.lut, oim.lut) and torch.equal(restored.cq, oim.cq)
