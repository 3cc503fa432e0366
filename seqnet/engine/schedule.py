"""The paper's learning-rate schedule, per iteration (SPEC: training schedule).

Linear warm-up from ``BASE_LR * WARMUP_FACTOR`` over the whole first epoch (as the release's
``warmup_lr_scheduler``), then ``x GAMMA`` after each epoch listed in ``LR_DECAY_MILESTONES``
(as its ``MultiStepLR``, stepped per epoch).
"""

import torch


def lr_factor(iteration, iters_per_epoch, warmup_factor, milestones, gamma):
    """Multiplier of BASE_LR at a 0-based global iteration."""
    epoch = iteration // iters_per_epoch
    factor = gamma ** sum(epoch >= m for m in milestones)
    if epoch == 0 and iters_per_epoch > 1:
        alpha = iteration / (iters_per_epoch - 1)
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def build_optimizer(cfg, model):
    """SGD (the paper) or AdamW over the parameters that train (the stem is frozen)."""
    s = cfg.SOLVER
    params = [p for p in model.parameters() if p.requires_grad]
    if s.OPTIMIZER == "SGD":
        return torch.optim.SGD(
            params, lr=s.BASE_LR, momentum=s.SGD_MOMENTUM, weight_decay=s.WEIGHT_DECAY
        )
    if s.OPTIMIZER == "AdamW":
        return torch.optim.AdamW(params, lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY)
    from seqnet.errors import SeqNetError

    raise SeqNetError(f"SOLVER.OPTIMIZER {s.OPTIMIZER!r} is not one of SGD, AdamW")


def build_scheduler(cfg, optimizer, iters_per_epoch):
    s = cfg.SOLVER
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: lr_factor(
            it, iters_per_epoch, s.WARMUP_FACTOR, list(s.LR_DECAY_MILESTONES), s.GAMMA
        ),
    )
