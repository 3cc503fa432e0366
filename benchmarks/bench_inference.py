"""Inference speed of the default ResNet-50 SeqNet on this machine, printed as JSON.

Golden weights (``fill_`` of ../shared/parity) and the golden images plus one 1080x1920 image,
batch 1 and batch 4; median seconds per image for the released function (``reference``) and
our inference copy (``fast``), a stage breakdown, peak memory, and the achieved GFLOP/s next
to this machine's fp32 matrix-multiply peak measured in the same run.

    python bench/bench_inference.py [--quick] [--repeats N] [--json OUT]
"""

import argparse
import json
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import describe
from torch.utils.flop_counter import FlopCounterMode

from seqnet_train.config import load_cfg
from seqnet_train.modeling import build_model
from seqnet_train.modeling.inference import optimize_for_inference

SHARED = Path(__file__).resolve().parents[2] / "shared"


def matmul_peak(n=4096, repeats=5):
    """Best fp32 GEMM throughput in GFLOP/s (the machine's practical ceiling), per library.

    ``torch.mm`` goes to MKL, which on AMD CPUs takes a slower code path; oneDNN, which runs
    the model's convolutions, is measured on the same n x n x n product as a 1x1 convolution.
    The ceiling is the faster of the two.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    x = a.t().reshape(1, n, 64, n // 64).contiguous(memory_format=torch.channels_last)
    w = b.t().reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    peaks = {}
    for name, product in (("mkl_mm", lambda: a @ b), ("onednn_1x1_conv", lambda: F.conv2d(x, w))):
        product()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - t)
        peaks[name] = round(2 * n**3 / best / 1e9, 1)
    return peaks


class StageTimer:
    """Wall time per named submodule via forward hooks (no change to the model's code)."""

    STAGES = {
        "backbone": "backbone",
        "rpn": "rpn",
        "roi_align": "roi_heads.box_roi_pool",
        "box_head_layer4": "roi_heads.box_head",
        "reid_head_layer4": "roi_heads.reid_head",
        "embedding_head": "roi_heads.embedding_head",
    }

    def __init__(self, model):
        self.seconds = defaultdict(float)
        self.handles = []
        for stage, path in self.STAGES.items():
            module = model.get_submodule(path)
            self.handles.append(module.register_forward_pre_hook(self._start(stage)))
            self.handles.append(module.register_forward_hook(self._stop(stage)))
        self._t0 = {}

    def _start(self, stage):
        def hook(*_):
            self._t0[stage] = time.perf_counter()

        return hook

    def _stop(self, stage):
        def hook(*_):
            self.seconds[stage] += time.perf_counter() - self._t0[stage]

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def smooth_image(h, w, seed):
    """A natural-ish test image: upsampled noise (smooth regions and edges)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, h // 24, w // 24, generator=g)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]


def time_model(model, images, batch, repeats):
    """Median seconds per image over ``repeats`` runs of the whole list, in batches."""
    model.predict(images[:batch])  # warm-up (oneDNN primitive caches)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, len(images), batch):
            model.predict(images[i : i + batch])
        runs.append((time.perf_counter() - t) / len(images))
    return statistics.median(runs)


def breakdown(model, image):
    timer = StageTimer(model)
    t = time.perf_counter()
    dets = model.predict([image])[0]
    total = time.perf_counter() - t
    timer.remove()
    stages = {k: round(v, 3) for k, v in timer.seconds.items()}
    stages["other"] = round(total - sum(timer.seconds.values()), 3)
    return total, stages, len(dets["boxes"])


def gflop(model, image):
    with FlopCounterMode(display=False) as counter:
        model.predict([image])
    return counter.get_total_flops() / 1e9


def accuracy_cost(fast, mode, images):
    """Max embedding difference and detections changed against the fp32 fast path."""
    changed, emb_diff = 0, 0.0
    for image in images:
        want, got = fast.predict([image])[0], mode.predict([image])[0]
        if len(want["boxes"]) and len(got["boxes"]):
            dist = (want["boxes"][:, None] - got["boxes"][None]).abs().amax(-1)
            near, match = dist.min(1)
            ok = near <= 1.0  # a detection "unchanged" if a box within 1 px survives
            changed += int((~ok).sum()) + max(0, len(got["boxes"]) - int(ok.sum()))
            if ok.any():
                diff = want["embeddings"][ok] - got["embeddings"][match[ok]]
                emb_diff = max(emb_diff, diff.abs().max().item())
        else:
            changed += len(want["boxes"]) + len(got["boxes"])
    return {"detections_changed": changed, "max_embedding_diff": round(emb_diff, 5)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="golden images only, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--modes", nargs="*", default=["bf16"], choices=["bf16", "compile"],
        help="optional faster modes to time and compare with fp32",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (SHARED / "parity").is_dir():
        sys.exit(f"needs the golden weights and images in {SHARED / 'parity'}")
    sys.path.insert(0, str(SHARED / "parity"))
    from fill_weights import fill_

    golden = torch.load(SHARED / "parity" / "golden_inference.pt", weights_only=True)
    cfg = load_cfg(None, [str(x) for x in golden["config_overrides"]])
    reference = build_model(cfg, load_imagenet=False)
    fill_(reference)
    reference.eval()
    fast = optimize_for_inference(reference)
    repeats = 1 if args.quick else args.repeats

    sets = {"golden": list(golden["images"]), "240x320": [golden["images"][0]]}
    if not args.quick:
        sets["1080x1920"] = [smooth_image(1080, 1920, seed=s) for s in range(4)]
    peaks = matmul_peak()
    peak = max(peaks.values())
    results = {
        "machine": {
            **describe(),
            "threads": args.threads,
            "torch": torch.__version__,
            "matmul_peak_gflops": peaks,
        },
        "sets": {},
    }
    for name, images in sets.items():
        big = images[0].shape[-1] > 1000
        entry = {
            "images": [list(img.shape[-2:]) for img in images],
            # The unoptimised released function: one image, once when it is slow.
            "reference_batch1_s": round(
                time_model(reference, images[:1], 1, 1 if big else repeats), 3
            ),
            "fast_batch1_s": round(time_model(fast, images, 1, repeats), 3),
            "fast_batch4_s": round(time_model(fast, images, 4, repeats), 3),
        }
        total, stages, n_det = breakdown(fast, images[0])
        flops = gflop(fast, images[0])
        entry.update(
            fast_stages_s=stages,
            detections=n_det,
            gflop_per_image=round(flops, 1),
            fast_gflops=round(flops / total, 1),
            fraction_of_matmul_peak=round(flops / total / peak, 3),
            speedup_vs_reference=round(entry["reference_batch1_s"] / entry["fast_batch1_s"], 2),
        )
        results["sets"][name] = entry
    images = sets["golden"]
    for mode in args.modes:
        precision = "bf16" if mode == "bf16" else "fp32"
        variant = optimize_for_inference(reference, precision, compile=mode == "compile")
        t = time.perf_counter()
        variant.predict(images[:1])  # includes compilation for "compile"
        first = time.perf_counter() - t
        results.setdefault("modes", {})[mode] = {
            "first_call_s": round(first, 2),
            "golden_batch1_s": round(time_model(variant, images, 1, repeats), 3),
            "fp32_golden_batch1_s": results["sets"]["golden"]["fast_batch1_s"],
            **accuracy_cost(fast, variant, images),
        }
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
