"""TensorRT engines from a package's ``engine`` graphs (``seqnet-export --engine``).

One builder for both TensorRT libraries, whichever is installed (full TensorRT first):

- full TensorRT 10/11 (``import tensorrt``, from NVIDIA's index): builds on the GPU the engine
  will run on, for that GPU's compute capability only;
- TensorRT-RTX (``import tensorrt_rtx_bindings``, ``pip install 'seqnet[tensorrt]'``): builds
  ahead of time on a CPU, no GPU needed, for explicit compute capabilities (``TARGETS``: 7.5
  with fp16 graphs only, 8.0, 8.6, 8.9, 12.0, 12.1; not 9.0, the H100/H200: full TensorRT
  builds those), with no timing cache (it asks for a GPU).

Every engine is a strongly typed network parsed from one engine graph (``engine_fp32`` or
``engine_fp16``: the graph's own types decide each layer's precision; no precision flags), with
every dynamic input in one optimisation profile (``profile``), TF32 off (fp32 layers stay
fp32: the parity contract), named by graph, flavour, target
and library version (``engine_name``) and recorded in the manifest as a
``seqnet_runtime.package.Engine``. An engine runs only with the library and version that built
it, on a GPU of its compute capability (``seqnet_runtime.tensorrt_backend`` picks it so).

Errors: the engine graphs follow rules TensorRT needs (``rule_violations``: no float64, no
RoiAlign / NonMaxSuppression, TopK k <= 3840, fixed-size outputs), checked first, each
violating node named; then every node the parser rejects, and every layer the builder rejects
(found by cutting each failing node out and trying again, ``MAX_ROUNDS`` times at most), each
with its ONNX node name and operator, in one SeqNetError.
"""

import importlib
import importlib.util
import logging
import re
import time
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.package import Engine

log = logging.getLogger(__name__)

# library name (as the manifest records it) -> Python module, in the order tried
LIBRARIES = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt_rtx_bindings"}
TARGETS = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")  # TensorRT-RTX's
ALL_TARGETS = ("sm80", "sm86", "sm89", "sm120", "sm121")  # "all": fp32 and fp16 build
FP16_ONLY = ("sm75",)  # TensorRT-RTX has no fp32 GEMM for 7.5
TOPK_LIMIT = 3840  # TensorRT's largest TopK k (3841 fails)
MAX_ROUNDS = 12  # parse / build attempts to find every failing node

# the optimisation profile: (min, opt, max) per named dynamic dimension of the graphs
MAX_BATCH = 4
MIN_SIDE, OPT_SIDE, MAX_SIDE = 32, (1080, 1920), 4096
MAX_BOXES = 64  # query boxes per embed call (the session splits more: GraphRunner.max_boxes)
INSTALL_RTX = (
    "pip install 'seqnet[tensorrt]' (TensorRT-RTX, builds on a CPU), or full TensorRT 10/11 "
    "(pip install tensorrt, from NVIDIA's own package index)"
)


# ----------------------------------------------------------------------- the library --- #
def library():
    """(name, module) of the TensorRT library installed (full TensorRT first), or None."""
    for name, module in LIBRARIES.items():
        if importlib.util.find_spec(module) is None:
            continue
        try:
            return name, importlib.import_module(module)
        except (ImportError, OSError):  # a placeholder wheel, or its libraries absent
            continue
    return None


def local_target():
    """``smXY`` of the first CUDA GPU (through cuda-python), or None where there is none."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    ok = cudart.cudaError_t.cudaSuccess
    attr = cudart.cudaDeviceAttr
    try:
        err, count = cudart.cudaGetDeviceCount()
        if err != ok or not count:
            return None
        err_major, major = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, 0)
        err_minor, minor = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, 0)
    except Exception:  # noqa: BLE001 - no driver: cuda-python raises or returns errors
        return None
    return f"sm{major}{minor}" if err_major == ok and err_minor == ok else None


def parse_targets(spec, name, here=None):
    """The targets to build for: ``spec`` (``--gpu-arch``: ``sm80,sm86`` or ``all``; None: this
    GPU, else every target TensorRT-RTX builds on a CPU) for library ``name``; ``here``: this
    machine's GPU (``local_target``). A target the library cannot build is a one-line error."""
    if name == "tensorrt":  # full TensorRT builds for the GPU it runs on
        if here is None:
            return None, (
                "full TensorRT builds engines on the GPU they will run on, and no NVIDIA GPU is "
                "visible here (TensorRT-RTX builds on a CPU: pip install 'seqnet[tensorrt]')"
            )
        wanted = [here] if spec in (None, "all") else _split(spec)
        other = [t for t in wanted if t != here]
        if other:
            return None, (
                f"--gpu-arch {','.join(other)}: full TensorRT builds for this GPU ({here}) only; "
                "build on a GPU of that architecture, or with TensorRT-RTX for "
                f"{', '.join(TARGETS)}"
            )
        return wanted, None
    if spec is None:
        wanted = [here] if here in TARGETS else list(ALL_TARGETS)
    elif spec == "all":
        wanted = list(ALL_TARGETS)
    else:
        wanted = _split(spec)
    bad = [t for t in wanted if t not in TARGETS]
    if bad:
        why = (
            " (9.0, the H100/H200, is built by full TensorRT 10/11 on such a GPU)"
            if "sm90" in bad
            else ""
        )
        return None, (
            f"--gpu-arch {','.join(bad)}: TensorRT-RTX builds for {', '.join(TARGETS)} or 'all'"
            + why
        )
    return list(dict.fromkeys(wanted)), None


def _split(spec):
    out = []
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        part = part.lower()
        if re.fullmatch(r"\d+(\.\d+)?", part):  # 8.6 or 86
            part = "sm" + part.replace(".", "")
        out.append(part)
    return out


def missing(gpu_arch=None):
    """None when engines can be built here for ``gpu_arch`` (``--gpu-arch``), else what is
    missing, in one line."""
    found = library()
    if found is None:
        return f"no TensorRT is installed: {INSTALL_RTX}"
    name, _ = found
    here = local_target() if name == "tensorrt" or gpu_arch is None else None
    return parse_targets(gpu_arch, name, here)[1]


def unavailable_here():
    """None when engines can be built for, and run on, this machine's GPU; else why, in one
    line (no TensorRT, no GPU, or a GPU the installed TensorRT does not build for)."""
    found = library()
    if found is None:
        return f"no TensorRT is installed: {INSTALL_RTX}"
    here = local_target()
    if here is None:
        return "no NVIDIA GPU (or driver) is visible to cuda-python"
    return parse_targets(here, found[0], here)[1]


def engine_name(graph, flavour, target, name, version):
    """``detect_engine_fp16.sm86.tensorrt_rtx-1.7.1.116.engine``: graph, flavour (its
    precision), target and library version, so that engines of several kinds sit side by side."""
    return f"{graph}_{flavour}.{target}.{name}-{version}.engine"


# ------------------------------------------------------------------- the graph rules --- #
def _subgraphs(graph):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                yield from _subgraphs(g)


def _constants(model):
    out = {}
    for graph in _subgraphs(model.graph):
        for init in graph.initializer:
            if init.data_location != TensorProto.EXTERNAL:
                out[init.name] = init
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                out[node.output[0]] = node.attribute[0].t
    return out


def rule_violations(model):
    """[(node name, operator, why)] of every node of ``model`` (a ModelProto, subgraphs
    included) that breaks a rule of the engine graphs (DEPLOY.md): no float64 (TensorRT turns
    it into float32 silently), no RoiAlign (a CUDA plugin) or NonMaxSuppression (none in
    TensorRT-RTX), no NonZero / Unique (data-dependent shapes), TopK with a constant k <= 3840,
    the default domain only; and graph outputs of fixed size (every dimension a number or an
    input's named dimension)."""
    out = []
    banned = {
        "RoiAlign": "RoIAlign is a CUDA plugin in TensorRT (use seqnet_export.engine_ops)",
        "NonMaxSuppression": "TensorRT-RTX has no NMS (use seqnet_export.engine_ops)",
        "NonZero": "its output size depends on the data",
        "Unique": "its output size depends on the data",
    }
    constants = _constants(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is a help here, the node checks stand alone
        inferred = model
    for graph in _subgraphs(model.graph):
        for node in graph.node:
            name = node.name or (node.output[0] if node.output else "?")
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                out.append((name, f"{node.domain}.{op}", "not a standard ONNX operator"))
            if op in banned:
                out.append((name, op, banned[op]))
            for attr in node.attribute:
                if op == "Cast" and attr.name == "to" and attr.i == TensorProto.DOUBLE:
                    out.append((name, op, "casts to float64"))
                if (
                    attr.type == onnx.AttributeProto.TENSOR
                    and attr.t.data_type == TensorProto.DOUBLE
                ):
                    out.append((name, op, "a float64 constant"))
            if op == "TopK":
                k = constants.get(node.input[1])
                k = None if k is None else int(onnx.numpy_helper.to_array(k).reshape(-1)[0])
                if k is None:
                    out.append((name, op, "k is not a constant"))
                elif k > TOPK_LIMIT:
                    out.append((name, op, f"k = {k} > {TOPK_LIMIT}, TensorRT's largest"))
        for init in graph.initializer:
            if init.data_type == TensorProto.DOUBLE:
                out.append((init.name, "initializer", "a float64 tensor"))
    producers = {o: n for g in _subgraphs(inferred.graph) for n in g.node for o in n.output}
    for graph in _subgraphs(inferred.graph):
        for value in (*graph.input, *graph.output, *graph.value_info):
            if value.type.tensor_type.elem_type == TensorProto.DOUBLE:
                node = producers.get(value.name)
                where = (node.name, node.op_type) if node is not None else (value.name, "input")
                out.append((*where, f"{value.name} is float64"))
    named = {d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim}
    for output in inferred.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            if not (dim.HasField("dim_value") or dim.dim_param in named):
                node = producers.get(output.name)
                where = (node.name, node.op_type) if node is not None else (output.name, "?")
                out.append((*where, f"output {output.name} has a size that depends on the data"))
                break
    return list(dict.fromkeys(out))


def _report(path, failures):
    lines = "; ".join(f"{name} ({op}): {why}" for name, op, why in failures)
    return f"{Path(path).name}: {len(failures)} node(s) TensorRT cannot build: {lines}"


# ---------------------------------------------------------------------- the profile --- #
def profile(graph, preprocess):
    """{input name: (min, opt, max) shapes} of a manifest Graph's dynamic inputs (the named
    dimensions: batch, height, width, resized_height, resized_width, n_boxes)."""
    opt_h, opt_w = preprocess.resized_size(*OPT_SIDE)
    dims = {
        "batch": (1, 1, MAX_BATCH),
        "height": (MIN_SIDE, OPT_SIDE[0], MAX_SIDE),
        "width": (MIN_SIDE, OPT_SIDE[1], MAX_SIDE),
        "resized_height": (1, opt_h, max(preprocess.min_size, preprocess.max_size)),
        "resized_width": (1, opt_w, max(preprocess.min_size, preprocess.max_size)),
        "n_boxes": (1, 4, MAX_BOXES),
    }
    out = {}
    for spec in graph.inputs:
        shape = spec["shape"]
        if all(isinstance(d, int) and d > 0 for d in shape):
            continue
        unknown = [d for d in shape if isinstance(d, str) and d not in dims]
        if unknown:
            raise SeqNetError(
                f"{graph.file}: input {spec['name']} has dimensions {unknown} that the engine "
                "profile does not know (seqnet_export.engine.profile)"
            )
        out[spec["name"]] = tuple(
            tuple(d if isinstance(d, int) and d > 0 else dims[d][i] for d in shape)
            for i in range(3)
        )
    return out


# ------------------------------------------------------------------------- building --- #
def _logger(trt):
    """A TensorRT logger that keeps the errors (warnings go to the debug log)."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, message):
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(str(message))
            elif severity == trt.ILogger.Severity.WARNING:
                log.debug("TensorRT: %s", message)

    return Logger()


def _cut(model, nodes):
    """``model`` without ``nodes`` (names): their outputs become graph inputs (types and shapes
    from shape inference), so that the parser and the builder go on to the next failure."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep, new_inputs = [], []
    for node in out.graph.node:
        if node.name in nodes:
            for name in node.output:
                if name in infos:
                    new_inputs.append(infos[name])
                else:
                    new_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    out.graph.input.extend(new_inputs)
    return out


def _failing_nodes(errors, network, nodes):
    """[(node name, op, message)] for the builder's error messages that name a layer (a layer
    of an ONNX node carries ``[ONNX Layer: name]`` in its metadata)."""
    layer_node = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        meta = re.search(r"\[ONNX Layer: ([^\]]+)\]", getattr(layer, "metadata", "") or "")
        if meta:
            layer_node[layer.name] = meta.group(1)
    found = []
    for message in errors:
        names = [
            layer_node[layer]
            for layer in sorted(layer_node, key=len, reverse=True)
            if layer in message
        ]
        node = names[0] if names else next((n for n in nodes if n in message), None)
        text = " ".join(message.split())[:300]
        found.append((node or "?", nodes.get(node, "?"), text))
    return found


class Builder:
    """Engines of one library (``library()``'s) for a package's engine graphs."""

    def __init__(self, found=None):
        found = found or library()
        if found is None:
            raise SeqNetError(f"--engine: no TensorRT is installed: {INSTALL_RTX}")
        self.name, self.trt = found
        self.version = self.trt.__version__

    def _parse(self, builder, logger, model, path):
        """((network, parser), []) of ``model`` (a ModelProto whose weights lie beside
        ``path``), or (None, [(node, op, why)]) of the parser's errors."""
        trt = self.trt
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if parser.parse(model.SerializeToString(), str(path)):
            return (network, parser), []
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            errors.append((e.node_name() or f"node {e.node()}", e.node_operator() or "?",
                           " ".join(str(e.desc()).split())[:300]))  # fmt: skip
        return None, errors

    def _config(self, builder, target, shapes):
        trt = self.trt
        config = builder.create_builder_config()
        # fp32 is fp32: no TF32 in the fp32 graphs' convolutions and MatMuls, nor in the fp16
        # graphs' fp32 islands (RoIAlign, box decoding, NMS)
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if self.name == "tensorrt_rtx":
            config.num_compute_capabilities = 1
            capability = getattr(trt.ComputeCapability, target.upper())
            if not config.set_compute_capability(capability, 0):
                raise SeqNetError(f"--engine: TensorRT-RTX {self.version} refused target {target}")
        optimisation = builder.create_optimization_profile()
        for name, (low, best, high) in shapes.items():
            optimisation.set_shape(name, low, best, high)
        config.add_optimization_profile(optimisation)
        return config

    def build(self, path, shapes, targets, rules=True):
        """{target: (engine bytes, seconds)} of the ONNX graph at ``path`` with the profile
        ``shapes`` ({input: (min, opt, max)}), parsed once; every failing node in one
        SeqNetError (``rules``: the engine graph rules first, ``rule_violations``)."""
        model = onnx.load(str(path), load_external_data=False)
        violations = rule_violations(model) if rules else []
        if violations:
            raise SeqNetError("--engine: " + _report(path, violations))
        logger = _logger(self.trt)
        builder = self.trt.Builder(logger)
        parsed, errors = self._parse(builder, logger, model, path)
        if parsed is None:
            self._fail(path, targets[0], self._diagnose(builder, logger, model, path, shapes,
                                                        targets[0], errors))  # fmt: skip
        network = parsed[0]
        out = {}
        for target in targets:
            logger.errors.clear()
            config = self._config(builder, target, shapes)
            start = time.perf_counter()
            serialized = builder.build_serialized_network(network, config)
            seconds = time.perf_counter() - start
            if serialized is None:
                nodes = {n.name: n.op_type for n in model.graph.node}
                errors = _failing_nodes(logger.errors or ["the builder failed"], network, nodes)
                del parsed, network
                self._fail(path, target, self._diagnose(builder, logger, model, path, shapes,
                                                        target, errors))  # fmt: skip
            out[target] = (bytes(serialized), seconds)
            del serialized, config
        return out

    def _diagnose(self, builder, logger, model, path, shapes, target, errors):
        """Every failing node: each round cuts the nodes of the last ``errors`` out of the
        graph (their outputs become inputs) and parses and builds what is left again."""
        nodes = {n.name: n.op_type for n in model.graph.node}
        failures = list(errors)
        candidate = model
        for _ in range(MAX_ROUNDS):
            cut = {e[0] for e in errors if e[0] in nodes}
            if not cut:
                break
            candidate = _cut(candidate, cut)
            logger.errors.clear()
            parsed, errors = self._parse(builder, logger, candidate, path)
            if parsed is None:
                failures += errors
                continue
            network = parsed[0]
            config = self._config(builder, target, _with_cut_inputs(network, shapes))
            if builder.build_serialized_network(network, config) is not None:
                break
            errors = _failing_nodes(logger.errors or ["the builder failed"], network, nodes)
            failures += errors
        return list(dict.fromkeys(failures))

    def _fail(self, path, target, failures):
        raise SeqNetError(
            f"--engine: {self.name} {self.version}, {target}: "
            + _report(path, failures or [("?", "?", "unknown")])
        )


def _with_cut_inputs(network, shapes):
    """``shapes`` plus a (1, 1, 64)-per-dynamic-dimension entry for inputs the cuts added."""
    out = dict(shapes)
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if tensor.name in out or all(d >= 0 for d in dims):
            continue
        out[tensor.name] = tuple(tuple(d if d >= 0 else size for d in dims) for size in (1, 1, 64))
    return out


def build_engines(package, manifest, targets=None, found=None):
    """Build every engine graph flavour of the package at ``package`` (``manifest``: its
    Manifest) for ``targets`` (``parse_targets``' list); returns the Engine entries (the
    caller stores them in the manifest). Logs one line per engine."""
    builder = Builder(found)
    if targets is None:
        targets, problem = parse_targets(None, builder.name, local_target())
        if problem:
            raise SeqNetError(f"--engine: {problem}")
    flavours = [f for f in ("engine_fp32", "engine_fp16") if f in manifest.graphs]
    if not flavours:
        raise SeqNetError(f"{package}: no engine graphs to build (seqnet-export --engine)")
    entries = []
    for flavour in flavours:
        wanted = [t for t in targets if flavour == "engine_fp16" or t not in FP16_ONLY]
        skipped = sorted(set(targets) - set(wanted))
        if skipped:
            log.info("%s: not for %s (TensorRT-RTX has no fp32 GEMM there)", flavour, skipped)
        for graph, spec in manifest.graphs[flavour].items():
            shapes = profile(spec, manifest.preprocess)
            built = builder.build(Path(package) / spec.file, shapes, wanted)
            for target, (data, seconds) in built.items():
                name = engine_name(graph, flavour, target, builder.name, builder.version)
                (Path(package) / name).write_bytes(data)
                entries.append(Engine(
                    file=name, graph=graph, flavour=flavour, target=target,
                    library=builder.name, version=builder.version,
                    seconds=round(seconds, 2), bytes=len(data),
                    profile={k: [list(s) for s in v] for k, v in shapes.items()},
                ))  # fmt: skip
                log.info("built %s in %.1f s (%.1f MB)", name, seconds, len(data) / 2**20)
    return entries
