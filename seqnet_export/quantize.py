"""The ``int8`` graph flavour (``seqnet-export --int8``): QDQ graphs whose convolutional trunk
computes in int8, everything else in fp32.

What is quantized, by construction (DEPLOY.md: quantizing box arithmetic halved detection AP
in a probe): the trunk's convolutions only, found by their place in the graph:

- the backbone: every Conv that RoiAlign's feature map depends on;
- the RPN head's shared 3x3 convolution, the Conv that reads that feature map (a third of the
  time of an int8 ResNet-50 graph when left in fp32); the RPN's predictors of objectness and
  box deltas, 1x1 convolutions reading its output, stay fp32;
- the RoI heads' convolutions (res5 of the box and re-id heads): every Conv that depends on a
  RoiAlign's output.

Each gets a QuantizeLinear/DequantizeLinear pair on its input and output and int8 weights
(ONNX Runtime's ``quantize_static``, QDQ format, ``nodes_to_quantize`` = those Convs):
per-channel symmetric int8 weights, int32 biases, symmetric int8 activations (zero point 0,
what TensorRT's explicit quantization takes; OpenVINO and ONNX Runtime take it too, so one
file serves all three), their ranges calibrated (min/max) on N frames: the user's images or
video, or synthetic scenes. The pre-processing, the RPN head (its scores and box deltas), box
decoding, RoIAlign and its boxes, TopK, NMS, the linear heads and the norms stay fp32, as in
fp16 packages. ``quantized_nodes`` lists what a graph computes from quantized values, for the
tests and the manifest. Each trunk convolution reads a pair of its own (``_separate``: ONNX
Runtime runs a pair read by two convolutions in fp32 on x86), a ResNet block's downsample
written for that as a subsampling Slice and a stride-1 convolution (the same function).

The int8 graphs (``detect_int8.onnx``, ``embed_int8.onnx``) keep their large tensors in the
package's ``weights.bin``: the fp32 tensors they share with the fp32 graphs (the linear heads,
the RPN head) are the same bytes, the int8 weights are appended.
"""

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.images import list_images, read_pil, to_array
from seqnet_runtime.package import Graph

log = logging.getLogger(__name__)

FLAVOUR = "int8"
DEFAULT_FRAMES = 8  # calibration frames (synthetic scenes unless --calib / --calib-video)
QDQ = ("QuantizeLinear", "DequantizeLinear")
# ops whose inputs must never be quantized values: box arithmetic, RoIAlign, top-k, NMS, norms
FORBIDDEN = ("RoiAlign", "TopK", "NonMaxSuppression", "ReduceL2", "LpNormalization",
             "BatchNormalization", "Gemm", "MatMul", "Resize", "Exp", "Div", "Sub",
             "Sigmoid", "Softmax")  # fmt: skip


# ------------------------------------------------------------------------ the trunk --- #
def _producers(graph):
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph):
    out = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def trunk_convs(proto):
    """Names of the trunk's Conv nodes of ``proto`` (a detect or embed graph): the Convs
    upstream of a RoiAlign's feature map (the backbone), the one reading that feature map (the
    RPN head's shared convolution, in a detect graph) and those downstream of a RoiAlign's
    output (the RoI heads). The RPN's predictors (objectness, box deltas) are none of them."""
    graph = proto.graph
    producers, consumers = _producers(graph), _consumers(graph)
    rois = [n for n in graph.node if n.op_type == "RoiAlign"]
    if not rois:
        raise SeqNetError("the graph has no RoiAlign: cannot find its convolutional trunk")
    upstream, stack = set(), [r.input[0] for r in rois]
    while stack:
        node = producers.get(stack.pop())
        if node is not None and node.name not in upstream:
            upstream.add(node.name)
            stack += list(node.input)
    downstream, stack = set(), [o for r in rois for o in r.output]
    while stack:
        for node in consumers.get(stack.pop(), []):
            if node.name not in downstream:
                downstream.add(node.name)
                stack += list(node.output)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    features = {r.input[0] for r in rois}
    backbone = [n.name for n in convs if n.name in upstream]
    rpn = [n.name for n in convs if n.input[0] in features and n.name not in downstream]
    heads = [n.name for n in convs if n.name in downstream]
    if not backbone or not heads:
        raise SeqNetError(
            f"cannot find the convolutional trunk ({len(backbone)} backbone and {len(heads)} "
            "RoI head convolutions)"
        )
    return backbone + rpn + [n for n in heads if n not in backbone]


GLUE = ("Add", "Relu", "MaxPool")  # what joins the trunk's convolutions (residuals, pooling)


def trunk_nodes(proto, convs):
    """The trunk convolutions ``convs`` and the GLUE nodes joined to them through GLUE nodes
    only (residual adds, ReLUs, the stem's max-pool): where the trunk's quantized values may
    flow, and nowhere else."""
    graph = proto.graph
    producers, consumers = _producers(graph), _consumers(graph)
    glue = {n.name for n in graph.node if n.op_type in GLUE + QDQ}  # QDQ: in quantized graphs
    region, stack = set(), [n for n in graph.node if n.name in set(convs)]
    while stack:
        node = stack.pop()
        if node.name in region:
            continue
        region.add(node.name)
        near = [producers[x] for x in node.input if x in producers]
        near += [c for x in node.output for c in consumers.get(x, [])]
        stack += [n for n in near if n.name in glue and n.name not in region]
    return region


def quantized_nodes(proto):
    """``{op_type: [node names]}`` of the nodes of ``proto`` that take a DequantizeLinear's
    output: what computes from quantized values (the tests hold it to the trunk)."""
    graph = proto.graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    out = {}
    for node in graph.node:
        if node.op_type not in QDQ and dequantized & set(node.input):
            out.setdefault(node.op_type, []).append(node.name)
    return out


def _unshare(proto, convs):
    """Give the trunk convolutions their own copy of any initializer another node also reads
    (the exporter stores equal tensors once: a zero bias can be a linear head's too), so that
    quantizing a convolution's weights never reaches another node."""
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    uses = {}
    for node in graph.node:
        for x in node.input:
            if x in initializers:
                uses[x] = uses.get(x, 0) + 1
    for node in graph.node:
        if node.name not in convs:
            continue
        for i, x in enumerate(node.input):
            if i and x in initializers and uses[x] > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[x])
                copy.name = f"{x}__{node.name}"
                graph.initializer.append(copy)
                node.input[i] = copy.name
                uses[x] -= 1


def _confine(proto, convs):
    """Keep the quantized values to the trunk: the convolutions ``convs`` and what joins them
    (GLUE: a block's residual add reads its input quantized, as its conv1 does).

    The quantizer gives every reader of a quantized tensor the dequantized value: RoIAlign's
    output reaches the re-id head's max-pool so, the backbone's output RoIAlign. Here every
    reader outside the trunk reads the fp32 tensor instead; what is then unused goes."""
    graph = proto.graph
    producers = _producers(graph)
    region = trunk_nodes(proto, convs)
    source = {}  # DequantizeLinear output -> (QuantizeLinear, the fp32 tensor quantized)
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            q = producers.get(node.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                source[node.output[0]] = (q, q.input[0])
    weights = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    weights -= set(source)
    for node in graph.node:
        if node.op_type in QDQ:
            continue
        for i, x in enumerate(node.input):
            if x in source:
                if node.name not in region:
                    node.input[i] = source[x][1]
            elif x in weights and node.name not in convs:
                raise SeqNetError(f"int8: {node.op_type} {node.name} reads a quantized weight")
    outputs = {v.name for v in graph.output}
    if outputs & set(source):
        raise SeqNetError("int8: a graph output is a quantized value")
    used, keep = set(outputs), []
    for node in reversed(list(graph.node)):
        if node.op_type in QDQ and not used.intersection(node.output):
            continue
        keep.append(node)
        used.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    _separate(graph)
    names = {x for node in graph.node for x in node.input}
    kept = [t for t in graph.initializer if t.name in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _strided_1x1(conv):
    """The stride of ``conv`` if it is a 1x1 convolution with a stride > 1, no padding, no
    dilation and one group (a ResNet's downsample), else None."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    stride = list(attrs.get("strides", [1, 1]))
    plain = (list(attrs.get("kernel_shape", [1, 1])) == [1, 1]
             and not any(attrs.get("pads", [0])) and set(attrs.get("dilations", [1])) == {1}
             and attrs.get("group", 1) == 1 and attrs.get("auto_pad", b"NOTSET") in
             (b"NOTSET", "NOTSET"))  # fmt: skip
    return stride if plain and max(stride) > 1 else None


def _separate(graph):
    """Give each reader of a quantized tensor an input pair of its own.

    A block's input is read through one pair by two convolutions (conv1 and the downsample) or
    by conv1 and the residual add. On x86 ONNX Runtime computes an int8 pair as uint8, a
    rewrite it makes only for a pair with one reader: the convolution then ran in fp32 (and its
    optimizers merge identical pairs back into one). So each further reader gets its own pair:
    a strided 1x1 convolution (the downsample) as the same function written as a subsampling
    Slice and a stride-1 convolution, quantized after the Slice (OpenVINO's stride
    optimization otherwise moved the stride between the pair and the convolution behind a
    RoIAlign, which then ran in fp32); any other with its scale one float32 step apart, so that
    no optimizer merges the pairs."""
    producers = _producers(graph)
    consumers = _consumers(graph)
    initializers = {t.name: t for t in graph.initializer}
    added, pairs = {}, {}  # node name -> nodes to insert after it; Q input -> pairs on it
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        readers = [c for c in consumers.get(dq.output[0], []) if c.op_type not in QDQ]
        if q is None or q.op_type != "QuantizeLinear" or len(readers) < 2:
            continue
        pairs[q.input[0]] = pairs.get(q.input[0], 0) + 1

        def order(node):  # a plain convolution keeps the pair, then an add, then downsamples
            if node.op_type != "Conv":
                return 1
            return 0 if _strided_1x1(node) is None else 2

        readers.sort(key=order)
        for conv in readers[1:]:
            source, nodes = q.input[0], []
            stride = _strided_1x1(conv) if conv.op_type == "Conv" else None
            if stride:
                steps = onnx.numpy_helper.from_array(
                    np.array(stride, np.int64), f"{conv.name}_steps"
                )
                starts = onnx.numpy_helper.from_array(np.zeros(2, np.int64), f"{conv.name}_starts")
                ends = onnx.numpy_helper.from_array(np.full(2, np.iinfo(np.int64).max),
                                                    f"{conv.name}_ends")  # fmt: skip
                axes = onnx.numpy_helper.from_array(np.array([2, 3], np.int64), f"{conv.name}_axes")
                graph.initializer.extend([starts, ends, axes, steps])
                nodes.append(onnx.helper.make_node(
                    "Slice", [source, starts.name, ends.name, axes.name, steps.name],
                    [f"{conv.name}_subsampled"], name=f"{conv.name}_subsample",
                ))  # fmt: skip
                source = nodes[-1].output[0]
                for a in conv.attribute:
                    if a.name == "strides":
                        a.ints[:] = [1] * len(a.ints)
            scale = q.input[1]
            n = pairs[source] = pairs.get(source, 0) + 1
            if n > 1:  # another pair on the same tensor: a scale one step apart per pair
                value = numpy_helper.to_array(initializers[scale]).astype(np.float32)
                for _ in range(n - 1):
                    value = np.nextafter(value, np.float32(np.inf))
                scale = f"{q.input[1]}_{n - 1}"
                graph.initializer.append(numpy_helper.from_array(value, scale))
            name = f"{conv.name}_input"
            nodes.append(onnx.helper.make_node(
                "QuantizeLinear", [source, scale, q.input[2]], [f"{name}_quantized"],
                name=f"{name}_QuantizeLinear",
            ))  # fmt: skip
            nodes.append(onnx.helper.make_node(
                "DequantizeLinear", [nodes[-1].output[0], scale, dq.input[2]],
                [f"{name}_dequantized"], name=f"{name}_DequantizeLinear",
            ))  # fmt: skip
            conv.input[:] = [nodes[-1].output[0] if x == dq.output[0] else x for x in conv.input]
            added.setdefault(dq.name, []).extend(nodes)
    order = []
    for node in graph.node:
        order.append(node)
        order += added.get(node.name, [])
    del graph.node[:]
    graph.node.extend(order)


# -------------------------------------------------------------- calibration frames --- #
def calibration_frames(calib=None, calib_video=None, frames=DEFAULT_FRAMES):
    """(list of H x W x 3 uint8 frames, {"source", "frames"}): ``frames`` images of the folder
    ``calib`` (the first ones, sorted), frames spread over the video ``calib_video``, or
    synthetic scenes (seqnet_export.verify). Every problem is one SeqNetError line."""
    if calib and calib_video:
        raise SeqNetError("--calib and --calib-video: give one calibration source")
    if frames < 1:
        raise SeqNetError(f"--calib-frames {frames}: need at least one frame")
    if calib:
        out = _folder_frames(Path(calib), frames)
        source = str(calib)
    elif calib_video:
        out = _video_frames(Path(calib_video), frames)
        source = str(calib_video)
    else:
        from seqnet_export.verify import SAMPLE_SIZES, synthetic_images

        sizes = [SAMPLE_SIZES[i % len(SAMPLE_SIZES)] for i in range(frames)]
        out = [image for image, _ in synthetic_images(seed=1, sizes=sizes)]
        source = "synthetic scenes"
    return out, {"source": source, "frames": len(out)}


def _folder_frames(folder, frames):
    if not folder.is_dir():
        raise SeqNetError(f"--calib {folder}: no such folder")
    try:
        paths = list_images(folder)[:frames]
    except OSError as e:
        raise SeqNetError(f"--calib {folder}: unreadable ({e.strerror or e})") from None
    if not paths:
        raise SeqNetError(f"--calib {folder}: no images in it (calibration needs some)")
    out = []
    for path in paths:
        try:
            out.append(to_array(read_pil(path)))
        except SeqNetError as e:
            raise SeqNetError(f"--calib {folder}: {e}") from None
    return out


def _video_frames(path, frames):
    from seqnet_runtime import video

    if not path.is_file():
        raise SeqNetError(f"--calib-video {path}: no such file")
    every = max(1, video.frame_count(path) // frames)
    out = []
    try:
        for _, _, image in video.frames(path, every):
            out.append(to_array(image))
            if len(out) == frames:
                break
    except SeqNetError as e:
        raise SeqNetError(f"--calib-video {path}: {e}") from None
    return out


# ------------------------------------------------------------------- quantization --- #
class _Feeds:
    """An onnxruntime.quantization CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds):
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)

    def __iter__(self):
        return self

    def __next__(self):
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def calibration_feeds(session, frames):
    """{"detect": [feeds], "embed": [feeds]}: each frame as the graphs take it (through the
    fp32 ``session``'s own feeding), the embed graph with the fp32 detections of the frame as
    its boxes (the people the re-id head will see; a fixed spread where none is found)."""
    from seqnet_runtime import session as package_session

    out = {"detect": [], "embed": []}
    for frame in frames:
        batch = package_session.as_batch([frame])
        feeds = {
            "context_boxes": np.zeros((1, 4), np.float32),
            "use_context": np.zeros(1, np.float32),
        }
        feeds |= {
            k: np.array(
                package_session.iou_threshold(v) if k in package_session.NMS_THRESHOLDS else v,
                np.float32,
            )
            for k, v in session.thresholds.items()
        }
        out["detect"].append({"images": batch} | feeds)
        boxes = session.detect([frame])[0]["boxes"][:32]
        if not len(boxes):
            h, w = frame.shape[:2]
            boxes = np.array([[0.1 * w, 0.2 * h, 0.3 * w, 0.8 * h],
                              [0.6 * w, 0.1 * h, 0.8 * w, 0.9 * h]], np.float32)  # fmt: skip
        out["embed"].append({"images": batch, "boxes": boxes[None].astype(np.float32)})
    return out


def quantize_graph(proto, feeds, nodes):
    """``proto`` (weights loaded) with ``nodes`` (Conv names) quantized, QDQ, calibrated on
    ``feeds``: a ModelProto with its weights inline."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    convs = set(nodes)
    _unshare(proto, convs)
    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # ORT's warnings
    try:
        with tempfile.TemporaryDirectory(prefix="seqnet-int8-") as tmp:
            out = Path(tmp) / "int8.onnx"
            quantize_static(
                proto,
                str(out),
                _Feeds(feeds),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                nodes_to_quantize=list(nodes),
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                use_external_data_format=True,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
            quantized = onnx.load(str(out))
    finally:
        logging.getLogger().disabled = was
    _confine(quantized, convs)
    return quantized


def write_int8(folder, manifest, session, frames, calibration):
    """Quantize the package's fp32 graphs in ``folder`` (calibrated on ``frames`` through the
    fp32 ``session``), write them beside the others and list them in ``manifest`` as the
    ``int8`` flavour; returns the record of how (calibration, what was quantized)."""
    from seqnet_export.export import io_spec, save_graphs, stored_tensors

    start = time.perf_counter()
    folder = Path(folder)
    feeds = calibration_feeds(session, frames)
    fp32 = manifest.graphs["fp32"]
    graphs, figures = {}, {}
    for name, spec in fp32.items():
        proto = onnx.load(str(folder / spec.file))
        nodes = trunk_convs(proto)
        graphs[f"{name}_{FLAVOUR}"] = quantized = quantize_graph(proto, feeds[name], nodes)
        fed = quantized_nodes(quantized)
        figures[name] = {"convolutions": len(nodes), "quantized_ops": sorted(fed)}
        del proto
    stored = stored_tensors(folder, [spec.file for spec in fp32.values()])
    files = save_graphs(graphs, folder, stored)
    manifest.graphs[FLAVOUR] = {
        name: Graph(file=files[f"{name}_{FLAVOUR}"], **io_spec(folder / files[f"{name}_{FLAVOUR}"]))
        for name in fp32
    }
    return {
        "calibration": calibration | {"method": "minmax", "activations": "int8 symmetric",
                                      "weights": "int8 symmetric per channel"},
        "quantized": "trunk convolutions only (backbone, RPN head's 3x3, RoI heads' res5)",
        "graphs": figures,
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def check_options(int8, calib, calib_video, calib_frames):
    """The calibration frames and their record for ``--int8`` (read before the export, so a
    bad folder or video fails early), or None; calibration options without --int8 fail."""
    if not int8:
        if calib or calib_video or calib_frames:
            raise SeqNetError("--calib, --calib-video and --calib-frames go with --int8")
        return None
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as e:
        raise SeqNetError(f"--int8: onnxruntime's quantization tools cannot load ({e})") from None
    return calibration_frames(calib, calib_video, calib_frames or DEFAULT_FRAMES)


def add_int8(folder, manifest, calibration, samples, runs32, backends, threads=None):
    """The int8 flavour of the package staged in ``folder``: quantized (``write_int8``) on the
    ``calibration`` frames, then verified against the fp32 graphs' ``runs32`` on ``samples``
    on every backend of ``backends`` (names). Returns {"int8_vs_fp32": figures}, the
    calibration recorded in them."""
    from seqnet_export.verify import verify_int8
    from seqnet_runtime import load
    from seqnet_runtime import package as package_format

    frames, source = calibration
    session = load(folder, "onnxruntime", precision="fp32", threads=threads)
    record = write_int8(folder, manifest, session, frames, source)
    del session
    log.info(
        "quantized the trunk to int8 (convolutions: %s) on %d frames of %s in %.0f s",
        ", ".join(f"{name} {g['convolutions']}" for name, g in record["graphs"].items()),
        source["frames"], source["source"], record["seconds"],
    )  # fmt: skip
    package_format.write(folder, manifest)  # the sessions below read the int8 graphs
    sessions = {name: load(folder, name, precision="int8", threads=threads) for name in backends}
    figures = verify_int8(sessions, samples, runs32)
    del sessions
    for name, f in figures["backends"].items():
        log.info(
            "verified int8 against fp32 on %s: %s", name,
            "within the contract" if f["passed"] else "BEYOND the contract",
        )  # fmt: skip
    return {"int8_vs_fp32": record | figures}
