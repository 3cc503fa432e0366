"""torchrun / DDP plumbing: one process per GPU (NCCL) or per CPU worker (gloo)."""

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init(device_name):
    """(rank, world_size, device); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(device_name)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def pick_device(name):
    """``cfg.DEVICE``; "cuda" falls back to the CPU, with a warning, when there is no GPU."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("DEVICE %s is not available; training on the CPU", name)
        return torch.device("cpu")
    return torch.device(name)


def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
