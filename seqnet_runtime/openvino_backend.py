"""The OpenVINO backend: a graph runner (``seqnet_runtime.runner``) on OpenVINO's CPU plugin,
and the package session that uses it (``load(package, backend="openvino")``).

fp32 graphs compute in fp32: OpenVINO's CPU plugin otherwise picks bf16 on CPUs with native
bf16 (AVX-512 BF16 or AMX: it did on an AMD EPYC with avx512_bf16), which is not fp32 parity.
Its CPU plugin computes float64 in float32 and int64 in int32; the package graphs are written
so that this changes nothing (seqnet_export.preprocess).

``precision="bf16"`` runs the fp32 graphs with their convolutional trunk in bf16 and fp32 at its
edges (``bf16_trunk``): explicit Convert nodes around the trunk's convolutions and what joins
them, compiled with the fp32 precision hint, so that the pre-processing, box arithmetic,
RoIAlign, NMS, the linear heads and the norms stay fp32 (the whole-graph bf16 hint put the
resize and box arithmetic in bf16 too: 4-8 px steps near 1500 px, -1.1 AP). Only on CPUs with
native bf16 matrix units (``BF16_UNITS``); refused in one line elsewhere. int8 graphs (QDQ) run
as they are: OpenVINO computes their quantized convolutions in int8.
"""

import functools
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints
from openvino import opset13 as opset

from seqnet_runtime.cpu import cpu_features
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.runner import GraphRunner
from seqnet_runtime.session import PackageSession

# CPU features with which OpenVINO computes bf16 convolutions natively: AMX tiles, or AVX-512
# BF16 (AMD Zen 4 and later, Intel Cooper Lake and later); elsewhere bf16 is emulated, slower
BF16_UNITS = ("amx_bf16", "avx512_bf16")
TRUNK_GLUE = ("Add", "Relu", "MaxPool")  # what joins the trunk's convolutions


def _one_line(error):
    """OpenVINO's multi-line exception text -> its most specific line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return lines[-1] if lines else error.__class__.__name__


def check_bf16(features=None):
    """Fail in one line unless this CPU computes bf16 natively (``BF16_UNITS``)."""
    features = cpu_features() if features is None else features
    if not set(BF16_UNITS) & set(features):
        raise SeqNetError(
            "--precision bf16: this CPU has no native bf16 matrix units (neither AMX-BF16 nor "
            "AVX-512 BF16 in /proc/cpuinfo), where bf16 is slower than fp32; use fp32 or int8"
        )


def _graph(model):
    """{name: op}, {name: [parent names]}, {name: [child names]} of an OpenVINO model."""
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    parents = {
        name: [i.get_source_output().get_node().get_friendly_name() for i in op.inputs()]
        for name, op in ops.items()
    }
    children = {name: [] for name in ops}
    for name, names in parents.items():
        for parent in names:
            children[parent].append(name)
    return ops, parents, children


def _closure(starts, edges):
    seen, stack = set(), list(starts)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack += edges[name]
    return seen


def trunk(model):
    """Names of the trunk's ops of an OpenVINO model read from a package graph (as the int8
    flavour's, seqnet_export.quantize): the convolutions upstream of a ROIAlign's feature map
    (the backbone), reading it (the RPN head's shared 3x3; not its predictors) or downstream of
    a ROIAlign (the RoI heads' res5), and the fp32 Add/Relu/MaxPool ops joined to them through
    such ops only (bias adds, residuals, the stem's max-pool)."""
    ops, parents, children = _graph(model)
    rois = [name for name, op in ops.items() if op.get_type_name() == "ROIAlign"]
    features = {parents[r][0] for r in rois}
    upstream = _closure(features, parents)
    downstream = _closure([c for r in rois for c in children[r]], children)
    convs = {
        name for name, op in ops.items()
        if op.get_type_name() == "Convolution"
        and (name in upstream or name in downstream or parents[name][0] in features)
    }  # fmt: skip

    def glue(name):
        op = ops[name]
        return op.get_type_name() in TRUNK_GLUE and op.get_output_element_type(0) == ov.Type.f32

    region, stack = set(), list(convs)
    while stack:
        name = stack.pop()
        if name not in region:
            region.add(name)
            stack += [n for n in parents[name] + children[name] if n not in convs and glue(n)]
    return region


def bf16_trunk(model):
    """Put ``model``'s trunk (``trunk``) in bf16 in place: its fp32 inputs from outside
    converted to bf16 (weights and biases fold into bf16 constants), its outputs read outside
    converted back to fp32. Returns the number of trunk ops."""
    ops, _, _ = _graph(model)
    region = trunk(model)
    if not any(ops[name].get_type_name() == "Convolution" for name in region):
        raise SeqNetError("bf16: the graph has no convolutional trunk to run in bf16")
    edges = []  # (output, readers outside the trunk): computed before any type changes
    for name in region:
        for output in ops[name].outputs():
            outside = [t for t in output.get_target_inputs()
                       if t.get_node().get_friendly_name() not in region]  # fmt: skip
            if outside and output.get_element_type() == ov.Type.f32:
                edges.append((output, outside))
    for name in region:
        for port in ops[name].inputs():
            source = port.get_source_output()
            inside = source.get_node().get_friendly_name() in region
            if not inside and source.get_element_type() == ov.Type.f32:
                port.replace_source_output(opset.convert(source, ov.Type.bf16).output(0))
    for output, outside in edges:
        back = opset.convert(output, ov.Type.f32).output(0)
        for port in outside:
            port.replace_source_output(back)
    model.validate_nodes_and_infer_types()
    return len(region)


@functools.cache
def openvino_core():
    """The process's one OpenVINO Core. Its CPU plugin gives the thread that compiles a model an
    alternate signal stack and puts the previous one back when the plugin is destroyed: with a
    Core per graph, plugins destroyed out of order left the thread on a freed stack, and the
    next signal it took (SIGCHLD, when a child process ended) crashed the process."""
    return ov.Core()


class OpenVinoRunner(GraphRunner):
    """``OpenVinoRunner(path, device="cpu", threads=None)``: the ONNX graph at ``path`` (its
    external weights beside it), compiled for the CPU with dynamic shapes, fp32, latency;
    ``OpenVinoBf16Runner`` its trunk in bf16."""

    name = "openvino"
    devices = ("cpu",)
    bf16 = False

    def __init__(self, path, device="cpu", threads=None):
        self.check_device(device)
        path = Path(path)
        if not path.is_file():
            raise SeqNetError(f"{path}: no such graph file")
        config = {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            hints.inference_precision: ov.Type.f32,
        }
        if threads:
            config[props.inference_num_threads] = int(threads)
        try:
            core = openvino_core()
            model = core.read_model(str(path))
            if self.bf16:
                bf16_trunk(model)
            self.model = core.compile_model(model, "CPU", config)
        except RuntimeError as e:
            raise SeqNetError(f"{path}: OpenVINO cannot load it: {_one_line(e)}") from None
        self.request = self.model.create_infer_request()

    def run(self, outputs, feeds):
        self.request.infer({name: np.asarray(a, order="C") for name, a in feeds.items()})
        return [self.request.get_tensor(name).data.copy() for name in outputs]


class OpenVinoBf16Runner(OpenVinoRunner):
    """An fp32 graph with its trunk in bf16 (``bf16_trunk``)."""

    bf16 = True


class OpenVinoSession(PackageSession):
    """A model package on OpenVINO (options: ``PackageSession``'s); ``precision="bf16"`` runs
    the fp32 graphs with the trunk in bf16 where the CPU computes bf16 natively."""

    runner = OpenVinoRunner

    def __init__(self, package, device="cpu", precision=None, **options):
        if precision != "bf16":
            super().__init__(package, device, precision, **options)
            return
        self.runner.check_device(device)
        check_bf16()
        self.runner = OpenVinoBf16Runner
        super().__init__(package, device, "fp32", **options)
        self.precision = "bf16"
        self.key = self.manifest.key("fp32, bf16 trunk (openvino)", self.thresholds)
