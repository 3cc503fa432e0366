"""TensorRT engines from a package's graphs (``seqnet-export --engine``), where TensorRT and a
GPU exist.

TensorRT 10 builds the fp32 graph with ``BuilderFlag.FP16``; TensorRT 11 has no such flag and
builds the fp16 graph as a strongly typed network. The optimisation profile spans image sizes
from ``MIN_SIDE`` to ``MAX_SIDE`` (the graphs resize any input to the package's size rule).

Not yet buildable as exported (DEPLOY.md "Known limits"): the graphs compute the resize rule and
PyTorch's bilinear sample positions in float64 (TensorRT has no float64), the RPN keeps
``pre_nms_top_n`` = 6000 proposals (TensorRT's TopK takes k <= 3840, its NMS layer at most
5000 boxes per class). ``build`` reports the parser's or builder's first error in one line.
"""

import importlib.util
import logging
from pathlib import Path

from seqnet_runtime.errors import SeqNetError

log = logging.getLogger(__name__)

MIN_SIDE, OPT_SIDE, MAX_SIDE = 32, (1080, 1920), 4096
MAX_BATCH = 8


def missing():
    """None when an engine can be built here, else what is missing, in one line."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install tensorrt: TensorRT 10 or 11)"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (used here to find a CUDA GPU)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (TensorRT builds engines for the GPU it runs on)"
    return None


def engine_name(graph, gpu, trt_version):
    safe = "".join(c if c.isalnum() else "-" for c in gpu).strip("-").lower()
    return f"{graph}.{safe}.trt{trt_version}.engine"


def build(package, manifest, graph="detect"):
    """Build ``graph``'s engine into the package; returns its manifest entry."""
    import tensorrt as trt
    import torch

    major = int(trt.__version__.split(".")[0])
    precision = "fp16" if major >= 11 and "fp16" in manifest["graphs"] else "fp32"
    path = Path(package) / manifest["graphs"][precision][graph]["file"]
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # ROIAlign_TRT
    builder = trt.Builder(logger)
    flags = 0
    if major >= 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        error = parser.get_error(0) if parser.num_errors else "unknown error"
        raise SeqNetError(f"--engine: TensorRT {trt.__version__} cannot parse {path.name}: {error}")
    config = builder.create_builder_config()
    if major < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(
        "images",
        (1, 3, MIN_SIDE, MIN_SIDE),
        (1, 3, *OPT_SIDE),
        (MAX_BATCH, 3, MAX_SIDE, MAX_SIDE),
    )
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SeqNetError(f"--engine: TensorRT {trt.__version__} could not build {path.name}")
    gpu = torch.cuda.get_device_name()
    name = engine_name(graph, gpu, trt.__version__)
    (Path(package) / name).write_bytes(bytes(serialized))
    log.info("built %s", name)
    return {"file": name, "graph": graph, "precision": precision, "gpu": gpu,
            "tensorrt": trt.__version__}  # fmt: skip
