"""Trace the export wrappers into ONNX graphs and write them, weights shared, to a folder.

Each graph: ``torch.onnx.export`` (dynamo) of a wrapper in ``seqnet_export.graph`` with
dynamic batch, height, width (and query boxes), the fixed-size NMS and RoIAlign translated by
``seqnet_export.ops``, then the pre-processing nodes (``seqnet_export.preprocess``) in front,
so that a graph takes plain (B, 3, H, W) images in [0, 1]. ``onnx.checker`` (full check, with
strict shape inference) must pass.

The standard graphs are traced together and cut apart (``split``); the ``engine`` flavour's
(``PackageGraph(engine=True)``: the operators TensorRT builds) are traced path by path
(``traced_paths``), since its RoIAlign ties the query boxes' batch to the images' in one trace.

The query graph's weights (backbone, re-id head, embedding) are a subset of the detection
graph's: both graphs point into one ``weights.bin``, each tensor stored once.
"""

import hashlib
import logging
import warnings
from pathlib import Path

import onnx
import onnx.utils
import onnx_ir.passes
import torch
from onnx import external_data_helper, numpy_helper
from torch.export import Dim

from seqnet_export.graph import PackageGraph, scale_boxes
from seqnet_export.ops import TRANSLATIONS
from seqnet_export.preprocess import with_preprocessing

log = logging.getLogger(__name__)

MIN_OPSET = 18  # RoiAlign's coordinate_transformation_mode (16); the exporter's own ops (18)
DEFAULT_OPSET = 18
WEIGHTS_FILE = "weights.bin"
INLINE_BYTES = 1024  # smaller tensors stay in the .onnx file
ALIGN = 4096  # tensor offsets in weights.bin (ONNX Runtime can map aligned data)

DETECT_INPUTS = (
    "context_boxes",
    "use_context",
    "score_thresh",
    "nms_thresh",
    "nms_thresh_refined",
    "rpn_nms_thresh",
)
DETECT_OUTPUTS = ("boxes", "scores", "embeddings", "count")
EMBED_INPUTS = ("boxes",)
EMBED_OUTPUTS = ("embeddings",)
NETWORK = ("pixels", "resized_hw", "original_hw")


def _network_example(batch=2, height=96, width=160):
    """Example (pixels, resized_hw, original_hw) and their dynamic shapes."""
    b = Dim("batch", min=1, max=1024)
    h, w = Dim("h32", min=1, max=1024), Dim("w32", min=1, max=1024)
    args = (
        torch.rand(batch, 3, height, width),
        torch.tensor([height - 6.0, width - 10.0]),
        torch.tensor([(height - 6.0) / 1.5, (width - 10.0) / 1.5]),
    )
    return args, ({0: b, 2: 32 * h, 3: 32 * w}, None, None), b


def _trace(module, args, dynamic_shapes, input_names, output_names, opset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on renamed axes and the like
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table=TRANSLATIONS,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            verbose=False,
            optimize=False,
        )
    _light_optimize(program.model)
    return program.model_proto


def _light_optimize(model):
    """Constant folding and clean-up, without the exporter's default pattern rewriting (half
    of the export's time on ResNet-50, and ONNX Runtime fuses at load anyway)."""
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import _constant_folding

    passes = onnx_ir.passes.Sequential(
        common.InlinePass(),
        _constant_folding.FoldConstantsPass(
            shape_inference=True,
            input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
            output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
        ),
        common.RemoveUnusedNodesPass(),
        common.RemoveUnusedFunctionsPass(),
        common.RemoveUnusedOpsetsPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.NameFixPass(),
    )
    passes(model)


def traced_model(model, opset=DEFAULT_OPSET, fp16=False, engine=False):
    """Both paths (``PackageGraph``) as one ONNX model taking network inputs (pixels ...);
    ``engine``: the engine flavour's operators (``seqnet_export.engine_ops``; ``build_graphs``
    traces those path by path, ``traced_paths``)."""
    (pixels, resized, original), shapes, b = _network_example()
    n = pixels.shape[0]
    scalars = tuple(torch.tensor(v) for v in (0.5, 0.4, 0.5, 0.7))  # distinct tensors: aliased
    boxes = torch.tensor([[0.0, 0.0, 20.0, 40.0], [5.0, 5.0, 30.0, 50.0], [1.0, 2.0, 3.0, 4.0]])
    query = boxes.expand(n, 3, 4).contiguous()
    args = (pixels, resized, original, torch.zeros(n, 4), torch.zeros(n), *scalars, query)
    # the query boxes' batch is a dimension of its own: were it the images' one, the exporter
    # could read the detection graph's batch size off the query boxes' shape
    query_dims = {0: Dim("query_batch", min=1, max=1024), 1: Dim("n_boxes")}
    dynamic = shapes + ({0: b}, {0: b}, None, None, None, None, query_dims)
    names = NETWORK + DETECT_INPUTS + ("query_boxes",)
    outputs = DETECT_OUTPUTS + ("query_embeddings",)
    return _trace(PackageGraph(model, fp16, engine), args, dynamic, names, outputs, opset)


class _DetectPath(torch.nn.Module):
    """The detection path of a ``PackageGraph`` alone (network inputs, DETECT_INPUTS)."""

    def __init__(self, net):
        super().__init__()
        self.net = net  # not 'graph': torch.fx's GraphModule has one

    def forward(self, pixels, resized_hw, original_hw, context_boxes, use_context, score_thresh,
                nms_thresh, nms_thresh_refined, rpn_nms_thresh):  # fmt: skip
        features = self.net.backbone(pixels)
        return self.net.detect(
            features, pixels, resized_hw, original_hw, context_boxes, use_context, score_thresh,
            nms_thresh, nms_thresh_refined, rpn_nms_thresh,
        )  # fmt: skip


class _EmbedPath(torch.nn.Module):
    """The query path of a ``PackageGraph`` alone (network inputs, boxes)."""

    def __init__(self, net):
        super().__init__()
        self.net = net  # not 'graph': torch.fx's GraphModule has one

    def forward(self, pixels, resized_hw, original_hw, boxes):
        features = self.net.backbone(pixels)
        return self.net.embed(features, scale_boxes(boxes, resized_hw, original_hw))[1]


def traced_paths(model, opset=DEFAULT_OPSET, fp16=False, engine=True):
    """{"detect": ..., "embed": ...} traced one by one (the engine flavour: in one trace,
    torch.export would let the detection graph read its batch size off the query boxes' shape,
    or the query graph off the context boxes', RoIAlign from standard operators tying the
    dimensions together)."""
    (pixels, resized, original), shapes, b = _network_example()
    n = pixels.shape[0]
    graph = PackageGraph(model, fp16, engine)
    scalars = tuple(torch.tensor(v) for v in (0.5, 0.4, 0.5, 0.7))  # distinct tensors: aliased
    args = (pixels, resized, original, torch.zeros(n, 4), torch.zeros(n), *scalars)
    dynamic = shapes + ({0: b}, {0: b}, None, None, None, None)
    detect = _trace(
        _DetectPath(graph), args, dynamic, NETWORK + DETECT_INPUTS, DETECT_OUTPUTS, opset
    )
    boxes = torch.tensor([[0.0, 0.0, 20.0, 40.0], [5.0, 5.0, 30.0, 50.0], [1.0, 2.0, 3.0, 4.0]])
    args = (pixels, resized, original, boxes.expand(n, 3, 4).contiguous())
    dynamic = shapes + ({0: b, 1: Dim("n_boxes")},)
    embed = _trace(_EmbedPath(graph), args, dynamic, NETWORK + EMBED_INPUTS, EMBED_OUTPUTS, opset)
    return {"detect": detect, "embed": embed}


def _outer_names(graph):
    """Names a (sub)graph uses from the scopes around it (a Loop body reads the NMS's pairwise
    matrix so), its own subgraphs' included."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used = set()
    for node in graph.node:
        used.update(x for x in node.input if x)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                used |= _outer_names(attr.g)
            for g in attr.graphs:
                used |= _outer_names(g)
        defined.update(node.output)
    return used - defined


def _node_inputs(node):
    """A node's inputs, the ones its subgraphs read from outside included."""
    names = [x for x in node.input if x]
    for attr in node.attribute:
        subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in subgraphs:
            names += sorted(_outer_names(g))
    return names


class _Extractor(onnx.utils.Extractor):
    """onnx.utils.Extractor that follows the values a node's subgraphs read from the outer
    scope (onnx's follows the node's inputs only, and leaves a Loop body's operands out)."""

    def _dfs_search_reachable_nodes(self, node_output_name, graph_input_names, reachable):
        stack = [node_output_name]
        while stack:
            name = stack.pop()
            if name in graph_input_names or name not in self.outmap:
                continue
            index = self.outmap[name]
            if index not in reachable:
                reachable.add(index)
                stack += _node_inputs(self.graph.node[index])

    def _collect_reachable_tensors(self, nodes):
        names = {x for node in nodes for x in (*_node_inputs(node), *node.output)}
        initializer = [t for n, t in self.initializers.items() if n in names]
        value_info = [v for n, v in self.value_infos.items() if n in names]
        return initializer, value_info


def split(proto):
    """The traced model cut into {"detect": ..., "embed": ...} (onnx.utils.Extractor)."""
    extractor = _Extractor(proto)
    detect = extractor.extract_model(list(NETWORK + DETECT_INPUTS), list(DETECT_OUTPUTS))
    embed = extractor.extract_model(list(NETWORK) + ["query_boxes"], ["query_embeddings"])
    rename = {"query_boxes": EMBED_INPUTS[0], "query_embeddings": EMBED_OUTPUTS[0]}
    taken = {o for node in embed.graph.node for o in node.output} - set(rename)
    if taken & set(rename.values()):
        raise RuntimeError(f"names taken in the query graph: {taken & set(rename.values())}")
    for value in list(embed.graph.input) + list(embed.graph.output):
        value.name = rename.get(value.name, value.name)
    for node in embed.graph.node:
        node.input[:] = [rename.get(x, x) for x in node.input]
        node.output[:] = [rename.get(x, x) for x in node.output]
    for part in (detect, embed):
        del part.opset_import[:]
        part.opset_import.extend(proto.opset_import)
        part.ir_version = proto.ir_version
    return {"detect": detect, "embed": embed}


def build_graphs(model, preprocess, opset=DEFAULT_OPSET, fp16=False, engine=False):
    """{"detect": ModelProto, "embed": ModelProto} taking images, pre-processing included.

    ``preprocess``: the manifest's ``seqnet_runtime.package.Preprocess``. ``engine``: the
    engine flavour (``seqnet_export.graph``), whose graphs also take the host-computed resize
    (``seqnet_export.preprocess.RESIZE_INPUTS``).
    """
    if engine:
        graphs = traced_paths(model, opset, fp16, engine)
    else:
        graphs = split(traced_model(model, opset, fp16))
    for proto in graphs.values():
        with_preprocessing(
            proto,
            preprocess.min_size,
            preprocess.max_size,
            preprocess.pixel_mean,
            preprocess.pixel_std,
            engine=engine,
        )
        _name_dims(proto)
    return graphs


def _name_dims(proto):
    """Readable names for the dynamic dimensions of the inputs and outputs."""
    names = {"s0": "batch", "query_batch": "batch"}
    for value in list(proto.graph.input) + list(proto.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def _raw(tensor):
    if not tensor.HasField("raw_data"):
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
    return tensor.raw_data


def tensor_key(tensor, raw):
    """What makes two large tensors one in WEIGHTS_FILE: dtype, shape and bytes."""
    return tensor.data_type, tuple(tensor.dims), hashlib.sha256(raw).hexdigest()


def save_graphs(graphs, folder, stored=None):
    """Write ``{name}.onnx`` for each graph into ``folder``, their large tensors in one shared
    WEIGHTS_FILE (each distinct tensor once); check each file. Returns {name: file name}.
    ``stored`` ({tensor_key: (offset, length)}) lists what a WEIGHTS_FILE already there holds:
    those are referenced, the rest appended."""
    folder = Path(folder)
    stored = {} if stored is None else stored
    with open(folder / WEIGHTS_FILE, "ab" if stored else "wb") as data:
        for proto in graphs.values():
            for tensor in proto.graph.initializer:
                raw = _raw(tensor)
                if len(raw) < INLINE_BYTES:
                    continue
                key = tensor_key(tensor, raw)
                if key not in stored:
                    offset = -data.tell() % ALIGN + data.tell()
                    data.write(b"\0" * (offset - data.tell()))
                    data.write(raw)
                    stored[key] = (offset, len(raw))
                offset, length = stored[key]
                external_data_helper.set_external_data(tensor, WEIGHTS_FILE, offset, length)
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
    files = {}
    for name, proto in graphs.items():
        path = folder / f"{name}.onnx"
        onnx.save(proto, path)
        onnx.checker.check_model(str(path), full_check=True)
        files[name] = path.name
    return files


def stored_tensors(folder, files):
    """{(dtype, dims, sha256): (offset, length)} of the tensors the graphs ``files`` keep in
    ``folder``'s WEIGHTS_FILE."""
    stored = {}
    data = (Path(folder) / WEIGHTS_FILE).read_bytes()
    for file in files:
        proto = onnx.load(str(Path(folder) / file), load_external_data=False)
        for tensor in proto.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in tensor.external_data}
            offset, length = int(info.get("offset", 0)), int(info["length"])
            raw = data[offset : offset + length]
            stored.setdefault(tensor_key(tensor, raw), (offset, length))
    return stored


def io_spec(path):
    """Inputs and outputs of the ONNX file at ``path``: [{name, dtype, shape}] each, the shape
    with names for dynamic dimensions."""
    proto = onnx.load(str(path), load_external_data=False)

    def spec(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in t.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
            out.append({"name": v.name, "dtype": dtype, "shape": shape})
        return out

    return {"inputs": spec(proto.graph.input), "outputs": spec(proto.graph.output)}
