"""seqnet_export.engine_ops: RoIAlign, NMS and top-k from the operators TensorRT builds.

Each function against torchvision / torch in PyTorch, then exported (``torch.onnx.export``,
dynamo) and run on ONNX Runtime, on random and adversarial inputs: RoIs partly or wholly outside
the map, inverted and tiny RoIs, aligned or not, adaptive sampling; NMS ties, identical boxes,
suppression chains of hundreds of rounds, IoU equal to the float32 threshold; top-k ties and
-inf. The exported graphs must hold no float64, no TopK above 3840, no RoiAlign or
NonMaxSuppression node, and fixed-shape outputs; where TensorRT-RTX is installed
(``tensorrt_rtx_bindings``) each graph must parse and build for compute capability 8.6 on this
CPU.
"""

import time
import warnings

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto
from torch.export import Dim

from seqnet_export import engine_ops as E

SCALE = 1 / 16  # SeqNet's res4
MAP = (57, 94)  # res4 of an image resized to ~900 x 1500
ROI_CASES = (  # (output_size, sampling_ratio, aligned, max_grid)
    ((14, 14), 2, False, None),  # SeqNet's
    ((14, 14), 2, True, None),
    ((7, 5), 0, False, 3),  # adaptive: boxes small enough for 3 samples per bin
    ((7, 5), -1, True, 3),
)


# ---------------------------------------------------------------------------------------
# references and inputs


def tv_roi_align(features, boxes, output_size, sampling_ratio, aligned):
    batch, k = boxes.shape[:2]
    index = torch.arange(batch, dtype=boxes.dtype)[:, None, None].expand(batch, k, 1)
    rois = torch.cat([index, boxes], dim=2).reshape(-1, 5)
    out = torchvision.ops.roi_align(features, rois, output_size, SCALE, sampling_ratio, aligned)
    return out.reshape(batch, k, features.shape[1], *out.shape[-2:])


def roi_boxes(gen, batch, k, height, width, max_size=None):
    """(B, K, 4) image-space boxes on a (height, width) map at SCALE: random ones, and
    adversarial rows: partly and wholly outside the map, inverted, degenerate, whole-map."""
    img_h, img_w = height / SCALE, width / SCALE
    size = torch.tensor([img_w, img_h])
    xy = torch.rand(batch, k, 2, generator=gen) * size * 1.4 - size * 0.2
    limit = size * 0.7 if max_size is None else torch.tensor(max_size)
    wh = torch.rand(batch, k, 2, generator=gen) * limit
    boxes = torch.cat([xy, xy + wh], dim=2)
    special = torch.tensor(
        [
            [-300.0, -300.0, -20.0, -40.0],  # wholly above-left: y, x < -1 on the map
            [img_w + 40, 10.0, img_w + 200, 90.0],  # wholly right: x > W
            [-40.0, -40.0, 60.0, 50.0],  # straddles the corner
            [img_w - 30, img_h - 30, img_w + 30, img_h + 30],  # straddles the far corner
            [50.0, 60.0, 20.0, 30.0],  # inverted
            [100.0, 100.0, 100.0, 100.0],  # a point
            [0.0, 0.0, img_w, img_h],  # the whole map
            [-16.0, -16.0, img_w + 16, img_h + 16],  # samples on y = -1 and y = H
        ]
    )
    if max_size is not None:
        special = torch.minimum(special, special[:, :2].repeat(1, 2) + limit.repeat(2))
    boxes[:, : len(special)] = special
    return boxes


def tv_nms(boxes, scores, threshold, valid=None, idxs=None):
    rows = torch.arange(len(scores)) if valid is None else torch.where(valid)[0]
    if idxs is None:
        return rows[torchvision.ops.nms(boxes[rows], scores[rows], threshold)]
    return rows[torchvision.ops.batched_nms(boxes[rows], scores[rows], idxs[rows], threshold)]


def random_boxes(gen, n, extent=100.0, size=40.0):
    xy = torch.rand(n, 2, generator=gen) * extent
    return torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * size], dim=1)


def chain(n, step=3.0):
    """Boxes 10 wide, each ``step`` right of the one before, scores falling: every box
    suppresses the next only (IoU 7/13 > 0.5), so greedy NMS keeps every other one and the
    fixed point needs about n rounds."""
    x = torch.arange(n, dtype=torch.float32) * step
    boxes = torch.stack([x, torch.zeros(n), x + 10.0, torch.full((n,), 10.0)], dim=1)
    return boxes, 1.0 - torch.arange(n, dtype=torch.float32) / n


def nms_cases(n=500):
    """(name, boxes (n, 4), scores (n,), valid (n,), threshold) cases, all n rows."""
    gen = torch.Generator().manual_seed(0)
    cases = []
    boxes = random_boxes(gen, n)
    cases.append(("random", boxes, torch.rand(n, generator=gen), torch.rand(n) > 0.2, 0.5))
    ties = torch.randint(0, 4, (n,), generator=gen).float() / 4  # four score values
    cases.append(("score ties", boxes, ties, torch.ones(n, dtype=torch.bool), 0.3))
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(n, 1)  # identical boxes
    same[n // 2 :] += 5.0
    cases.append(("identical boxes", same, ties, torch.ones(n, dtype=torch.bool), 0.7))
    cases.append(("identical, IoU 1 = t", same, ties, torch.ones(n, dtype=torch.bool), 1.0))
    zero_area = boxes.clone()
    zero_area[::3, 2] = zero_area[::3, 0]  # IoU 0/0 = NaN never suppresses
    cases.append(("zero-area", zero_area, ties, torch.ones(n, dtype=torch.bool), 0.0))
    boxes_c, scores_c = chain(n)
    cases.append(("chain", boxes_c, scores_c, torch.ones(n, dtype=torch.bool), 0.5))
    # IoU exactly float32(0.7) against thresholds on both sides of it in float64
    pair = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 7.0]]).repeat(n // 2, 1)
    pair += torch.arange(n // 2).repeat_interleave(2)[:, None] * 20.0
    rank = torch.linspace(1.0, 0.0, n)
    f32 = float(np.float32(0.7))  # 0.699999988...: float32(0.7) < 0.7
    for t in (0.7, f32, f32 - 1e-12, float(np.nextafter(np.float32(f32), np.float32(0)))):
        cases.append((f"IoU = f32(0.7), t = {t!r}", pair, rank, torch.ones(n, dtype=torch.bool), t))
    cases.append(("nothing valid", boxes, ties, torch.zeros(n, dtype=torch.bool), 0.5))
    return cases


def stable_topk(x, k, dim):
    """ONNX TopK's order: value descending, lower index first among equal values."""
    out = torch.sort(x, dim=dim, descending=True, stable=True)
    return out.values.narrow(dim, 0, k), out.indices.narrow(dim, 0, k)


# ---------------------------------------------------------------------------------------
# PyTorch


@pytest.mark.parametrize("method", ["grid_sample", "gather", "separable"])
@pytest.mark.parametrize("output_size, sampling_ratio, aligned, max_grid", ROI_CASES)
def test_roi_align_matches_torchvision(method, output_size, sampling_ratio, aligned, max_grid):
    gen = torch.Generator().manual_seed(1)
    for height, width in ((20, 30), MAP, (1, 3)):
        features = torch.randn(2, 8, height, width, generator=gen)
        small = (
            None if max_grid is None else (output_size[1] * 3 / SCALE, output_size[0] * 3 / SCALE)
        )
        boxes = roi_boxes(gen, 2, 40, height, width, small)
        out = E.roi_align(
            features, boxes, output_size, SCALE, sampling_ratio, aligned, max_grid, method, 16
        )
        ref = tv_roi_align(features, boxes, output_size, sampling_ratio, aligned)
        # GridSample's normalised coordinate is within half an ulp of a map-sized float
        # (engine_ops.roi_align): ~2e-5 on a unit-normal map 94 wide, below 1e-5 under ~30
        tol = 3e-5 if method == "grid_sample" and width > 30 else 1e-5
        assert (out - ref).abs().max() <= tol, (height, width)
        assert ref[:, 0].abs().max() == 0 and out[:, 0].abs().max() == 0  # wholly outside


def test_roi_align_default_chunks_fit_the_budget():
    """SeqNet at 1080 x 1920: res4 1024 channels, 300 RoIs, 14 x 14 bins of 2 x 2 samples."""
    chunks, per_chunk, nbytes = E.roi_align_chunking(1024, 300, (14, 14), 2)
    assert (chunks, per_chunk) == (8, 38) and nbytes <= E.ROI_ALIGN_CHUNK_BYTES
    chunks, per_chunk, nbytes = E.roi_align_chunking(1024, 300, (14, 14), 2, "gather")
    assert (chunks, per_chunk) == (30, 10) and nbytes <= E.ROI_ALIGN_CHUNK_BYTES
    # the engine graphs' (seqnet_export.graph): C x H x w per RoI, H up to 94 at 900/1500
    from seqnet_export.graph import ROI_CHUNK_BYTES

    chunks, per_chunk, nbytes = E.roi_align_chunking(
        1024, 300, (14, 14), 2, "separable", ROI_CHUNK_BYTES, max_map=94
    )
    assert (chunks, per_chunk) == (9, 34) and nbytes <= ROI_CHUNK_BYTES
    # with the chunk's outputs and the scaled map: under 256 MB per image at 1080 x 1920
    outputs = per_chunk * 1024 * 14 * 14 * 4
    scaled_map = 1024 * 53 * 94 * 4  # res4 of 843 x 1500, padded to 864 x 1504
    assert nbytes + outputs + scaled_map <= 256 * 2**20


def test_roi_align_adaptive_needs_a_bound():
    with pytest.raises(ValueError, match="max_grid"):
        E.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4), 2, 1.0, 0)


@pytest.mark.parametrize(
    "name, boxes, scores, valid, t", [pytest.param(*case, id=case[0]) for case in nms_cases()]
)
def test_nms_matches_torchvision(name, boxes, scores, valid, t):
    ref = tv_nms(boxes, scores, t, valid)
    index, count = E.nms(boxes, scores, t, valid=valid)
    assert int(count) == len(ref), name
    assert torch.equal(index[: len(ref)], ref), name
    assert not index[len(ref) :].any()
    # the same through a float32 threshold tensor (what a graph input carries)
    index, count = E.nms(boxes, scores, torch.tensor(E.iou_threshold_f32(t)), valid=valid)
    assert torch.equal(index[:count], ref), name


def test_nms_batched_images_cap_and_threshold_rounding():
    gen = torch.Generator().manual_seed(2)
    boxes = torch.stack([random_boxes(gen, 300), chain(300)[0]])
    scores = torch.stack([torch.rand(300, generator=gen), chain(300)[1]])
    index, count = E.nms(boxes, scores, 0.5, max_out=40)
    for b in range(2):
        ref = tv_nms(boxes[b], scores[b], 0.5)[:40]
        assert int(count[b]) == len(ref) and torch.equal(index[b, : len(ref)], ref)
    f32 = np.float32(0.7)
    assert E.iou_threshold_f32(0.7) == float(f32)  # float32(0.7) < 0.7: kept
    assert E.iou_threshold_f32(float(f32) - 1e-12) == float(np.nextafter(f32, np.float32(0)))


def test_batched_nms_matches_torchvision():
    gen = torch.Generator().manual_seed(3)
    boxes = random_boxes(gen, 500, extent=60.0)
    scores = torch.randint(0, 5, (500,), generator=gen).float() / 5
    idxs = torch.randint(0, 3, (500,), generator=gen)
    valid = torch.rand(500, generator=gen) > 0.1
    # torchvision takes its coordinate trick up to 1000 boxes on the CPU
    ref = tv_nms(boxes, scores, 0.5, valid, idxs)
    index, count = E.batched_nms(boxes, scores, idxs, 0.5, valid=valid)
    assert torch.equal(index[:count], ref)
    index, count = E.batched_nms(boxes, scores, torch.ones_like(idxs), 0.5)  # SeqNet's labels
    assert torch.equal(index[:count], torchvision.ops.batched_nms(boxes, scores, idxs * 0 + 1, 0.5))


@pytest.mark.parametrize("k", [10, 3840, 3841, 6000, 9000])
def test_topk_matches_torch(k):
    x = torch.randperm(2 * 3 * 10000).float().reshape(2, 10000, 3)  # no ties
    values, index = E.topk(x, k, dim=1)
    ref = torch.topk(x, k, dim=1)
    assert torch.equal(values, ref.values) and torch.equal(index, ref.indices)


def test_topk_ties_and_infinities():
    """Values are torch.topk's; indices a valid selection (torch.topk orders ties as it
    likes on the CPU; ONNX Runtime's order is checked against a stable sort below)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randint(0, 6, (3, 9000), generator=gen).float()
    x[:, 4000:] = float("-inf")
    x[0, :50] = float("inf")
    x[1] = float("-inf")
    values, index = E.topk(x, 8000, dim=1)
    assert torch.equal(values, torch.topk(x, 8000, dim=1).values)
    assert torch.equal(torch.gather(x, 1, index), values)
    assert all(len(set(row.tolist())) == 8000 for row in index)


# ---------------------------------------------------------------------------------------
# ONNX: export once per module, then ONNX Runtime and the graph rules


class RoIAlignGraph(torch.nn.Module):
    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, features, boxes, small_boxes):
        outs = []
        for output_size, sampling_ratio, aligned, max_grid in ROI_CASES:
            rois = boxes if max_grid is None else small_boxes
            args = (output_size, SCALE, sampling_ratio, aligned, max_grid, self.method, 16)
            outs.append(E.roi_align(features, rois, *args))
        return tuple(outs)


class NMSGraph(torch.nn.Module):
    def forward(self, boxes, scores, idxs, valid, iou_threshold):
        index, count = E.nms(boxes, scores, iou_threshold, max_out=300, valid=valid)
        b_index, b_count = E.batched_nms(boxes, scores, idxs, iou_threshold, valid=valid)
        return index, count, b_index, b_count


class TopKGraph(torch.nn.Module):
    KS = (100, 6000, 9000)

    def forward(self, x):
        return tuple(t for k in self.KS for t in E.topk(x, k, dim=1))


def _roi_inputs(gen, batch, height, width):
    return (
        torch.randn(batch, 8, height, width, generator=gen),
        roi_boxes(gen, batch, 40, height, width),
        roi_boxes(gen, batch, 40, height, width, (5 * 3 / SCALE, 7 * 3 / SCALE)),
    )


def _graphs():
    """name -> (module, example inputs, dynamic shapes, TensorRT profile shapes)."""
    gen = torch.Generator().manual_seed(5)
    batch = Dim("batch", min=1, max=8)
    roi_args = _roi_inputs(gen, 2, *MAP)
    roi_dyn = ({0: batch, 2: Dim("h", min=1, max=256), 3: Dim("w", min=1, max=256)},)
    roi_dyn += ({0: batch}, {0: batch})
    roi_profile = {
        "features": ((1, 8, 1, 1), (1, 8, *MAP), (2, 8, 256, 256)),
        "boxes": ((1, 40, 4), (1, 40, 4), (2, 40, 4)),
        "small_boxes": ((1, 40, 4), (1, 40, 4), (2, 40, 4)),
    }
    n = 500
    nms_args = (
        torch.rand(2, n, 4),
        torch.rand(2, n),
        torch.zeros(2, n, dtype=torch.int64),
        torch.ones(2, n, dtype=torch.bool),
        torch.tensor(0.5),
    )
    nms_dyn = ({0: batch}, {0: batch}, {0: batch}, {0: batch}, None)
    nms_profile = {
        name: ((1, *shape), (1, *shape), (4, *shape))
        for name, shape in (("boxes", (n, 4)), ("scores", (n,)), ("idxs", (n,)), ("valid", (n,)))
    }
    topk_args = (torch.randn(2, 10000),)
    topk_dyn = ({0: batch, 1: Dim("n", min=9000, max=2**20)},)
    topk_profile = {"x": ((1, 9000), (1, 20000), (4, 100000))}
    return {
        "roi_align_grid_sample": (RoIAlignGraph("grid_sample"), roi_args, roi_dyn, roi_profile),
        "roi_align_gather": (RoIAlignGraph("gather"), roi_args, roi_dyn, roi_profile),
        "roi_align_separable": (RoIAlignGraph("separable"), roi_args, roi_dyn, roi_profile),
        "nms": (NMSGraph(), nms_args, nms_dyn, nms_profile),
        "topk": (TopKGraph(), topk_args, topk_dyn, topk_profile),
    }


GRAPHS = tuple(_graphs())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (path, ModelProto, TensorRT profile), exported once for the module."""
    folder = tmp_path_factory.mktemp("engine_ops")
    out = {}
    for name, (module, args, dynamic_shapes, profile) in _graphs().items():
        path = folder / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on renamed axes and the like
            program = torch.onnx.export(
                module.eval(), args, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False
            )
        program.save(str(path))
        out[name] = (path, onnx.load(str(path)), profile)
    return out


def _session(path):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)


def _graphs_of(graph):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs_of(attr.g)


def _constant(model, name):
    for graph in _graphs_of(model.graph):
        for init in graph.initializer:
            if init.name == name:
                return onnx.numpy_helper.to_array(init)
        for node in graph.node:
            if node.op_type == "Constant" and node.output[0] == name:
                return onnx.numpy_helper.to_array(node.attribute[0].t)
    return None


@pytest.mark.parametrize("name", GRAPHS)
def test_exported_graph_follows_the_engine_rules(exported, name):
    _, model, _ = exported[name]
    inferred = onnx.shape_inference.infer_shapes(model)
    ops = {node.op_type for node in _nodes(model.graph)}
    assert not ops & {"RoiAlign", "NonMaxSuppression", "NonZero", "Unique"}, ops
    assert all(node.domain in ("", "ai.onnx") for node in _nodes(model.graph))
    # no float64: no tensor, initializer, constant or cast of that type, subgraphs included
    for graph in _graphs_of(inferred.graph):
        for value in (*graph.input, *graph.output, *graph.value_info):
            assert value.type.tensor_type.elem_type != TensorProto.DOUBLE, value.name
        assert all(init.data_type != TensorProto.DOUBLE for init in graph.initializer)
    for node in _nodes(model.graph):
        for attr in node.attribute:
            assert not (
                node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.DOUBLE
            )
            assert not (
                attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.DOUBLE
            )
    # TopK: a constant k of at most 3840
    for node in _nodes(model.graph):
        if node.op_type == "TopK":
            k = _constant(model, node.input[1])
            assert k is not None and int(k.reshape(-1)[0]) <= E.TOPK_LIMIT
    # fixed-shape outputs: every dimension a number or an input's named dimension
    named = {d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim}
    for output in model.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            assert dim.HasField("dim_value") or dim.dim_param in named, (output.name, dim)
    if name == "nms":
        assert "Loop" in ops
    if name == "topk":
        assert sum(node.op_type == "TopK" for node in _nodes(model.graph)) > len(TopKGraph.KS)


@pytest.mark.parametrize("method", ["grid_sample", "gather", "separable"])
def test_onnx_roi_align_matches_torchvision(exported, method):
    path, _, _ = exported[f"roi_align_{method}"]
    session = _session(path)
    names = [i.name for i in session.get_inputs()]
    gen = torch.Generator().manual_seed(6)
    for batch, height, width in ((2, *MAP), (1, 20, 30), (3, 1, 2)):
        inputs = _roi_inputs(gen, batch, height, width)
        outs = session.run(None, dict(zip(names, (t.numpy() for t in inputs))))
        for out, (output_size, sampling_ratio, aligned, max_grid) in zip(outs, ROI_CASES):
            boxes = inputs[1] if max_grid is None else inputs[2]
            ref = tv_roi_align(inputs[0], boxes, output_size, sampling_ratio, aligned)
            tol = 3e-5 if method == "grid_sample" and width > 30 else 1e-5
            assert np.abs(out - ref.numpy()).max() <= tol, (height, width, output_size, aligned)


def test_onnx_nms_matches_torchvision(exported):
    path, _, _ = exported["nms"]
    session = _session(path)
    names = [i.name for i in session.get_inputs()]
    cases = nms_cases()
    gen = torch.Generator().manual_seed(7)
    for first, second in zip(cases[0::2], cases[1::2] + cases[:1]):  # two images a run
        for threshold in {first[4], second[4]}:
            idxs = torch.randint(0, 3, (2, 500), generator=gen)
            feeds = {
                names[0]: torch.stack([first[1], second[1]]).numpy(),
                names[1]: torch.stack([first[2], second[2]]).numpy(),
                names[2]: idxs.numpy(),
                names[3]: torch.stack([first[3], second[3]]).numpy(),
                names[4]: np.array(E.iou_threshold_f32(threshold), dtype=np.float32),
            }
            index, count, b_index, b_count = session.run(None, feeds)
            for b, (name, boxes, scores, valid, t) in enumerate((first, second)):
                if t != threshold:
                    continue
                ref = tv_nms(boxes, scores, t, valid)[:300].numpy()
                assert count[b] == len(ref) and np.array_equal(index[b, : len(ref)], ref), name
                assert not index[b, len(ref) :].any()
                ref = tv_nms(boxes, scores, t, valid, idxs[b]).numpy()
                assert b_count[b] == len(ref), name
                assert np.array_equal(b_index[b, : len(ref)], ref), name


def test_onnx_topk_is_exact(exported):
    path, _, _ = exported["topk"]
    session = _session(path)
    gen = torch.Generator().manual_seed(8)
    distinct = torch.randperm(2 * 12000, generator=gen).float().reshape(2, 12000)
    ties = torch.randint(0, 6, (3, 9500), generator=gen).float()
    ties[:, 5000:] = float("-inf")
    ties[0, :60] = float("inf")
    ties[2] = float("-inf")
    for x in (distinct, ties):
        outs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        for i, k in enumerate(TopKGraph.KS):
            values, index = stable_topk(x, k, 1)
            assert np.array_equal(outs[2 * i], values.numpy()), k
            assert np.array_equal(outs[2 * i + 1], index.numpy()), k
            if x is distinct:
                assert np.array_equal(outs[2 * i + 1], torch.topk(x, k, 1).indices.numpy())


# ---------------------------------------------------------------------------------------
# TensorRT-RTX: parse and build on this CPU for an explicit compute capability


def build_tensorrt_rtx(path, profile, capability="SM86"):
    """Serialized engine of ``path`` built by TensorRT-RTX for ``capability`` (no GPU needed),
    and the build's seconds; raises AssertionError with the parser's errors."""
    trt = pytest.importorskip(
        "tensorrt_rtx_bindings",
        reason="TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13-libs "
        "tensorrt-rtx-cu13-bindings)",
    )
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise AssertionError(f"TensorRT-RTX cannot parse {path.name}: {errors}")
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    assert config.set_compute_capability(getattr(trt.ComputeCapability, capability), 0)
    optimization = builder.create_optimization_profile()
    for name, (low, best, high) in profile.items():
        optimization.set_shape(name, low, best, high)
    config.add_optimization_profile(optimization)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    return serialized, time.perf_counter() - start


@pytest.mark.parametrize("name", GRAPHS)
def test_tensorrt_rtx_builds_on_the_cpu(exported, name):
    path, _, profile = exported[name]
    serialized, _ = build_tensorrt_rtx(path, profile)
    assert serialized is not None and serialized.nbytes > 0
