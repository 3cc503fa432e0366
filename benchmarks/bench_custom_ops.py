"""custom_ops' CPU kernels against torchvision's and the model's fallback, printed as JSON.

RoIAlign on a 1080p frame's res4 map as the default configuration sees it (the frame resized
by INPUT.MIN_SIZE / MAX_SIZE, padded to 32, stride 16; 1024 channels), 300 RoIs (the RPN's
POST_NMS_TOPN_TEST) at MODEL.ROI_HEAD.POOL_SIZE, sampling ratio 2:

- forward: torchvision's CPU kernel (one call), the model's fallback (torchvision's kernel
  across threads, ``seqnet_train.modeling.roi_align``), the custom kernel on a channels-last
  map (the fast path's and training's layout) and on an NCHW map (the reference model's);
- backward: the fallback's matrix-product gradient against the custom kernel's;
- NMS over the RPN's 6000 candidates: torchvision's ``batched_nms`` against custom_ops'.

Each row is the median wall time of ``--repeats`` runs, the variants interleaved, in one
process; ratios are from the same run. ``--model`` adds the 1080p inference of the fast path
and a training step of the paper configuration (random weights), each with the kernels on and
off: wall time, and the time inside RoIAlign (forward and backward) from a profiled run.

    python benchmarks/bench_custom_ops.py [--repeats N] [--threads N] [--model] [--json OUT]
"""

import argparse
import json
import math
import os
import statistics
import time

import torch
import torchvision
from machine import cpu_name
from torch.profiler import ProfilerActivity, profile
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import boxes as box_ops

import custom_ops
from seqnet_train.config import load_cfg
from seqnet_train.modeling.build import FEATURE_STRIDE
from seqnet_train.modeling.roi_align import RoIAlign, _ParallelRoIAlign

FRAME = (1080, 1920)


def res4_size(cfg, frame=FRAME):
    """(H, W) of the res4 map of a ``frame``-sized image: the model's resize and padding, then
    four stride-2 stages (each ceil(n / 2))."""
    transform = GeneralizedRCNNTransform(
        cfg.INPUT.MIN_SIZE, cfg.INPUT.MAX_SIZE, [0.0] * 3, [1.0] * 3
    )
    images, _ = transform([torch.zeros(3, *frame)])
    resized = images.image_sizes[0]
    padded = images.tensors.shape[-2:]
    size = [n for n in padded]
    for _ in range(int(math.log2(FEATURE_STRIDE))):
        size = [(n + 1) // 2 for n in size]
    return tuple(resized), tuple(padded), tuple(size)


def person_boxes(n, image_size, seed=0):
    """``n`` boxes of people-like shapes inside an (H, W) image, as an RPN proposes them."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_size
    bh = torch.rand(n, generator=g) * 0.6 * h + 0.05 * h
    bw = bh * (0.3 + 0.4 * torch.rand(n, generator=g))
    x1 = torch.rand(n, generator=g) * (w - bw)
    y1 = torch.rand(n, generator=g) * (h - bh)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], 1)


def timed(fns, repeats):
    """{name: median seconds}, each ``fn`` run once to warm up, then interleaved."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: round(statistics.median(t), 4) for name, t in times.items()}


def roi_align_rows(cfg, repeats):
    resized, padded, (h, w) = res4_size(cfg)
    channels = 1024  # ResNet-50 layer3
    pool = tuple(cfg.MODEL.ROI_HEAD.POOL_SIZE)
    k = cfg.MODEL.RPN.POST_NMS_TOPN_TEST
    torch.manual_seed(0)
    nchw = torch.randn(1, channels, h, w)
    nhwc = nchw.contiguous(memory_format=torch.channels_last)
    boxes = person_boxes(k, resized)
    rois = torch.cat([torch.zeros(k, 1), boxes], 1)
    layer = RoIAlign(pool, 1 / FEATURE_STRIDE, 2)
    args = (1 / FEATURE_STRIDE, *pool, 2, False)
    grad = torch.randn(k, channels, *pool)

    forward = {
        "torchvision": lambda: torch.ops.torchvision.roi_align(nchw, rois, *args),
        "fallback_threaded": lambda: _ParallelRoIAlign.apply(layer, [rois], nhwc),
        "custom_channels_last": lambda: torch.ops.custom_ops.roi_align(nhwc, rois, *args),
        "custom_nchw": lambda: torch.ops.custom_ops.roi_align(nchw, rois, *args),
    }
    backward = {
        "fallback_matrix_product": lambda: layer._map_gradient(grad, rois, nchw.shape),
        "custom_channels_last": lambda: torch.ops.custom_ops._roi_align_backward(
            grad, rois, *args[:3], 1, channels, h, w, 2, False, True
        ),
        "custom_nchw": lambda: torch.ops.custom_ops._roi_align_backward(
            grad, rois, *args[:3], 1, channels, h, w, 2, False, False
        ),
    }
    fwd, bwd = timed(forward, repeats), timed(backward, repeats)
    same = torch.equal(forward["custom_channels_last"](), forward["torchvision"]())
    return {
        "case": {
            "frame": list(FRAME),
            "resized": list(resized),
            "padded": list(padded),
            "res4": [1, channels, h, w],
            "rois": k,
            "output": list(pool),
            "sampling_ratio": 2,
        },
        "forward_s": fwd,
        "forward_speedup": {
            "custom_vs_torchvision": round(fwd["torchvision"] / fwd["custom_channels_last"], 2),
            "custom_nchw_vs_torchvision": round(fwd["torchvision"] / fwd["custom_nchw"], 2),
            "custom_vs_fallback_threaded": round(
                fwd["fallback_threaded"] / fwd["custom_channels_last"], 2
            ),
        },
        "backward_s": bwd,
        "backward_speedup": {
            "custom_vs_matrix_product": round(
                bwd["fallback_matrix_product"] / bwd["custom_channels_last"], 2
            ),
            "custom_nchw_vs_matrix_product": round(
                bwd["fallback_matrix_product"] / bwd["custom_nchw"], 2
            ),
        },
        "forward_equal_to_torchvision": same,
    }


def nms_rows(cfg, repeats):
    n = cfg.MODEL.RPN.PRE_NMS_TOPN_TEST
    resized, _, _ = res4_size(cfg)
    g = torch.Generator().manual_seed(1)
    # RPN-like: clusters of overlapping candidates around fewer objects
    centers = person_boxes(n // 20, resized, seed=1).repeat(20, 1)
    boxes = centers + torch.randn(n, 4, generator=g) * 12
    boxes = box_ops.clip_boxes_to_image(boxes, resized)
    scores = torch.rand(n, generator=g)
    levels = torch.zeros(n, dtype=torch.int64)
    thresh, post = cfg.MODEL.RPN.NMS_THRESH, cfg.MODEL.RPN.POST_NMS_TOPN_TEST
    fns = {
        "torchvision_batched_nms": lambda: box_ops.batched_nms(boxes, scores, levels, thresh)[
            :post
        ],
        "custom_batched_nms": lambda: custom_ops.batched_nms(boxes, scores, levels, thresh, post),
        "torchvision_nms": lambda: torchvision.ops.nms(boxes, scores, thresh)[:post],
        "custom_nms_capped": lambda: custom_ops.nms(boxes, scores, thresh, post),
    }
    t = timed(fns, repeats)
    same = torch.equal(fns["custom_batched_nms"](), fns["torchvision_batched_nms"]())
    return {
        "candidates": n,
        "kept": post,
        "seconds": t,
        "equal_to_torchvision": same,
        "speedup_capped_nms": round(t["torchvision_nms"] / t["custom_nms_capped"], 2),
    }


def _is_roi_align(key):
    """Profiler rows of RoIAlign's outermost calls, forward and backward, either kernel."""
    return key in (
        "custom_ops::roi_align",
        "custom_ops::_roi_align_backward",
        "_ParallelRoIAlign",
        "_ParallelRoIAlignBackward",
    )


def model_rows(repeats):
    """The fast path's 1080p inference and a paper-configuration training step, with the
    custom kernels on and off (SEQNET_CUSTOM_OPS), random weights (speed only)."""
    from seqnet_train.engine.train import channels_last_trunk
    from seqnet_train.modeling import build_model
    from seqnet_train.modeling.inference import optimize_for_inference

    cfg = load_cfg(None, [])
    torch.manual_seed(0)
    fast = optimize_for_inference(build_model(cfg, load_imagenet=False).eval())
    frame = torch.rand(3, *FRAME)
    paper = load_cfg(None, ["INPUT.MIN_SIZE", "480", "INPUT.MAX_SIZE", "800"])
    train_model = channels_last_trunk(build_model(paper, load_imagenet=False).train())
    image = torch.rand(3, 480, 640)
    target = {
        "boxes": torch.tensor([[100.0, 80.0, 200.0, 400.0], [300.0, 60.0, 420.0, 420.0]]),
        "labels": torch.tensor([0, 1]),
    }

    def step():
        train_model.zero_grad(set_to_none=True)
        sum(train_model([image], [target]).values()).backward()

    rows = {}
    for name, fn in (
        ("inference_1080p_fast", lambda: fast.predict([frame])),
        ("train_step_paper", step),
    ):
        fns, roi_align_s = {}, {}
        for setting in ("on", "off"):

            def run(fn=fn, setting=setting):
                os.environ[custom_ops.ENV] = "1" if setting == "on" else "0"
                fn()

            fns[f"custom_ops_{setting}"] = run
            run()  # warm-up, then one profiled run: the time spent in RoIAlign
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            roi_align_s[f"custom_ops_{setting}"] = round(
                sum(e.cpu_time_total for e in prof.key_averages() if _is_roi_align(e.key)) / 1e6,
                3,
            )
        wall = timed(fns, repeats)
        rows[name] = {
            "wall_s": wall,
            "roi_align_s": roi_align_s,
            "speedup": round(wall["custom_ops_off"] / wall["custom_ops_on"], 3),
        }
    os.environ.pop(custom_ops.ENV, None)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", action="store_true", help="also whole-model rows (minutes)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    status = custom_ops.status()
    if not status["cpu"]:
        raise SystemExit(f"custom_ops kernels not available: {status['reason']}")
    cfg = load_cfg(None, [])
    results = {
        "machine": {
            "cpu": cpu_name(),
            "threads": args.threads,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
        "repeats": args.repeats,
        "roi_align": roi_align_rows(cfg, args.repeats),
        "rpn_nms": nms_rows(cfg, args.repeats),
    }
    if args.model:
        results["model"] = model_rows(max(2, args.repeats // 2))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
