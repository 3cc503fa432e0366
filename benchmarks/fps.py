"""Frames per second of every backend against the PyTorch baseline, on the same frames, in one
run (../shared/DEPLOY.md, Benchmarks), printed as JSON.

Rows: PyTorch eager (the released function), the PyTorch fast path (fp32; bf16 where the CPU
computes it natively; on CUDA fp16, and fp16 with the backbone replayed as CUDA graphs; fp32
rows with TF32 off), ONNX Runtime fp32 / fp16 / int8 and OpenVINO fp32 / bf16 (the trunk, where
the CPU computes bf16 natively) / int8 (a model package; each names the CPU's AMX, AVX-512
VNNI or BF16 features it computes with), TensorRT fp16 (engines of
the package's fp16 engine graphs for this GPU, built here unless ``--model`` has them); the
rows this machine cannot run are listed with why (TensorRT: no GPU, no TensorRT, or one that
does not build for this GPU), a row that breaks under "failed" (exit status 1). Every row
runs through the runtime's Session interface on the same uint8 frames: synthetic 1080x1920
and 540x960 by default, or ``--video``'s first frames. Per row and size: median and p90
latency per frame and frames per second at batch 1 and 4 (after a warm-up),
achieved GFLOP/s next to this machine's matrix-multiply peak measured in the same run, ratios
against the eager baseline and the fast path of the same run, and the accuracy against the eager
fp32 baseline on those frames (largest box and embedding differences of the matched detections,
detections gained or lost). Decoding a video and converting frames to the networks' input are
timed apart; resizing and normalising are part of every network.

    python benchmarks/fps.py [--ckpt CKPT [--cfg CFG] | golden weights] [--model PACKAGE]
        [--video FILE] [--sizes 1080x1920 540x960] [--frames 4] [--json OUT] [--chart PNG]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from seqnet_runtime import load
from seqnet_runtime import package as package_format
from seqnet_train.backend import ModelSession, checkpoint_cfg, to_tensor
from seqnet_train.config import load_cfg
from seqnet_train.modeling import build_model, load_checkpoint
from seqnet_train.modeling.inference import optimize_for_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import matmul_peak, smooth_image  # noqa: E402
from machine import cpu_name, describe  # noqa: E402

SHARED = Path(os.environ.get("SEQNET_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MATCH_PX = 1.0  # a detection is "the same" when a box of the other side lies within 1 px
SCORE_FLOOR = 0.5  # compare the detections that a search would show
BASELINE = "torch eager fp32"  # the released function: the first row, the accuracy reference


def golden_model():
    """The default ResNet-50 with the golden weights of ../shared/parity, and its config."""
    if not (SHARED / "parity").is_dir():
        sys.exit(f"needs --ckpt, or the golden weights in {SHARED / 'parity'}")
    sys.path.insert(0, str(SHARED / "parity"))
    from fill_weights import fill_

    golden = torch.load(SHARED / "parity" / "golden_inference.pt", weights_only=True)
    pairs = [str(x) for x in golden["config_overrides"]]
    overrides = []
    for key, value in zip(pairs[::2], pairs[1::2]):
        if key != "MODEL.ROI_HEAD.SCORE_THRESH_TEST":  # the golden cases keep every box; a
            overrides += [key, value]  # search keeps the default threshold's
    cfg = load_cfg(None, overrides)
    model = build_model(cfg, load_imagenet=False)
    fill_(model)
    return model.eval(), cfg


def trained_model(ckpt, cfg_path):
    cfg = load_cfg(cfg_path) if cfg_path else checkpoint_cfg(ckpt)
    model = build_model(cfg, load_imagenet=False)
    load_checkpoint(model, ckpt)
    return model.eval(), cfg


def cuda_matmul_peak(n=8192, repeats=10):
    """Best CUDA matrix-product throughput in GFLOP/s: fp32 (TF32 off, what the fp32 rows
    run), TF32 and fp16 (what autocast fp16 runs), timed with CUDA events."""
    peaks = {}
    allowed = torch.backends.cuda.matmul.allow_tf32
    for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                              ("fp16", torch.float16, False)):  # fmt: skip
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
        a @ b
        best = float("inf")
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        peaks[name] = round(2 * n**3 / best / 1e9, 1)
    torch.backends.cuda.matmul.allow_tf32 = allowed
    return peaks


def frames_for(args):
    """{size name: list of H x W x 3 uint8 frames}, and the decode seconds per frame."""
    if args.video:
        import av

        t = time.perf_counter()
        with av.open(args.video) as container:
            frames = []
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == args.frames:
                    break
        decode = (time.perf_counter() - t) / len(frames)
        h, w = frames[0].shape[:2]
        return {f"{h}x{w}": frames}, decode
    sets = {}
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        sets[size] = [
            (smooth_image(h, w, seed=s).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            for s in range(args.frames)
        ]
    return sets, None


def device_warmup(model, sets, seconds):
    """Run the model on the first frame for ``seconds`` before anything is timed: an idle GPU
    runs at a fraction of its clock (345 MHz against 1980 on an H200 here) until work ramps it
    up. The first and last latencies show whether it settled."""
    session = ModelSession(model)
    frame = next(iter(sets.values()))[0]
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        session.detect([frame])
        latencies.append(round(time.perf_counter() - t, 4))
    return {"seconds": seconds, "calls": len(latencies), "first_s": latencies[:3],
            "last_s": latencies[-3:]}  # fmt: skip


def time_pass(session, frames, batch):
    """Per-frame latencies (seconds) of one pass over ``frames`` in batches."""
    latencies = []
    for i in range(0, len(frames), batch):
        chunk = frames[i : i + batch]
        t = time.perf_counter()
        session.detect(chunk)
        latencies += [(time.perf_counter() - t) / len(chunk)] * len(chunk)
    return latencies


def summary(latencies):
    median = statistics.median(latencies)
    p90 = float(np.percentile(latencies, 90))
    return {"median_s": round(median, 4), "p90_s": round(p90, 4), "fps": round(1 / median, 3)}


def accuracy(reference, outputs):
    """Largest differences of matched detections (score >= SCORE_FLOOR) against the baseline,
    and how many detections either side has without a match within MATCH_PX."""
    box, emb, score, unmatched = 0.0, 0.0, 0.0, 0
    for want, got in zip(reference, outputs, strict=True):
        w = want["scores"] >= SCORE_FLOOR
        g = got["scores"] >= SCORE_FLOOR
        wb, gb = want["boxes"][w], got["boxes"][g]
        if len(wb) and len(gb):
            dist = np.abs(wb[:, None] - gb[None]).max(-1)
            j = dist.argmin(1)
            ok = dist[np.arange(len(wb)), j] <= MATCH_PX
            unmatched += int((~ok).sum()) + (len(gb) - len(set(j[ok].tolist())))
            if ok.any():
                box = max(box, float(dist[np.arange(len(wb)), j][ok].max()))
                we, ge = want["embeddings"][w][ok], got["embeddings"][g][j[ok]]
                emb = max(emb, float(np.abs(we - ge).max()))
                ws, gs = want["scores"][w][ok], got["scores"][g][j[ok]]
                score = max(score, float(np.abs(ws - gs).max()))
        else:
            unmatched += len(wb) + len(gb)
    return {
        "max_box_diff_px": round(box, 5),
        "max_score_diff": round(score, 6),
        "max_embedding_diff": round(emb, 6),
        "unmatched_detections": unmatched,
    }


def gflop_per_frame(model, frame, device):
    with FlopCounterMode(display=False) as counter:
        model.predict([to_tensor(frame, device)])
    return counter.get_total_flops() / 1e9


def rows(model, cfg, args, device, skipped, scratch):
    """(name, what it ran on, session factory) for every row this machine can run; the rows
    it cannot run go to ``skipped`` ({row: why})."""
    cpu = cpu_name()
    on = f"cuda ({torch.cuda.get_device_name()})" if device.type == "cuda" else f"cpu ({cpu})"
    threads = f"{torch.get_num_threads()} threads" if device.type == "cpu" else "TF32 off"
    out = [
        (BASELINE, f"{on}, {threads}, torch {torch.__version__}",
         lambda: ModelSession(model, device)),
        ("torch fast fp32", f"{on}, {threads}, channels-last, BN folded",
         lambda: ModelSession(optimize_for_inference(model), device)),
    ]  # fmt: skip
    caps = torch.cpu.get_capabilities() if device.type == "cpu" else {}
    if caps.get("amx_bf16") or caps.get("avx512_bf16"):
        bf16 = lambda: ModelSession(optimize_for_inference(model, "bf16"), device)  # noqa: E731
        out.append(("torch fast bf16", f"{on}, {threads}, autocast bf16 (native)", bf16))
    elif device.type == "cpu":
        skipped["torch fast bf16"] = "not run: this CPU has no native bf16 (AMX, AVX-512 BF16)"
    if device.type == "cuda":
        fp16 = lambda: ModelSession(optimize_for_inference(model, "fp16"), device)  # noqa: E731
        out.append(("torch fast fp16", f"{on}, autocast fp16", fp16))
        graphs = lambda: ModelSession(  # noqa: E731
            optimize_for_inference(model, "fp16", cuda_graphs=True), device
        )
        out.append(("torch fast fp16 graphs", f"{on}, autocast fp16, backbone as CUDA graphs",
                    graphs))  # fmt: skip
    else:
        skipped["torch fast fp16"] = "not run: fp16 autocast is for CUDA"
        skipped["torch fast fp16 graphs"] = "not run: CUDA graphs are for CUDA"
    package = None
    try:
        import onnxruntime as ort

        from seqnet_runtime.onnx_backend import PROVIDERS

        # checked before exporting a package that could not run
        if device.type == "cuda" and PROVIDERS["cuda"] not in ort.get_available_providers():
            skipped["onnxruntime"] = (f"not run: onnxruntime {ort.__version__} here has no CUDA "
                                      "provider (onnxruntime-gpu is not installed)")  # fmt: skip
        else:
            package = args.model or export_package(model, cfg, args, scratch)
    except ModuleNotFoundError as e:  # a GPU box without the ONNX stack still gets its rows
        skipped["onnxruntime"] = f"not run: {e.name} is not installed"
    if package is not None:
        ort_device = "cuda" if device.type == "cuda" else "cpu"
        graphs = package_format.read(package).graphs
        for precision in ("fp32", "fp16", "int8"):
            if precision in graphs:
                note = "" if ort_device == "cuda" or precision == "fp32" else (
                    ", fp16 storage, fp32 arithmetic")  # fmt: skip
                note = cpu_units("int8", device) if precision == "int8" else note
                out.append((
                    f"onnxruntime {precision}", f"{on}, onnxruntime {ort.__version__}{note}",
                    lambda p=precision: load(package, "onnxruntime", device=ort_device,
                                             precision=p, threads=torch.get_num_threads()),
                ))  # fmt: skip
    if package is not None and device.type == "cpu":
        out += openvino_rows(package, on, skipped)
    why = tensorrt_unavailable(device)
    if why:
        skipped["tensorrt fp16"] = f"not run: {why}"
    else:
        from seqnet_export.engine import library

        name, trt = library()
        trt_package = tensorrt_package(model, cfg, scratch, args.model)
        out.append((
            "tensorrt fp16", f"{on}, {name} {trt.__version__}, engine graphs, strongly typed",
            lambda: load(trt_package, "tensorrt", precision="fp16"),
        ))  # fmt: skip
    return out


def cpu_units(precision, device):
    """The CPU features a ``precision`` row computes with (AMX, AVX-512 VNNI / BF16:
    seqnet_runtime.cpu), for its "ran on": ", int8 on AVX-512 VNNI"."""
    from seqnet_runtime.cpu import cpu_features

    if device.type != "cpu":
        return ""
    names = {"amx_int8": "AMX-INT8", "avx512_vnni": "AVX-512 VNNI", "amx_bf16": "AMX-BF16",
             "avx512_bf16": "AVX-512 BF16", "avx512f": "AVX-512"}  # fmt: skip
    wanted = {"int8": ("amx_int8", "avx512_vnni"), "bf16": ("amx_bf16", "avx512_bf16")}
    have = [names[f] for f in cpu_features() if f in wanted.get(precision, ("avx512f",))]
    without = {"bf16": "no bf16 units (emulated in fp32)", "int8": "no int8 dot-product units"}
    return f", {precision} on {' + '.join(have) or without.get(precision, 'no AVX-512')}"


def openvino_rows(package, on, skipped):
    """OpenVINO fp32, bf16 (the trunk, where the CPU computes bf16 natively) and int8 (the
    package's int8 graphs) rows; what cannot run goes to ``skipped``."""
    try:
        import openvino

        from seqnet_runtime.openvino_backend import check_bf16
    except ImportError as e:
        skipped["openvino"] = f"not run: {e.name} is not installed"
        return []
    graphs = package_format.read(package).graphs
    device = torch.device("cpu")
    out = []
    for precision in ("fp32", "bf16", "int8"):
        if precision == "int8" and "int8" not in graphs:
            skipped["openvino int8"] = "not run: the package has no int8 graphs (--int8)"
            continue
        if precision == "bf16":
            try:
                check_bf16()
            except Exception as e:  # noqa: BLE001 - the refusal, one line
                skipped["openvino bf16"] = f"not run: {e}"
                continue
        note = ", the fp32 graphs' trunk in bf16" if precision == "bf16" else ""
        out.append((
            f"openvino {precision}",
            f"{on}, openvino {openvino.__version__}{note}{cpu_units(precision, device)}",
            lambda p=precision: load(package, "openvino", precision=p,
                                     threads=torch.get_num_threads()),
        ))  # fmt: skip
    return out


def tensorrt_unavailable(device):
    """None where a TensorRT row can run (a GPU, a TensorRT that builds for it), else why."""
    if device.type != "cuda":
        return "TensorRT runs on CUDA GPUs"
    try:
        from seqnet_export.engine import unavailable_here
    except ModuleNotFoundError as e:
        return f"{e.name} is not installed"
    return unavailable_here()


def tensorrt_package(model, cfg, folder, package=None):
    """``package`` when it holds fp16 engines for this GPU and this TensorRT, else a
    temporary package of the engine graphs alone (fp16) with their engines for this GPU."""
    import copy

    from seqnet_export import engine
    from seqnet_export.run import write_graphs

    target, (name, trt) = engine.local_target(), engine.library()
    if package is not None:
        for e in package_format.read(package).engines:
            if (e.target, e.flavour, e.library, e.version) == (
                target, "engine_fp16", name, trt.__version__,
            ):  # fmt: skip
                return package
    out = folder / "engine_package"
    out.mkdir(exist_ok=True)
    cpu = copy.deepcopy(model).cpu().eval()  # traced on the CPU, as seqnet-export does
    manifest = write_graphs(out, cpu, fp16=True, engine=True, standard=False,
                            config_yaml=cfg.dump())  # fmt: skip
    del manifest.graphs["engine_fp32"]  # the fp16 row's engines only
    manifest.engines = engine.build_engines(out, manifest, [target])
    package_format.write(out, manifest)
    return out


def measure(row_makers, sets, args, results):
    """Fill ``results["rows"]``, one row after the other, each with only its own session alive
    (building every session first and letting rows take turns timed the eager row up to 1.7x
    slower on a 2-core CPU in two runs: docs/gpu-check.md). A row that breaks goes to
    ``results["failed"]``; the others go on."""
    reference = {}  # size: the baseline's outputs (the first row)
    for name, ran_on, make in row_makers:
        try:
            results["rows"][name] = run_row(name, ran_on, make(), sets, args, results, reference)
        except Exception as e:  # noqa: BLE001 - reported, and the other rows still run
            results["failed"][name] = f"{type(e).__name__}: {e}"[:500]
            print(f"{name:22s} failed: {results['failed'][name]}", file=sys.stderr)


def run_row(name, ran_on, session, sets, args, results, reference):
    """One row: its outputs on the frames (the accuracy column), then per size and batch a
    warm-up call and ``args.repeats`` timed passes."""
    eager = name == BASELINE  # the slow baseline: fewer frames, batch 1
    entry = {"ran_on": ran_on, "sizes": {}}
    for size, frames in sets.items():
        frames = frames[: args.eager_frames] if eager else frames
        outputs = [session.detect([frame])[0] for frame in frames]
        if eager:
            reference[size] = outputs
        ref = reference.get(size)
        per = {} if ref is None else {"accuracy_vs_eager": accuracy(ref, outputs[: len(ref)])}
        for batch in [1] if eager else args.batches:
            session.detect(frames[:batch])  # warm-up
            times = [t for _ in range(args.repeats) for t in time_pass(session, frames, batch)]
            per[f"batch{batch}"] = summary(times)
            gflops = results["gflop_per_frame"][size] * per[f"batch{batch}"]["fps"]
            per[f"batch{batch}"]["gflops"] = round(gflops, 1)
        entry["sizes"][size] = per
        print(f"{name:22s} {size:>10s} {per['batch1']['median_s']:.3f} s/frame", file=sys.stderr)
    return entry


def export_package(model, cfg, args, folder):
    """A temporary fp32 + fp16 + int8 package of ``model``, made as ``seqnet-export`` makes one
    (from a checkpoint carrying its config) in ``folder``, verified on the way."""
    from seqnet_export.run import export_package as export

    ckpt = folder / "model.pth"
    torch.save({"model": model.state_dict(), "config": cfg.dump()}, ckpt)
    # force: an fp16 check on untrained weights may miss its 99% on near-tied NMS picks; the
    # accuracy column below reports what the fp16 rows cost
    package, _ = export(ckpt, out=folder / "package", fp16=True, threads=args.threads, force=True,
                        int8=True)  # fmt: skip
    return package


def chart(results, path):
    """Frames per second per row, one group of bars per size and batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["rows"])
    groups = [(s, b) for s in results["sizes"] for b in results["batches"]]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    width = 0.8 / len(names)
    for n, name in enumerate(names):
        fps = [results["rows"][name]["sizes"].get(s, {}).get(f"batch{b}", {}).get("fps", 0)
               for s, b in groups]  # fmt: skip
        ax.bar(np.arange(len(groups)) + n * width, fps, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{s}\nbatch {b}" for s, b in groups])
    ax.set_ylabel("frames per second")
    m = results["machine"]
    ax.set_title(f"SeqNet inference, {m['gpu'] or m['cpu']}"
                 + ("" if m["gpu"] else f", {m['threads']} threads"))  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="checkpoint (default: the golden weights)")
    parser.add_argument("--cfg", help="its config, for a released checkpoint")
    parser.add_argument("--model", help="model package (default: export one to a temp folder)")
    parser.add_argument("--video", help="time this video's first --frames frames")
    parser.add_argument("--sizes", nargs="+", default=["1080x1920", "540x960"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--frames", type=int, default=4, help="frames per size")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes over the frames")
    parser.add_argument("--eager-frames", type=int, default=2, help="frames for the slow eager row")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup-s", type=float, help="seconds of GPU warm-up before the rows "
                        "(default 10 on CUDA, 0 on the CPU)")  # fmt: skip
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--chart", help="PNG chart of the frames per second")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.warmup_s is None:
        args.warmup_s = 10.0 if device.type == "cuda" else 0.0
    if device.type == "cuda":  # fp32 rows are fp32: no TF32 (PyTorch's default in convolutions)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    model, cfg = trained_model(args.ckpt, args.cfg) if args.ckpt else golden_model()
    model.to(device)
    sets, decode = frames_for(args)
    peaks = matmul_peak() if device.type == "cpu" else cuda_matmul_peak()
    convert = {}
    for size, frames in sets.items():
        t = time.perf_counter()
        for frame in frames:
            to_tensor(frame, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        convert[size] = round((time.perf_counter() - t) / len(frames), 5)
    results = {
        "machine": {
            **describe(),
            "threads": args.threads,
            "device": str(device),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
            "torch": torch.__version__,
            "matmul_peak_gflops": peaks,
        },
        "sizes": list(sets),
        "batches": args.batches,
        "decode_s_per_frame": None if decode is None else round(decode, 5),
        "to_input_s_per_frame": convert,
        "gflop_per_frame": {
            s: round(gflop_per_frame(model, f[0], device), 1) for s, f in sets.items()
        },
        "rows": {},
        "skipped": {},
        "failed": {},
    }
    if args.warmup_s:
        results["device_warmup"] = device_warmup(model, sets, args.warmup_s)
    scratch = tempfile.TemporaryDirectory(prefix="seqnet-fps-")  # the exported package
    measure(rows(model, cfg, args, device, results["skipped"], Path(scratch.name)), sets, args,
            results)  # fmt: skip
    scratch.cleanup()
    for entry in results["rows"].values():
        for size, per in entry["sizes"].items():
            for base in (BASELINE, "torch fast fp32"):
                if base in results["rows"]:
                    ref = results["rows"][base]["sizes"][size]["batch1"]["median_s"]
                    per[f"speedup_vs_{base.replace(' ', '_')}"] = round(
                        ref / per["batch1"]["median_s"], 3
                    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if args.chart:
        chart(results, args.chart)
    if results["failed"]:
        sys.exit(f"rows failed: {', '.join(results['failed'])}")


if __name__ == "__main__":
    main()
