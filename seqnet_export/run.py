"""``seqnet-export``'s work: checkpoint -> graphs -> verified package, one log line a step.

Every check that can fail on the user's input (checkpoint, config, --out, --opset, --engine)
runs before the export, so a mistake costs seconds and writes nothing.
"""

import importlib.util
import logging
import time
from pathlib import Path

import onnx
import torch

from seqnet_export import engine, quantize
from seqnet_export.export import DEFAULT_OPSET, MIN_OPSET, build_graphs, io_spec, save_graphs
from seqnet_export.package import check_destination, new_manifest, preprocess_of
from seqnet_export.verify import (
    folder_images,
    parity_table,
    synthetic_images,
    verify_fp16,
    verify_fp32,
)
from seqnet_runtime import fs, load
from seqnet_runtime import package as package_format
from seqnet_runtime.backend import backends
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.package import Graph
from seqnet_train.modeling.checkpoint import read_checkpoint

log = logging.getLogger("seqnet_export")

NEEDED = ("onnx", "onnxscript", "onnxruntime")
QUIET = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export")  # INFO chatter


def default_out(ckpt):
    """The package folder beside the checkpoint: ``epoch_19.pth`` -> ``epoch_19_package``."""
    ckpt = Path(ckpt)
    return ckpt.with_name(f"{ckpt.stem}_package")


def verifying_backends():
    """The package backends besides ONNX Runtime installed here that run on a CPU: the
    export's fp32 verification runs on each (OpenVINO once computed a package wrongly)."""
    found = []
    for name, target in backends().items():
        if name in ("onnxruntime", "torch", "tensorrt"):
            continue
        module = target.split(":")[0]
        try:
            importlib.import_module(module)
        except ImportError:
            log.info("not verified on %s: it is not installed", name)
            continue
        found.append(name)
    return found


def load_config(checkpoint, ckpt, cfg_path):
    """(cfg, where it came from): ``--cfg`` if given, else the config our checkpoints carry."""
    from seqnet_train.backend import checkpoint_cfg
    from seqnet_train.config import load_cfg

    if cfg_path:
        return load_cfg(cfg_path), str(cfg_path)
    return checkpoint_cfg(ckpt, checkpoint=checkpoint), "the checkpoint"


def check_opset(opset):
    newest = onnx.defs.onnx_opset_version()
    if opset < MIN_OPSET:
        raise SeqNetError(
            f"--opset {opset}: the graphs need opset {MIN_OPSET} or newer (RoiAlign's "
            "coordinate_transformation_mode, the exporter's operators)"
        )
    if opset > newest:
        raise SeqNetError(f"--opset {opset}: this onnx ({onnx.__version__}) knows up to {newest}")


def load_model(checkpoint, ckpt, cfg):
    from seqnet_train.modeling import build_model, load_checkpoint

    model = build_model(cfg, load_imagenet=False)
    load_checkpoint(model, ckpt, checkpoint)
    return model.eval().requires_grad_(False)


def _mb(path):
    return Path(path).stat().st_size / 2**20


def graph_key(flavour, name):
    """The file stem of graph ``name`` of ``flavour``: detect, detect_fp16, detect_engine_fp32,
    detect_engine_fp16."""
    return name if flavour == "fp32" else f"{name}_{flavour}"


def write_graphs(folder, model, *, opset=DEFAULT_OPSET, fp16=False, engine=False, source=None,
                 config_yaml="", batch_size=1, standard=True):  # fmt: skip
    """Trace ``model``'s graphs (fp32, and fp16 if asked; with ``engine`` the engine flavour
    of each too; ``standard=False``: the engine flavour alone) into ``folder`` with their
    manifest (no parity figures yet); returns the manifest."""
    preprocess = preprocess_of(model)
    graphs, flavours = {}, {}
    kinds = ("standard",) * standard + ("engine",) * engine
    if not kinds:
        raise ValueError("write_graphs: no graphs asked for (standard=False, engine=False)")
    for kind in kinds:
        for precision in ("fp32", "fp16") if fp16 else ("fp32",):
            flavour = precision if kind == "standard" else f"{kind}_{precision}"
            t = time.perf_counter()
            built = build_graphs(
                model, preprocess, opset, fp16=precision == "fp16", engine=kind == "engine"
            )
            for name, proto in built.items():
                graphs[graph_key(flavour, name)] = proto
                flavours[graph_key(flavour, name)] = (flavour, name)
            log.info("traced the %s graphs in %.0f s", flavour, time.perf_counter() - t)
    files = save_graphs(graphs, folder)
    del graphs
    specs = {}
    for key, file in files.items():
        flavour, name = flavours[key]
        specs.setdefault(flavour, {})[name] = Graph(file=file, **io_spec(folder / file))
    sizes = ", ".join(f"{p.name} {_mb(p):.1f} MB" for p in sorted(Path(folder).iterdir()))
    log.info("wrote and checked the graphs (onnx.checker, shape inference): %s", sizes)
    manifest = new_manifest(
        source=source or {"checkpoint": None, "sha256": None},
        config_yaml=config_yaml,
        model=model,
        opset=opset,
        graphs=specs,
        batch_size=batch_size,
    )
    package_format.write(folder, manifest)
    return manifest


def verify_engine_graphs(model, folder, samples, what, threads, fp16):
    """The engine graphs' parity figures on ONNX Runtime (what TensorRT builds, checked here
    on every operator but TensorRT's kernels): ``engine_fp32_vs_torch`` against PyTorch and
    ``engine_fp16_vs_engine_fp32``, the contracts of the standard graphs."""
    from seqnet_runtime.onnx_backend import OnnxSession
    from seqnet_train.modeling.inference import optimize_for_inference

    session = OnnxSession(folder, precision="fp32", graphs="engine", threads=threads)
    fp32, runs = verify_fp32(optimize_for_inference(model), session, samples)
    parity = {"engine_fp32_vs_torch": fp32 | {"on": what}}
    del session
    if fp16:
        session = OnnxSession(folder, precision="fp16", graphs="engine", threads=threads)
        parity["engine_fp16_vs_engine_fp32"] = verify_fp16(session, samples, runs) | {"on": what}
        del session
    for key, figures in parity.items():
        log.info(
            "verified %s on ONNX Runtime: %s", parity_name(key),
            "within the contract" if figures["passed"] else "BEYOND the contract",
        )  # fmt: skip
    return parity


def parity_name(key):
    """A parity entry's name for people: ``fp32_vs_torch`` -> "the fp32 graphs vs PyTorch",
    ``fp32_vs_torch_openvino`` -> "the fp32 graphs on openvino vs PyTorch",
    ``engine_fp16_vs_engine_fp32`` -> "engine_fp16 vs engine_fp32"."""
    ours, _, ref = key.partition("_vs_")
    if ref == "torch" or ref.startswith("torch_"):
        on = ref[len("torch_") :]
        return f"the {ours} graphs{f' on {on}' if on else ''} vs PyTorch"
    return f"{ours} vs {ref}"


def export_package(
    ckpt,
    cfg=None,
    out=None,
    fp16=False,
    opset=DEFAULT_OPSET,
    engine_build=False,
    verify_images=None,
    force=False,
    threads=None,
    engine_graphs=False,
    gpu_arch=None,
    int8=False,
    calib=None,
    calib_video=None,
    calib_frames=None,
):
    """Export ``ckpt`` to a verified package at ``out``; returns (out, manifest).

    ``engine_graphs``: the engine graph flavour too, verified as the standard graphs are on
    ONNX Runtime; ``engine_build``: TensorRT engines built from it (``seqnet_export.engine``)
    for ``gpu_arch`` (``--gpu-arch``), the engine graphs implied."""
    start = time.perf_counter()
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in NEEDED:
        if importlib.util.find_spec(name) is None:
            raise SeqNetError(f"{name} is not installed: pip install 'seqnet[train,runtime]'")
    check_opset(opset)
    targets = None
    if engine_build:
        if what := engine.missing(gpu_arch):
            raise SeqNetError(f"--engine: {what}; export without --engine here")
        targets = engine.parse_targets(gpu_arch, engine.library()[0], engine.local_target())[0]
    elif gpu_arch:
        raise SeqNetError("--gpu-arch: engines are built with --engine only")
    engine_graphs = engine_graphs or engine_build
    if verify_images is not None and not Path(verify_images).is_dir():
        raise SeqNetError(f"--verify-images {verify_images}: no such folder")
    checkpoint = read_checkpoint(ckpt)
    config, source = load_config(checkpoint, ckpt, cfg)
    out = check_destination(out or default_out(ckpt))
    if threads:
        torch.set_num_threads(threads)
    model = load_model(checkpoint, ckpt, config)
    del checkpoint
    m = config.MODEL
    log.info(
        "loaded %s (config from %s): %s, input %d..%d px, %d detections per image",
        ckpt, source, m.BACKBONE, config.INPUT.MIN_SIZE, config.INPUT.MAX_SIZE,
        m.ROI_HEAD.DETECTIONS_PER_IMAGE_TEST,
    )  # fmt: skip
    samples = (
        folder_images(verify_images) if verify_images else synthetic_images()
    )  # read before the export: a bad image fails early
    calibration = quantize.check_options(int8, calib, calib_video, calib_frames)  # so too

    from seqnet_runtime.onnx_backend import OnnxSession
    from seqnet_train.modeling.inference import optimize_for_inference

    with fs.atomic_dir(out) as tmp:
        source = {"checkpoint": Path(ckpt).name, "sha256": fs.sha256_file(ckpt)}
        manifest = write_graphs(
            tmp, model, opset=opset, fp16=fp16, engine=engine_graphs, source=source,
            config_yaml=config.dump(), batch_size=config.INPUT.BATCH_SIZE_TEST,
        )  # fmt: skip

        what = f"{verify_images}" if verify_images else "synthetic scenes"
        session = OnnxSession(tmp, precision="fp32", threads=threads)
        fp32, runs = verify_fp32(optimize_for_inference(model), session, samples)
        fp32["on"] = what
        del session
        log.info(
            "verified fp32 on ONNX Runtime against PyTorch (%d %s): %s",
            len(samples), what, "within the contract" if fp32["passed"] else "BEYOND the contract",
        )  # fmt: skip
        parity = {"fp32_vs_torch": fp32}
        for name in verifying_backends():  # an engine can load a graph and compute it wrong
            session = load(tmp, name, precision="fp32", threads=threads)
            figures, _ = verify_fp32(optimize_for_inference(model), session, samples)
            parity[f"fp32_vs_torch_{name}"] = figures | {"on": what}
            del session
            log.info(
                "verified fp32 on %s against PyTorch: %s", name,
                "within the contract" if figures["passed"] else "BEYOND the contract",
            )  # fmt: skip
        if fp16:
            session = OnnxSession(tmp, precision="fp16", threads=threads)
            parity["fp16_vs_fp32"] = verify_fp16(session, samples, runs) | {"on": what}
            del session
            log.info(
                "verified fp16 against fp32: %s",
                "within the contract"
                if parity["fp16_vs_fp32"]["passed"]
                else "BEYOND the contract",
            )
        if engine_graphs:
            parity |= verify_engine_graphs(model, tmp, samples, what, threads, fp16)
        if int8:  # QDQ trunk, calibrated; verified against fp32 on every CPU backend
            backends_here = ["onnxruntime", *verifying_backends()]
            parity |= quantize.add_int8(tmp, manifest, calibration, samples, runs,
                                        backends_here, threads)  # fmt: skip
        passed = all(p["passed"] for p in parity.values())
        parity["passed"] = passed
        parity["forced"] = bool(force and not passed)
        manifest.parity = parity
        for line in parity_table(parity):
            log.info(line)
        if not passed and not force:
            failed = [
                parity_name(k) for k, v in parity.items() if isinstance(v, dict) and not v["passed"]
            ]
            raise SeqNetError(
                f"{' and '.join(failed)}: beyond the parity contract (figures above); nothing "
                "written (--force writes the package, marked as failing parity)"
            )
        if engine_build:
            built = time.perf_counter()
            manifest.engines.extend(engine.build_engines(tmp, manifest, targets))
            log.info(
                "built %d TensorRT engines (%s) in %.0f s", len(manifest.engines),
                ", ".join(targets), time.perf_counter() - built,
            )  # fmt: skip
        package_format.write(tmp, manifest)
    log.info(
        "wrote %s in %.0f s%s", out, time.perf_counter() - start,
        "" if passed else " (FAILING parity, --force)",
    )  # fmt: skip
    return out, manifest


def run(args):
    """The console command (``seqnet_export.cli``): ``args`` has the options as attributes."""
    export_package(
        args.ckpt,
        cfg=args.cfg,
        out=args.out,
        fp16=args.fp16,
        opset=args.opset,
        engine_build=args.engine,
        verify_images=args.verify_images,
        force=args.force,
        threads=args.threads,
        engine_graphs=getattr(args, "engine_graphs", False),
        gpu_arch=getattr(args, "gpu_arch", None),
        int8=getattr(args, "int8", False),
        calib=getattr(args, "calib", None),
        calib_video=getattr(args, "calib_video", None),
        calib_frames=getattr(args, "calib_frames", None),
    )
