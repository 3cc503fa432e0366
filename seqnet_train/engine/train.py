"""``seqnet train``: the original train.py's command, with exact resume, DDP and mixed precision.

seqnet train --cfg CFG [KEY VALUE ...]                  train
seqnet train --cfg CFG --resume [--ckpt PATH]           resume (newest checkpoint by default)
seqnet train --cfg CFG --eval --ckpt PATH               evaluate a checkpoint
torchrun --nproc_per_node N -m seqnet_train train --cfg CFG   several processes (NCCL, gloo)
"""

import logging
import math
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from seqnet_train.config import load_cfg
from seqnet_train.data import check_lut_size, load_split
from seqnet_train.engine import checkpoint as ckpt_io
from seqnet_train.engine import distributed
from seqnet_train.engine.data_order import build_loader
from seqnet_train.engine.faults import maybe_die
from seqnet_train.engine.schedule import (
    build_optimizer,
    build_scheduler,
    input_scale,
    set_input_scale,
)
from seqnet_train.errors import SeqNetError
from seqnet_train.modeling import build_model, load_checkpoint

log = logging.getLogger(__name__)


def run(args):
    cfg = load_cfg(args.cfg, args.opts)
    if args.eval:
        if not args.ckpt:
            raise SeqNetError("--eval needs --ckpt PATH")
        from seqnet_train.evaluation import evaluate_checkpoint

        return evaluate_checkpoint(cfg, args.ckpt)
    if args.ckpt and not args.resume:
        raise SeqNetError("--ckpt needs --resume (continue training) or --eval")
    return train(cfg, resume=args.resume, ckpt=args.ckpt)


class _StopRequest:
    """Ctrl-C (SIGINT/SIGTERM) sets a flag; the loop saves at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, *_):
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def restore(self):
        for s, h in self._old.items():
            signal.signal(s, h)


def train(cfg, resume=False, ckpt=None):
    """Train as configured; returns the last evaluation's metrics (rank 0) or {}."""
    rank, world, device = distributed.init(cfg.DEVICE)
    logging.getLogger("seqnet").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    out = Path(cfg.OUTPUT_DIR)
    records = load_split(cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT, "train")
    check_lut_size(cfg.MODEL.LOSS.LUT_SIZE, records)
    input_scale(cfg, 0)  # a malformed INPUT.PROGRESSIVE_RESIZE fails before anything is written

    _seed_everything(cfg.SEED)
    model = channels_last_trunk(build_model(cfg, load_imagenet=not resume).to(device))
    optimizer = build_optimizer(cfg, model)
    loader, batches = build_loader(cfg, records, rank, world)
    iters_per_epoch = len(batches) // cfg.SOLVER.ACCUM_STEPS
    if iters_per_epoch == 0:
        raise SeqNetError("fewer batches in an epoch than SOLVER.ACCUM_STEPS")
    scheduler = build_scheduler(cfg, optimizer, iters_per_epoch)
    amp = _Precision(cfg.SOLVER.AMP, device)
    _seed_everything(cfg.SEED + rank)  # RoI sampling differs between ranks

    start_iter = 0
    if resume:
        path = Path(ckpt) if ckpt else ckpt_io.newest_readable(out)
        state = load_checkpoint(model, path)
        if "iteration" not in state:
            raise SeqNetError(f"{path} has no training state; it can be evaluated, not resumed")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        amp.load_state_dict(state.get("scaler"))
        ckpt_io.set_rng_states(state["rng"][rank] if world > 1 else state["rng"][0])
        start_iter = state["iteration"]
        log.info("resumed from %s at iteration %d", path, start_iter)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.dump())
    ids = [device] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=ids) if world > 1 else model
    writer = _tensorboard(cfg, out) if rank == 0 else None
    stop = _StopRequest()
    metrics = {}
    try:
        for epoch in range(start_iter // iters_per_epoch, cfg.SOLVER.MAX_EPOCHS):
            first = (
                start_iter - epoch * iters_per_epoch
                if epoch == start_iter // iters_per_epoch
                else 0
            )
            batches.set_epoch(epoch, first * cfg.SOLVER.ACCUM_STEPS)
            set_input_scale(model, *input_scale(cfg, epoch))
            done = _train_epoch(cfg, net, model, loader, optimizer, scheduler, amp, epoch, first,
                                iters_per_epoch, stop, writer, rank, world, out)  # fmt: skip
            if not done:  # stopped by Ctrl-C: the checkpoint is written
                return metrics
            if (epoch + 1) % cfg.CKPT_PERIOD == 0 or epoch + 1 == cfg.SOLVER.MAX_EPOCHS:
                _save(cfg, model, optimizer, scheduler, amp, epoch, None, rank, world, out)
            if (epoch + 1) % cfg.EVAL_PERIOD == 0 or epoch + 1 == cfg.SOLVER.MAX_EPOCHS:
                metrics = _evaluate(model, cfg, out, epoch, rank, world, writer)
    finally:
        stop.restore()
        if writer:
            writer.close()
        distributed.cleanup()
    return metrics


def channels_last_trunk(model):
    """The backbone and RPN head in channels-last memory, where oneDNN and cuDNN train them
    faster (demo config on a CPU: 1.04 -> 0.82 s a step); the RoI heads' small maps are faster
    as they are. Returns ``model``."""
    for part in (model.backbone, model.rpn.head):
        part.to(memory_format=torch.channels_last)
    return model


def _train_epoch(cfg, net, model, loader, optimizer, scheduler, amp, epoch, first,
                 iters_per_epoch, stop, writer, rank, world, out):  # fmt: skip
    """Steps ``first`` .. end of one epoch; False when stopped early (after saving)."""
    net.train()
    accum = cfg.SOLVER.ACCUM_STEPS
    params = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(total=iters_per_epoch, initial=first, desc=f"epoch {epoch}", disable=rank != 0,
               dynamic_ncols=True)  # fmt: skip
    batches = iter(loader)
    t0 = time.perf_counter()
    for step in range(first, iters_per_epoch):
        iteration = epoch * iters_per_epoch + step
        optimizer.zero_grad(set_to_none=True)
        totals = {}
        for _ in range(accum):
            images, targets = next(batches)
            images = [img.to(amp.device) for img in images]
            targets = [{"boxes": t["boxes"].to(amp.device), "labels": t["labels"].to(amp.device)}
                       for t in targets]  # fmt: skip
            with amp.autocast():
                losses = net(images, targets)
            bad = [k for k, v in losses.items() if not torch.isfinite(v)]
            if bad:
                break
            amp.backward(sum(losses.values()) / accum)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.item() / accum
        maybe_die(f"step:{iteration}")
        if bad:
            message = f"non-finite {', '.join(bad)} at iteration {iteration} (epoch {epoch})"
            if cfg.SOLVER.NONFINITE == "skip":
                log.warning("%s: step skipped", message)
                optimizer.zero_grad(set_to_none=True)
                with warnings.catch_warnings():  # a skipped step still counts in the schedule
                    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
                    scheduler.step()
                bar.update()
                continue
            raise SeqNetError(f"{message}; the last checkpoint in {out} is intact")
        amp.step(optimizer, params, cfg.SOLVER.CLIP_GRADIENTS)
        scheduler.step()
        bar.update()
        total = sum(totals.values())
        lr = optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{total:.3f}", lr=f"{lr:.2e}")
        if rank == 0 and (iteration % cfg.DISP_PERIOD == 0 or step + 1 == iters_per_epoch):
            speed = (step + 1 - first) / (time.perf_counter() - t0)
            log.info("epoch %d iter %d/%d loss %.4f lr %.2e %.2f it/s %s", epoch, step + 1,
                     iters_per_epoch, total, lr, speed,
                     " ".join(f"{k[5:]}={v:.3f}" for k, v in totals.items()))  # fmt: skip
            if writer:
                writer.add_scalar("train/loss", total, iteration)
                writer.add_scalar("train/lr", lr, iteration)
                for k, v in totals.items():
                    writer.add_scalar(f"train/{k}", v, iteration)
        period = cfg.CKPT_ITER_PERIOD
        last = step + 1 == iters_per_epoch
        if stop.requested or (period and (step + 1) % period == 0 and not last):
            _save(cfg, model, optimizer, scheduler, amp, epoch, step + 1, rank, world, out)
        if stop.requested:
            log.warning("interrupted: resume with --resume (checkpoint written in %s)", out)
            bar.close()
            return False
    bar.close()
    return True


def _save(cfg, model, optimizer, scheduler, amp, epoch, step, rank, world, out):
    rngs = [ckpt_io.rng_states()]
    if world > 1:
        rngs = [None] * world
        torch.distributed.all_gather_object(rngs, ckpt_io.rng_states())
    if rank == 0:
        name = ckpt_io.checkpoint_name(epoch, step)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "iteration": scheduler.last_epoch,
            "scaler": amp.state_dict(),
            "rng": rngs,
            "config": cfg.dump(),
        }
        ckpt_io.save_atomic(state, out / name, before_rename=lambda: maybe_die(f"save:{name}"))
        ckpt_io.prune(out, cfg.CKPT_KEEP_LAST)
        log.info("saved %s", out / name)
    distributed.barrier()


def _evaluate(model, cfg, out, epoch, rank, world, writer):
    """Evaluate on the fast inference copy; the global RNGs are left as they were, so a run
    that skips this (after a resume) continues identically."""
    from seqnet_train.evaluation import evaluate
    from seqnet_train.modeling.inference import optimize_for_inference

    states = ckpt_io.rng_states()
    fast = optimize_for_inference(model, cfg.INFERENCE.PRECISION, cfg.INFERENCE.COMPILE)
    set_input_scale(fast, cfg.INPUT.MIN_SIZE, cfg.INPUT.MAX_SIZE)  # not a training scale
    maybe_die(f"eval:{epoch}")
    metrics = evaluate(fast, cfg, out, epoch=epoch, rank=rank, world_size=world)
    ckpt_io.set_rng_states(states)
    if writer:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                writer.add_scalar(k, v, epoch)
    return metrics


class _Precision:
    """SOLVER.AMP: fp16 autocast + GradScaler on CUDA, bf16 autocast on the CPU."""

    def __init__(self, enabled, device):
        self.device = device
        self.enabled = enabled
        self.dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if enabled and device.type == "cuda" else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)

    def backward(self, loss):
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer, params, clip):
        if self.scaler:
            self.scaler.unscale_(optimizer)  # clip the true gradients
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self):
        return self.scaler.state_dict() if self.scaler else None

    def load_state_dict(self, state):
        if self.scaler and state:
            self.scaler.load_state_dict(state)


def _seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _tensorboard(cfg, out):
    if not cfg.TF_BOARD:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("TF_BOARD is on but tensorboard is not installed; no scalars written")
        return None
    return SummaryWriter(out / "tensorboard")
