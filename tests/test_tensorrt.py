"""TensorRT: the engine graph flavour, the engine builder (``seqnet-export --engine``,
``seqnet_export.engine``) and the ``tensorrt`` runtime backend.

On any machine (CI runs these on a CPU):
- the host's size rule and bilinear resize (what the engine graphs take instead of computing
  them in float64) against torchvision's and PyTorch's, over every size 32-4096 of one axis
  and a dense sample of both;
- a tiny package (the demo's ResNet-10, non-square RoIs) exported with ``--fp16 --engine
  --gpu-arch sm86,sm89``: the engine graphs follow TensorRT's rules and match PyTorch on ONNX
  Runtime, and TensorRT-RTX (installed by the test extras; it builds on a CPU) built fp32 and
  fp16 engines of both graphs for both targets, recorded in the manifest;
- every node TensorRT cannot build is named in the one error (rules, parser, builder);
- the ``tensorrt`` backend: where no GPU is, ``load`` fails in one line saying so; the engine
  for a GPU is chosen from the manifest, or one line says what to build; its host logic is
  the shared PackageSession's, run by tests/test_backend_conformance.py on the engine graphs;
- (slow) the default ResNet-50 detection engine builds.

With a GPU (marked ``cuda``; ``make gpu-check`` runs them): the engines against the engine
graphs on ONNX Runtime, fp32 at the fp32 tolerances and fp16 at the fp16 contract, on the
tiny package and on the golden cases.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from seqnet_export import engine
from seqnet_export.cli import main
from seqnet_runtime import load
from seqnet_runtime import package as package_format
from seqnet_runtime.boxes import pairwise_iou
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.package import Preprocess
from seqnet_train.config import load_cfg
from tests.test_export import MODEL_OPTS, OPTS, THREADS, assert_close, frames
from tests.tiny import tiny_batch, tiny_model

TARGETS = ("sm86", "sm89")
RULES = ((900, 1500), (800, 1333), (360, 480), (128, 192))  # MIN/MAX: default, ..., tiny
SIDES = range(32, 4097)


def has_tensorrt_rtx():
    """TensorRT-RTX (what the test extras install) builds here for TARGETS, GPU or not; full
    TensorRT builds only for the GPU it runs on (the cuda tests cover it)."""
    found = engine.library()
    return found is not None and found[0] == "tensorrt_rtx"


# ----------------------------------------------------------- the host's size rule --- #
def torchvision_size(height, width, min_size, max_size):
    """The size torchvision's GeneralizedRCNNTransform resizes an H x W image to (its own
    function, on a one-channel image)."""
    from torchvision.models.detection.transform import _resize_image_and_masks

    out, _ = _resize_image_and_masks(torch.zeros(1, height, width), min_size, max_size)
    return tuple(out.shape[-2:])


def torchvision_rule(heights, widths, min_size, max_size):
    """torchvision's arithmetic, vectorised: ``scale = min(MIN / min(H, W), MAX / max(H, W))``
    and ``floor(X * scale)``, in float64 as its Python floats."""
    h, w = np.asarray(heights, np.float64), np.asarray(widths, np.float64)
    scale = np.minimum(min_size / np.minimum(h, w), max_size / np.maximum(h, w))
    return np.floor(h * scale).astype(np.int64), np.floor(w * scale).astype(np.int64)


def test_size_rule_is_torchvisions_on_every_size_of_one_axis():
    """Every height 32-4096 (width 32) and every width (height 32), through torchvision's own
    resize function, at the default MIN/MAX (the dense sample below covers the others)."""
    min_size, max_size = RULES[0]
    rule = Preprocess(min_size, max_size, [0.0] * 3, [1.0] * 3, 32)
    for side in SIDES:
        assert rule.resized_size(side, 32) == torchvision_size(side, 32, min_size, max_size)
        assert rule.resized_size(32, side) == torchvision_size(32, side, min_size, max_size)


@pytest.mark.parametrize("min_size, max_size", RULES)
def test_size_rule_is_torchvisions_on_a_dense_sample(min_size, max_size):
    """Every third size 32-4096 on both sides (1.8 million images) and every height at three
    widths, against torchvision's arithmetic."""
    rule = Preprocess(min_size, max_size, [0.0] * 3, [1.0] * 3, 32)
    sides = np.arange(32, 4097, 3)
    heights, widths = np.meshgrid(sides, sides, indexing="ij")
    heights, widths = heights.ravel(), widths.ravel()
    for width in (1080, 1920, 4096):
        heights = np.concatenate([heights, np.arange(32, 4097)])
        widths = np.concatenate([widths, np.full(4065, width)])
    ref_h, ref_w = torchvision_rule(heights, widths, min_size, max_size)
    ours = np.array([rule.resized_size(h, w) for h, w in zip(heights.tolist(), widths.tolist())])
    assert np.array_equal(ours[:, 0], ref_h) and np.array_equal(ours[:, 1], ref_w)


def assert_axis_is_pytorchs(size_in, size_out):
    """``Preprocess.resize_axis`` against PyTorch's bilinear kernel along one axis, exactly:
    probes of 0/1 values (all ones, and each bit of the column number) make each output a sum
    of the weights alone, so equal outputs mean equal rows and weights."""
    index, weight = Preprocess.resize_axis(size_in, size_out)
    cols = np.arange(size_in)
    bits = max(1, int(size_in - 1).bit_length())
    probes = np.stack([np.ones(size_in)] + [(cols >> b) & 1 for b in range(bits)])
    probes = probes.astype(np.float32)
    ours = probes[:, index[0]] * weight[0] + probes[:, index[1]] * weight[1]
    x = torch.from_numpy(probes)
    along_x = F.interpolate(x[:, None, None, :], size=(1, size_out), mode="bilinear",
                            align_corners=False)[:, 0, 0].numpy()  # fmt: skip
    along_y = F.interpolate(x[:, None, :, None], size=(size_out, 1), mode="bilinear",
                            align_corners=False)[:, 0, :, 0].numpy()  # fmt: skip
    assert np.array_equal(ours, along_x), (size_in, size_out)
    assert np.array_equal(ours, along_y), (size_in, size_out)


def test_resize_rows_and_weights_are_pytorchs_on_every_size_of_one_axis():
    """Every side 32-4096 resized as the default rule resizes it next to a 1080 side (and to
    that side's twin), and random sizes up and down."""
    rule = Preprocess(900, 1500, [0.0] * 3, [1.0] * 3, 32)
    for side in SIDES:
        new_side, new_other = rule.resized_size(side, 1080)
        assert_axis_is_pytorchs(side, new_side)
    rng = np.random.default_rng(0)
    for size_in, size_out in rng.integers(1, 5000, size=(300, 2)):
        assert_axis_is_pytorchs(int(size_in), int(size_out))
    index, weight = Preprocess.resize_axis(640, 1066)
    assert index.dtype == np.int64 and weight.dtype == np.float32
    assert index.shape == weight.shape == (2, 1066)


def test_engine_preprocessing_is_torchvisions():
    """The engine flavour's pre-processing nodes with the host's rows and weights against
    GeneralizedRCNNTransform (as the standard graphs' test: 1e-6, the order of a float sum)."""
    import onnxruntime as ort
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from seqnet_export.preprocess import preprocess_model

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    transform = GeneralizedRCNNTransform(900, 1500, mean, std).eval()
    model = preprocess_model(900, 1500, mean, std, engine=True)
    run = ort.InferenceSession(model.SerializeToString())
    rule = Preprocess(900, 1500, mean, std, 32)
    g = torch.Generator().manual_seed(0)
    for h, w in [(240, 320), (300, 200), (1080, 1920), (700, 700), (37, 1000), (201, 268)]:
        image = torch.rand(3, h, w, generator=g)
        ref, _ = transform([image])
        feeds = {"images": image[None].numpy()}
        feeds |= {k: v for k, v in rule.host_inputs(h, w).items() if k.startswith("resize_")}
        pixels, resized, original = run.run(None, feeds)
        assert tuple(resized) == tuple(ref.image_sizes[0]) and tuple(original) == (h, w)
        assert pixels.shape == tuple(ref.tensors.shape)
        assert np.abs(pixels - ref.tensors.numpy()).max() <= 1e-6
    rules = [v for v in engine.rule_violations(model) if "depends on the data" not in v[2]]
    assert rules == []  # (its padded output's size is the shapes', which inference cannot name)


# --------------------------------------------------------- the tiny engine package --- #
@pytest.fixture(scope="module")
def model():
    return tiny_model(*MODEL_OPTS).eval()


@pytest.fixture(scope="module")
def package(model, tmp_path_factory):
    """``seqnet-export --ckpt CKPT --fp16 --engine-graphs --engine --gpu-arch sm86,sm89``
    (without ``--engine`` where TensorRT-RTX is not installed): engine graphs verified on ONNX
    Runtime, engines built."""
    torch.set_num_threads(THREADS)
    ckpt = tmp_path_factory.mktemp("trt") / "epoch_0.pth"
    torch.save({"model": model.state_dict(), "config": load_cfg(None, OPTS).dump()}, ckpt)
    build = ["--engine", "--gpu-arch", ",".join(TARGETS)] if has_tensorrt_rtx() else []
    main(["--ckpt", str(ckpt), "--fp16", "--engine-graphs", *build, "--threads", str(THREADS)])
    return ckpt.with_name("epoch_0_package")


@pytest.fixture(scope="module")
def manifest(package):
    return package_format.read(package)


@pytest.mark.parametrize("flavour", ["engine_fp32", "engine_fp16"])
def test_engine_graphs_follow_tensorrts_rules(package, manifest, flavour):
    """No float64, RoiAlign, NonMaxSuppression, TopK above 3840 or data-dependent output;
    the standard graphs break them (the checker sees it) and the engine graphs do not."""
    for graph in ("detect", "embed"):
        proto = onnx.load(
            str(package / manifest.graphs[flavour][graph].file), load_external_data=False
        )
        assert engine.rule_violations(proto) == [], graph
        names = [i.name for i in proto.graph.input]
        assert "resized_hw" not in names and {"resize_y_index", "resize_x_weight"} <= set(names)
    standard = onnx.load(
        str(package / manifest.graphs["fp32"]["detect"].file), load_external_data=False
    )
    found = {op for _, op, _ in engine.rule_violations(standard)}
    assert {"RoiAlign", "NonMaxSuppression", "Cast"} <= found


def test_export_verified_the_engine_graphs(manifest):
    assert sorted(manifest.graphs) == ["engine_fp16", "engine_fp32", "fp16", "fp32"]
    parity = manifest.parity
    assert parity["engine_fp32_vs_torch"]["passed"], parity["engine_fp32_vs_torch"]
    assert parity["engine_fp32_vs_torch"]["same_detections"]
    assert parity["engine_fp16_vs_engine_fp32"]["passed"]


def test_engine_graphs_match_pytorch_on_onnxruntime(package, model):
    """Gallery, CBGM and query paths of the engine graphs (``graphs="engine"``) against the
    PyTorch model; a batch of three equals one by one; the forced-empty case."""
    session = load(package, "onnxruntime", graphs="engine", threads=THREADS)
    assert session.flavour == "engine_fp32"
    images, targets = tiny_batch(n_images=2)
    arrays = [im.permute(1, 2, 0).numpy() for im in images]
    with torch.no_grad():
        ref = model.predict(images)
        ctx = [t["boxes"][:1] for t in targets]
        ref_ctx = model.predict(images, context_boxes=ctx)
        ref_q = model.embed_boxes(images, [t["boxes"] for t in targets])
    ours = session.detect(arrays)
    ours_ctx = session.detect(arrays, [c.numpy() for c in ctx])
    assert sum(len(o["boxes"]) for o in ours) > 0
    for i in range(2):
        assert_close(ours[i], ref[i])
        assert_close(ours_ctx[i], ref_ctx[i])
        assert ours_ctx[i]["scores"][0] == 1.0
        q = session.embed(arrays[i], targets[i]["boxes"].numpy())
        assert np.abs(q - ref_q[i].numpy()).max() <= 1e-4
    batched = load(package, "onnxruntime", graphs="engine", threads=THREADS, batch_size=3)
    same = frames(1, 3)
    for image, out in zip(same, batched.detect(same)):
        assert_close(out, session.detect([image])[0])
    empty = load(package, "onnxruntime", graphs="engine", threads=THREADS, score_thresh=0.999)
    assert empty.detect([same[0]])[0]["boxes"].shape == (0, 4)


def test_engine_fp16_graphs_keep_the_fp16_contract(package):
    fp32 = load(package, "onnxruntime", graphs="engine", threads=THREADS)
    fp16 = load(package, "onnxruntime", graphs="engine", precision="fp16", threads=THREADS)
    assert fp16.flavour == "engine_fp16"
    image = frames(1, 1)[0]
    ref, out = fp32.detect([image])[0], fp16.detect([image])[0]
    keep = ref["scores"] >= 0.5
    if keep.any():
        assert (pairwise_iou(ref["boxes"][keep], out["boxes"]).max(1) >= 0.95).mean() >= 0.99


# ------------------------------------------------------------------- the builder --- #
needs_tensorrt = pytest.mark.skipif(
    not has_tensorrt_rtx(),
    reason="no TensorRT-RTX installed (pip install '.[tensorrt]': it builds on a CPU)",
)


@needs_tensorrt
def test_engines_for_two_targets_in_the_manifest(package, manifest):
    """fp32 and fp16 engines of both graphs for both targets, named by graph, flavour, target
    and library version, each entry's file present, with its profile."""
    name, trt = engine.library()
    entries = {(e.graph, e.flavour, e.target): e for e in manifest.engines}
    flavours = ("engine_fp32", "engine_fp16")
    assert set(entries) == {
        (g, f, t) for g in ("detect", "embed") for f in flavours for t in TARGETS
    }
    for (graph, flavour, target), entry in entries.items():
        assert entry.library == name and entry.version == trt.__version__
        assert entry.file == engine.engine_name(graph, flavour, target, name, trt.__version__)
        assert (package / entry.file).stat().st_size == entry.bytes > 0
        assert entry.seconds > 0
        assert entry.profile["images"][2][0] == engine.MAX_BATCH
        assert entry.profile["images"][0][2:] == [engine.MIN_SIDE] * 2
        if graph == "embed":
            assert entry.profile["boxes"][2][1] == engine.MAX_BOXES
    raw = json.loads((package / "manifest.json").read_text())
    assert raw["format_version"] == package_format.FORMAT_VERSION == 2
    assert len(raw["engines"]) == 8


def test_gpu_arch_choices():
    rtx = "tensorrt_rtx"
    assert engine.parse_targets("all", rtx) == (list(engine.ALL_TARGETS), None)
    assert engine.parse_targets("sm86, 8.9,sm86", rtx) == (["sm86", "sm89"], None)
    assert engine.parse_targets(None, rtx, here="sm89") == (["sm89"], None)
    assert engine.parse_targets(None, rtx, here=None)[0] == list(engine.ALL_TARGETS)
    targets, why = engine.parse_targets("sm90", rtx)
    assert targets is None and "full TensorRT" in why and "\n" not in why
    targets, why = engine.parse_targets(None, "tensorrt", here=None)
    assert targets is None and "no NVIDIA GPU" in why
    assert engine.parse_targets("all", "tensorrt", here="sm90") == (["sm90"], None)
    assert "for this GPU (sm90) only" in engine.parse_targets("sm86", "tensorrt", here="sm90")[1]


def bad_graph(path, nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "bad", inputs, outputs, list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def value(name, dtype=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_rule_violations_name_every_node(tmp_path):
    n = helper.make_node
    path = bad_graph(
        tmp_path / "bad.onnx",
        [
            n("RoiAlign", ["x", "rois", "index"], ["pooled"], name="roi_a", output_height=2,
              output_width=2),
            n("RoiAlign", ["x", "rois", "index"], ["pooled_b"], name="roi_b"),
            n("NonMaxSuppression", ["boxes", "scores"], ["kept"], name="nms"),
            n("Cast", ["scores2"], ["doubled"], name="to_double", to=TensorProto.DOUBLE),
            n("TopK", ["scores2", "k"], ["top", "top_index"], name="top_6000"),
        ],  # fmt: skip
        [value("x", shape=[1, 4, 8, 8]), value("rois", shape=[3, 4]),
         value("index", TensorProto.INT64, [3]), value("boxes", shape=[1, 20, 4]),
         value("scores", shape=[1, 1, 20]), value("scores2", shape=[1, 10000])],
        [value("pooled"), value("pooled_b"), value("kept", TensorProto.INT64),
         value("doubled", TensorProto.DOUBLE), value("top")],
        [helper.make_tensor("k", TensorProto.INT64, [1], [6000])],
    )  # fmt: skip
    found = engine.rule_violations(onnx.load(str(path)))
    named = {(name, op) for name, op, _ in found}
    assert {("roi_a", "RoiAlign"), ("roi_b", "RoiAlign"), ("nms", "NonMaxSuppression"),
            ("to_double", "Cast"), ("top_6000", "TopK")} <= named  # fmt: skip
    if has_tensorrt_rtx():
        with pytest.raises(SeqNetError) as error:
            engine.Builder().build(path, {}, ["sm86"])
        message = str(error.value)
        assert "\n" not in message
        for name in ("roi_a", "roi_b", "nms", "to_double", "top_6000"):
            assert name in message


@needs_tensorrt
def test_parser_and_builder_errors_name_every_node(tmp_path):
    """Past the rules: two nodes the parser rejects (Det), then two layers the builder rejects
    (TopK k = 6000, the rules off): every one named with its operator, in one line."""
    n = helper.make_node
    det = bad_graph(
        tmp_path / "det.onnx",
        [n("Det", ["a"], ["da"], name="det_first"), n("Relu", ["da"], ["ra"], name="fine"),
         n("Det", ["b"], ["db"], name="det_second")],
        [value("a", shape=[2, 3, 3]), value("b", shape=[2, 3, 3])],
        [value("ra", shape=[2]), value("db", shape=[2])],
    )  # fmt: skip
    with pytest.raises(SeqNetError) as error:
        engine.Builder().build(det, {}, ["sm86"])
    message = str(error.value)
    assert "det_first (Det)" in message and "det_second (Det)" in message
    assert "fine" not in message and "\n" not in message
    topk = bad_graph(
        tmp_path / "topk.onnx",
        [n("TopK", ["x", "k"], ["v1", "i1"], name="topk_one"),
         n("TopK", ["y", "k"], ["v2", "i2"], name="topk_two")],
        [value("x", shape=[1, 10000]), value("y", shape=[1, 10000])],
        [value("v1", shape=[1, 6000]), value("v2", shape=[1, 6000])],
        [helper.make_tensor("k", TensorProto.INT64, [1], [6000])],
    )  # fmt: skip
    with pytest.raises(SeqNetError) as error:
        engine.Builder().build(topk, {}, ["sm86"], rules=False)
    message = str(error.value)
    assert "topk_one (TopK)" in message and "topk_two (TopK)" in message
    assert "3840" in message


@needs_tensorrt
def test_engine_build_of_a_package_names_every_failing_node(package, manifest, tmp_path):
    """``seqnet-export --engine``'s step on a package whose engine graph holds operators
    TensorRT cannot build: every one named, nothing built."""
    spec = manifest.graphs["engine_fp32"]["detect"]
    proto = onnx.load(str(package / spec.file), load_external_data=False)
    n = helper.make_node
    proto.graph.node.extend([
        n("RoiAlign", ["images", "context_boxes", "count"], ["extra_pool"], name="added_roi"),
        n("NonMaxSuppression", ["context_boxes", "scores"], ["extra_nms"], name="added_nms"),
    ])  # fmt: skip
    proto.graph.output.extend([value("extra_pool"), value("extra_nms", TensorProto.INT64)])
    onnx.save(proto, str(tmp_path / spec.file))
    (tmp_path / "weights.bin").symlink_to(package / "weights.bin")
    graphs = {"engine_fp32": manifest.graphs["engine_fp32"]}
    bad = package_format.Manifest(**{**manifest.__dict__, "graphs": graphs, "engines": []})
    with pytest.raises(SeqNetError, match="added_roi \\(RoiAlign\\).*added_nms") as error:
        engine.build_engines(tmp_path, bad, ["sm86"])
    assert "\n" not in str(error.value)
    assert not list(tmp_path.glob("*.engine"))


@pytest.mark.slow
@needs_tensorrt
def test_default_resnet50_detect_engine_builds(tmp_path):
    """The default configuration (ResNet-50, 6000 proposals, 300 detections) exported as
    engine graphs; its detection graph builds for one target."""
    from seqnet_export.run import write_graphs
    from seqnet_train.modeling import build_model

    cfg = load_cfg(None, ["DEVICE", "cpu"])
    model = build_model(cfg, load_imagenet=False).eval()
    manifest = write_graphs(tmp_path, model, engine=True)
    spec = manifest.graphs["engine_fp32"]["detect"]
    shapes = engine.profile(spec, manifest.preprocess)
    built = engine.Builder().build(tmp_path / spec.file, shapes, ["sm86"])
    data, seconds = built["sm86"]
    assert len(data) > 50 * 2**20 and seconds < 120


# ------------------------------------------------------------ the tensorrt backend --- #
def gpu_here():
    from seqnet_runtime.tensorrt_backend import gpu

    try:
        return gpu()
    except SeqNetError:
        return None


def test_tensorrt_backend_without_a_gpu_says_so_in_one_line(package):
    if gpu_here() is not None:
        pytest.skip("a GPU is here: the backend loads (the cuda tests run it)")
    with pytest.raises(SeqNetError) as error:
        load(package, backend="tensorrt")
    message = str(error.value)
    assert "NVIDIA GPU" in message and "--backend onnxruntime" in message
    assert "\n" not in message
    with pytest.raises(SeqNetError, match="runs on cuda, not 'cpu'"):
        load(package, backend="tensorrt", device="cpu")


def test_auto_never_picks_tensorrt(package):
    from seqnet_runtime.backend import backends

    assert backends()["tensorrt"] == "seqnet_runtime.tensorrt_backend:TensorRTSession"
    assert load(package, threads=THREADS).name == "onnxruntime"


def test_the_engine_for_this_gpu_is_chosen_from_the_manifest(manifest):
    from seqnet_runtime.package import Engine
    from seqnet_runtime.tensorrt_backend import choose_engine

    def entry(target, library="tensorrt_rtx", version="1.7.1.116"):
        return Engine(f"detect_engine_fp16.{target}.{library}-{version}.engine", "detect",
                      "engine_fp16", target, library, version)  # fmt: skip

    m = package_format.Manifest(**{**manifest.__dict__, "engines": [entry("sm86"), entry("sm89")]})
    rtx = {"tensorrt_rtx": "1.7.1.116"}
    assert choose_engine(m, "engine_fp16", "detect", "sm89", "L4", rtx).target == "sm89"
    for target, gpu_name, libraries, expect in [
        ("sm80", "A100", rtx, "no TensorRT engine for this GPU (A100, sm80; it has sm86, sm89)"),
        ("sm80", "A100", rtx, "seqnet-export --engine --gpu-arch sm80"),
        ("sm90", "H100", rtx, "--gpu-arch sm90 with full TensorRT 10/11"),
        ("sm86", "A10", {"tensorrt_rtx": "1.8.0"}, "built by tensorrt_rtx 1.7.1.116"),
        ("sm86", "A10", {}, "this machine has no TensorRT"),
    ]:
        with pytest.raises(SeqNetError, match=expect.replace("(", "\\(").replace(")", "\\)")):
            choose_engine(m, "engine_fp16", "detect", target, gpu_name, libraries)
    with pytest.raises(SeqNetError, match="no TensorRT engine of its engine_fp32 detect"):
        choose_engine(m, "engine_fp32", "detect", "sm86", "A10", rtx)


@needs_tensorrt
def test_tensorrt_session_through_a_stand_in_runner(package, monkeypatch):
    """The tensorrt backend's session with its runner's engine part replaced by ONNX Runtime on
    the graph each engine was built from (a stand-in GPU of sm86): the engine is chosen from the
    manifest, and the session splits calls to the engine profile's batch and box limits; the
    outputs equal the engine graphs' on ONNX Runtime."""
    from seqnet_runtime import tensorrt_backend
    from seqnet_runtime.onnx_backend import OrtRunner

    chosen = []

    class StandIn(tensorrt_backend.TensorRTRunner):
        max_batch, max_boxes = 2, 1  # what an engine's profile would say, small

        @classmethod
        def graph_file(cls, package, manifest, flavour, graph, device):
            engine_file = super().graph_file(package, manifest, flavour, graph, device)
            chosen.append(engine_file.name)
            return package / manifest.graphs[flavour][graph].file

        def __init__(self, path, device="cuda", threads=None):
            self.ort = OrtRunner(path, "cpu", threads)

        def run(self, outputs, feeds):
            assert len(feeds["images"]) <= self.max_batch
            assert "boxes" not in feeds or feeds["boxes"].shape[1] <= self.max_boxes
            return self.ort.run(outputs, feeds)

    monkeypatch.setattr(tensorrt_backend, "gpu", lambda: ("sm86", "a stand-in GPU"))
    session_class = type("StandInSession", (tensorrt_backend.TensorRTSession,), {})
    session_class.runner = StandIn
    session = session_class(package, precision="fp32", threads=THREADS, batch_size=4)
    version = engine.library()[1].__version__
    assert chosen == [
        engine.engine_name(g, "engine_fp32", "sm86", engine.library()[0], version)
        for g in ("detect", "embed")
    ]
    assert session.batch_size == 2 and session.name == "tensorrt"
    reference = load(package, "onnxruntime", graphs="engine", threads=THREADS)
    images = frames(7, 3)
    for ours, ref in zip(session.detect(images), reference.detect(images)):
        assert_close(ours, ref)
    boxes = np.array([[5, 5, 40, 90], [50, 10, 100, 100], [0, 0, 20, 20]], np.float32)
    assert np.abs(session.embed(images[0], boxes) - reference.embed(images[0], boxes)).max() <= 1e-6


class FakeCudart:
    """cuda-python's runtime calls the runner makes, on host memory (a "device" pointer is a
    numpy buffer's address)."""

    class cudaError_t:  # noqa: N801 - cuda-python's names
        cudaSuccess = 0

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self):
        self.memory, self.copies = {}, []

    def cudaMalloc(self, nbytes):  # noqa: N802
        buffer = np.zeros(nbytes, np.uint8)
        self.memory[buffer.ctypes.data] = buffer
        return 0, buffer.ctypes.data

    cudaMallocHost = cudaMalloc  # noqa: N815

    def cudaFree(self, pointer):  # noqa: N802
        self.memory.pop(pointer, None)
        return (0,)

    cudaFreeHost = cudaFree  # noqa: N815

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        import ctypes

        assert dst in self.memory and src in self.memory and stream == 7
        ctypes.memmove(dst, src, nbytes)
        self.copies.append(kind)
        return (0,)

    def cudaStreamCreate(self):  # noqa: N802
        return 0, 7

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (0,)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        return (0,)


def fake_tensorrt(graphs, profiles):
    """A stand-in for the TensorRT module: an "engine" runs the ONNX graph it was built from
    (``graphs``: engine bytes -> graph path) on ONNX Runtime, reading its inputs from and
    writing its outputs to the addresses the runner sets, as TensorRT's named-tensor API."""
    import ctypes
    import types

    import onnxruntime as ort

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.outputs = engine, {}, {}, None

        def set_input_shape(self, name, shape):
            low, _, high = profiles.get(name, (shape, shape, shape))
            self.shapes[name] = tuple(shape)
            return all(a <= d <= b for a, d, b in zip(low, shape, high))

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def _inputs(self):
            out = {}
            for name in self.engine.inputs:
                dtype, shape = self.engine.dtypes[name], self.shapes[name]
                count = int(np.prod(shape, dtype=np.int64))
                raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.addresses[name])
                out[name] = np.frombuffer(raw, dtype, count).reshape(shape).copy()
            return out

        def get_tensor_shape(self, name):
            if self.outputs is None:  # TensorRT infers the shapes: run the graph for them
                names = self.engine.outputs
                self.outputs = dict(zip(names, self.engine.session.run(names, self._inputs())))
            return self.outputs[name].shape

        def execute_async_v3(self, stream):
            assert stream == 7
            self.outputs = None
            for name in self.engine.outputs:
                self.get_tensor_shape(name)
                array = np.ascontiguousarray(self.outputs[name])
                ctypes.memmove(self.addresses[name], array.ctypes.data, array.nbytes)
            self.outputs = None
            return True

    class Engine:
        def __init__(self, path):
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]
            kinds = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
            self.dtypes = {v.name: np.dtype(kinds[v.type]) for v in
                           (*self.session.get_inputs(), *self.session.get_outputs())}  # fmt: skip
            self.static = {v.name: v.shape for v in self.session.get_inputs()}
            self.num_io_tensors = len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i):
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return "input" if name in self.inputs else "output"

        def get_tensor_dtype(self, name):
            return self.dtypes[name]

        def get_tensor_shape(self, name):
            return tuple(d if isinstance(d, int) else -1 for d in self.static.get(name, [-1]))

        def get_tensor_profile_shape(self, name, index):
            return profiles[name]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(graphs[hash(bytes(data))])

    class Logger:
        ERROR = 1

        def __init__(self, severity):
            pass

    return types.SimpleNamespace(
        Logger=Logger,
        Runtime=Runtime,
        TensorIOMode=types.SimpleNamespace(INPUT="input"),
        nptype=lambda dtype: dtype,
        __version__="1.7.1.116",
    )


@needs_tensorrt
def test_tensorrt_runner_on_a_stand_in_gpu(package, manifest, monkeypatch):
    """The runner's own host code (pinned buffers grown on demand, host-to-device copies,
    input shapes, tensor addresses, output shapes, 0-d threshold inputs, int64 tensors, the
    copies back) against stand-ins of cuda-python and TensorRT whose "engines" run the graphs
    they were built from on ONNX Runtime: equal to the engine graphs on ONNX Runtime."""
    from seqnet_runtime import tensorrt_backend

    cudart = FakeCudart()
    graphs, profiles = {}, {}
    for e in manifest.engines:
        if e.target == "sm86":
            data = (package / e.file).read_bytes()
            graphs[hash(data)] = package / manifest.graphs[e.flavour][e.graph].file
            profiles |= {k: [tuple(s) for s in v] for k, v in e.profile.items()}
    fake = fake_tensorrt(graphs, profiles)
    monkeypatch.setattr(tensorrt_backend, "_cudart", lambda: cudart)
    monkeypatch.setattr(tensorrt_backend, "_library", lambda name: fake)
    monkeypatch.setattr(tensorrt_backend, "gpu", lambda: ("sm86", "a stand-in GPU"))
    session = load(package, "tensorrt", precision="fp32", threads=THREADS, batch_size=8,
                   graphs="standard")  # fmt: skip
    assert session.flavour == "engine_fp32"  # TensorRT runs engines of the engine graphs
    assert session.batch_size == engine.MAX_BATCH  # the engine profile's
    reference = load(package, "onnxruntime", graphs="engine", threads=THREADS)
    images = frames(8, 5) + [frames(9, 1, 100, 150)[0]]
    box = [np.array([10.0, 10.0, 60.0, 110.0], np.float32)] * len(images)
    for ours, ref in zip(session.detect(images, box), reference.detect(images, box)):
        assert_close(ours, ref)
    boxes = np.array([[5, 5, 40, 90], [50, 10, 100, 100]], np.float32)
    assert np.abs(session.embed(images[0], boxes) - reference.embed(images[0], boxes)).max() == 0
    h2d, d2h = FakeCudart.cudaMemcpyKind.cudaMemcpyHostToDevice, 2
    assert h2d in cudart.copies and d2h in cudart.copies
    with pytest.raises(SeqNetError, match="outside the engine's profile"):
        session.detect([np.zeros((40, 4097, 3), np.uint8)])  # wider than the profile's 4096
    with pytest.raises(SeqNetError, match="resizes to 0 x 192 pixels"):
        session.detect([np.zeros((8, 4000, 3), np.uint8)])


def test_tensorrt_backend_imports_no_torch():
    code = (
        "import sys, seqnet_runtime.tensorrt_backend; "
        "assert 'torch' not in sys.modules and 'seqnet_export' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# ------------------------------------------------------------------- on a GPU --- #
def engine_package(package, tmp_path):
    """The tiny package with engines for this GPU: built where the package has none for it
    and the installed TensorRT builds for it (into a copy); else skip with the reason."""
    import shutil

    target, name = gpu_here()
    manifest = package_format.read(package)
    found = engine.library()
    if found is None:
        pytest.skip("no TensorRT installed")
    if any(e.target == target and e.version == found[1].__version__ for e in manifest.engines):
        return package
    targets, why = engine.parse_targets(target, found[0], target)
    if why:
        pytest.skip(f"{name} ({target}): {why}")
    copy = tmp_path / "package"
    shutil.copytree(package, copy)
    manifest.engines = engine.build_engines(copy, manifest, targets)
    package_format.write(copy, manifest)
    return copy


@pytest.mark.cuda
def test_tensorrt_engines_match_the_engine_graphs(package, tmp_path):
    """fp32 engines against the same graphs on ONNX Runtime at the fp32 tolerances; fp16
    engines at the fp16 contract (detections >= 0.5 matched at IoU >= 0.95, cosine >= 0.999)."""
    folder = engine_package(package, tmp_path)
    ort32 = load(folder, "onnxruntime", graphs="engine", threads=THREADS)
    trt32 = load(folder, "tensorrt", precision="fp32")
    trt16 = load(folder, "tensorrt", precision="fp16")
    assert trt32.name == "tensorrt" and trt16.flavour == "engine_fp16"
    images = frames(5, 3) + [frames(6, 1, 100, 150)[0]]
    box = np.array([10.0, 10.0, 60.0, 110.0], np.float32)
    for image in images:
        ref = ort32.detect([image])[0]
        assert_close(trt32.detect([image])[0], ref)
        ctx = trt32.detect([image], [box])[0]
        assert_close(ctx, ort32.detect([image], [box])[0])
        out = trt16.detect([image])[0]
        keep = ref["scores"] >= 0.5
        if keep.any():
            iou = pairwise_iou(ref["boxes"][keep], out["boxes"])
            assert (iou.max(1) >= 0.95).mean() >= 0.99
        boxes = np.array([[5, 5, 40, 90], [50, 10, 100, 100]], np.float32)
        q = trt32.embed(image, boxes)
        assert np.abs(q - ort32.embed(image, boxes)).max() <= 1e-4
    together = trt32.detect(images[:3])
    for image, out in zip(images[:3], together):
        assert_close(out, trt32.detect([image])[0])


@pytest.mark.cuda
@pytest.mark.golden
def test_tensorrt_on_the_golden_cases(shared, tmp_path):
    """The golden model's engines against its fp32 graphs on ONNX Runtime, golden images:
    fp32 at the fp32 tolerances, fp16 at the fp16 contract. The largest differences go to
    ``SEQNET_TENSORRT_REPORT`` (a JSON file) when set (``make gpu-check``)."""
    from tests.test_backend_conformance import _export

    golden = torch.load(shared / "parity" / "golden_inference.pt", weights_only=True)
    folder = _export(shared, golden, tmp_path / "golden", fp16=True, engine=True)
    folder = engine_package(folder, tmp_path)
    ort32 = load(folder, "onnxruntime", threads=THREADS)
    report = {}
    for precision in ("fp32", "fp16"):
        session = load(folder, "tensorrt", precision=precision)
        worst = {"box_px": 0.0, "score": 0.0, "embedding": 0.0, "matched": 1.0, "cosine": 1.0}
        for im in golden["images"]:
            image = im.permute(1, 2, 0).numpy()
            ref, out = ort32.detect([image])[0], session.detect([image])[0]
            keep = ref["scores"] >= 0.5
            iou = pairwise_iou(ref["boxes"][keep], out["boxes"])
            best = iou.argmax(1)
            matched = float((iou.max(1) >= 0.95).mean()) if keep.any() else 1.0
            a, b = ref["embeddings"][keep], out["embeddings"][best]
            cos = (a * b).sum(1) / np.maximum(
                np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
            )
            worst["matched"] = min(worst["matched"], matched)
            worst["cosine"] = min(worst["cosine"], float(cos.min(initial=1.0)))
            if precision == "fp32":
                assert_close(out, ref)
                d = np.abs(ref["boxes"][:, None] - out["boxes"][None]).max(-1)
                match = d.argmin(1)
                worst["box_px"] = max(worst["box_px"], float(d.min(1).max(initial=0)))
                worst["score"] = max(
                    worst["score"],
                    float(np.abs(ref["scores"] - out["scores"][match]).max(initial=0)),
                )
                worst["embedding"] = max(
                    worst["embedding"],
                    float(np.abs(ref["embeddings"] - out["embeddings"][match]).max(initial=0)),
                )
        report[precision] = worst
        assert worst["matched"] >= 0.99 and worst["cosine"] >= 0.999, (precision, worst)
    if os.environ.get("SEQNET_TENSORRT_REPORT"):
        Path(os.environ["SEQNET_TENSORRT_REPORT"]).write_text(json.dumps(report, indent=2))


def test_profile_covers_every_dynamic_input(manifest):
    """Every dynamic input of every engine graph is in the optimisation profile, its opt shape
    the 1080 x 1920 frame's."""
    for flavour in ("engine_fp32", "engine_fp16"):
        for graph, spec in manifest.graphs[flavour].items():
            shapes = engine.profile(spec, manifest.preprocess)
            dynamic = {
                i["name"] for i in spec.inputs
                if not all(isinstance(d, int) and d > 0 for d in i["shape"])
            }  # fmt: skip
            assert set(shapes) == dynamic, (graph, dynamic)
            assert shapes["images"][1] == (1, 3, 1080, 1920)
            height, width = manifest.preprocess.resized_size(1080, 1920)
            assert shapes["resize_y_index"][1] == (2, height)
            assert shapes["resize_x_weight"][1] == (2, width)
            assert math.prod(shapes["images"][2]) == engine.MAX_BATCH * 3 * engine.MAX_SIDE**2
