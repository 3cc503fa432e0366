"""Online Instance Matching loss (Xiao et al., CVPR 2017) with memory that survives checkpoints.

The lookup table (one row per labelled identity), the circular queue of unlabelled people and
the queue pointer are buffers, so they are saved and restored with the model. The memory update
runs under ``no_grad`` after the logits are formed from a copy, never inside autograd; under
``torch.distributed`` the samples of all ranks are gathered first, so every rank holds the same
memory.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from seqnet_train.identities import UNLABELED


class OIMLoss(nn.Module):
    def __init__(self, num_features, num_pids, cq_size, momentum=0.5, scalar=30.0):
        super().__init__()
        self.num_features = num_features
        self.num_pids = num_pids
        self.cq_size = cq_size
        self.momentum = momentum
        self.scalar = scalar
        self.register_buffer("lut", torch.zeros(num_pids, num_features))
        self.register_buffer("cq", torch.zeros(cq_size, num_features))
        self.register_buffer("cq_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, embeddings, ids):
        """Mean OIM cross-entropy over the labelled samples; updates the memory when training.

        Args:
            embeddings: (N, D) L2-normalised embeddings of RoIs matched to a person.
            ids: (N,) int64 training indices in [0, LUT_SIZE), or ``UNLABELED``.
        Returns:
            A scalar; 0 with zero gradient when no sample is labelled.
        """
        if ((ids < UNLABELED) | (ids >= self.num_pids)).any():
            bad = ids[(ids < UNLABELED) | (ids >= self.num_pids)].unique().tolist()
            raise ValueError(
                f"OIM: identity indices {bad} are outside the lookup table "
                f"[0, {self.num_pids}) (MODEL.LOSS.LUT_SIZE) and are not UNLABELED={UNLABELED}"
            )
        labelled = ids != UNLABELED
        x = embeddings[labelled].float()
        memory = torch.cat([self.lut, self.cq])  # a copy: the update below cannot disturb autograd
        if x.shape[0]:
            logits = self.scalar * x.mm(memory.t())
            loss = F.cross_entropy(logits, ids[labelled])
        else:
            loss = embeddings.sum() * 0.0
        if self.training:
            self.update(embeddings.detach(), ids)
        return loss

    @torch.no_grad()
    def update(self, embeddings, ids):
        """LUT[y] <- normalise(m LUT[y] + (1 - m) x) per labelled sample, in order; unlabelled
        samples go into the queue at its pointer. Exactly the per-sample loop, vectorised."""
        embeddings, ids = _gather_from_all_ranks(embeddings.float(), ids)
        labelled = ids != UNLABELED
        self._update_lut(embeddings[labelled], ids[labelled])
        self._push_queue(embeddings[~labelled])

    def _update_lut(self, x, y):
        if not y.numel():
            return
        # A sample's rank among earlier samples of its identity: a round per rank keeps the
        # sequential semantics when an identity occurs several times in the batch.
        order = torch.argsort(y, stable=True)
        sorted_y = y[order]
        first = torch.ones_like(sorted_y, dtype=torch.bool)
        first[1:] = sorted_y[1:] != sorted_y[:-1]
        start = torch.cummax(torch.where(first, torch.arange(len(y), device=y.device), 0), 0)
        rank = torch.empty_like(y)
        rank[order] = torch.arange(len(y), device=y.device) - start.values
        m = self.momentum
        for r in range(int(rank.max()) + 1):
            sel = rank == r
            rows = m * self.lut[y[sel]] + (1.0 - m) * x[sel]
            self.lut[y[sel]] = rows / rows.norm(dim=1, keepdim=True)

    def _push_queue(self, x):
        n = x.shape[0]
        if not n:
            return
        ptr = int(self.cq_ptr)
        keep = min(n, self.cq_size)  # with more samples than slots, the last ones win
        slots = (ptr + torch.arange(n - keep, n, device=x.device)) % self.cq_size
        self.cq[slots] = x[n - keep :]
        self.cq_ptr.fill_((ptr + n) % self.cq_size)


def _gather_from_all_ranks(x, y):
    """Concatenate (x, y) of every rank in rank order (identity without distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, y
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    most = int(max(s.item() for s in sizes))
    pad_x = x.new_zeros(most, x.shape[1])
    pad_x[: x.shape[0]] = x
    pad_y = y.new_full((most,), UNLABELED)
    pad_y[: y.shape[0]] = y
    xs = [torch.empty_like(pad_x) for _ in range(world)]
    ys = [torch.empty_like(pad_y) for _ in range(world)]
    dist.all_gather(xs, pad_x)
    dist.all_gather(ys, pad_y)
    sizes = [int(s.item()) for s in sizes]
    return (
        torch.cat([t[:s] for t, s in zip(xs, sizes)]),
        torch.cat([t[:s] for t, s in zip(ys, sizes)]),
    )
