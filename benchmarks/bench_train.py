"""Training-step speed and peak memory on this machine, printed as JSON.

Two configurations: the paper's (ResNet-50, one 480x640 image at MIN 480 / MAX 800, batch 1,
SGD) and the small CPU one of the built-in demo (``configs/demo_cpu.yaml``, batch 4). Each step
is timed as forward + backward + optimizer step, with a forward/backward split and a profile of
where the time goes (top operators by self time). Each configuration runs in a fresh process,
so its peak memory is its own.

    python bench/bench_train.py [--repeats N] [--json OUT]
"""

import argparse
import json
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from seqnet_train.config import load_cfg
from seqnet_train.engine.schedule import build_optimizer
from seqnet_train.engine.train import channels_last_trunk
from seqnet_train.modeling import build_model

ROOT = Path(__file__).resolve().parents[1]


def scene(h, w, people, seed):
    """A smooth random image with ``people`` labelled boxes (ids 0..people-1)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.interpolate(
        torch.rand(1, 3, h // 16, w // 16, generator=g), size=(h, w), mode="bilinear"
    )[0]
    x = torch.linspace(0.05, 0.75, people) * w
    boxes = torch.stack(
        [x, torch.full_like(x, 0.2 * h), x + 0.15 * w, torch.full_like(x, 0.9 * h)], 1
    )
    return image, {"boxes": boxes, "labels": torch.arange(people)}


def time_steps(cfg, batch, repeats, accum_profile):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = channels_last_trunk(build_model(cfg, load_imagenet=False).train())
    optimizer = build_optimizer(cfg, model)
    images, targets = zip(*[scene(*batch["size"], 4, s) for s in range(batch["images"])])
    fwd, bwd, total = [], [], []
    for i in range(repeats + 1):  # the first step warms up oneDNN and the allocator
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.SOLVER.AMP):
            losses = model(list(images), list(targets))
        loss = sum(losses.values())
        t1 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if i:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            total.append(t3 - t0)
    result = {
        "step_s": round(statistics.median(total), 3),
        "forward_s": round(statistics.median(fwd), 3),
        "backward_s": round(statistics.median(bwd), 3),
        "iterations_per_s": round(1 / statistics.median(total), 3),
        "losses": {k: round(v.item(), 4) for k, v in losses.items()},
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if accum_profile:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            losses = model(list(images), list(targets))
            sum(losses.values()).backward()
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        spent = sum(e.self_cpu_time_total for e in ops)
        result["where_the_time_goes"] = {
            e.key: f"{e.self_cpu_time_total / spent:.1%}" for e in ops[:8]
        }
    return result


def in_fresh_process(fn, *args):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    paper = load_cfg(None, ["DEVICE", "cpu", "INPUT.MIN_SIZE", "480", "INPUT.MAX_SIZE", "800"])
    small = load_cfg(ROOT / "configs" / "demo_cpu.yaml")
    results = {
        "paper_config": in_fresh_process(
            time_steps, paper, {"size": (480, 640), "images": 1}, args.repeats, True
        ),
        "demo_cpu_config": in_fresh_process(
            time_steps, small, {"size": (240, 320), "images": 4}, args.repeats, False
        ),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
