"""Reduced precision on the CPU (issue 31): the int8 graph flavour (``seqnet-export --int8``)
and OpenVINO's bf16 trunk, on the tiny model of test_export.

The int8 graphs quantize exactly the convolutional trunk: a test lists every node that reads a
dequantized value and fails on anything else (box arithmetic, RoIAlign, top-k, NMS, norms,
the linear heads, the RPN's predictors); ONNX Runtime fuses every trunk convolution into an int8 one
and OpenVINO computes them in int8. bf16 runs the fp32 graphs with only that trunk in bf16,
and is refused in one line where the CPU has no native bf16. Bad input is one line each.
The eval parity of both on a trained model is the slow test at the end.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from seqnet_export import quantize
from seqnet_runtime import load
from seqnet_runtime import package as package_format
from seqnet_runtime.errors import SeqNetError
from seqnet_train.config import load_cfg
from tests.test_export import MODEL_OPTS, OPTS, listing, run_cli
from tests.tiny import tiny_model

THREADS = 2
TRUNK_OPS = {"Conv", "Add", "Relu", "MaxPool"}


def has_openvino():
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "epoch_0.pth"
    model = tiny_model(*MODEL_OPTS).eval()
    torch.save({"model": model.state_dict(), "config": load_cfg(None, OPTS).dump()}, path)
    return path


@pytest.fixture(scope="module")
def package(ckpt):
    """``seqnet-export --int8 --calib-frames 2`` (--force: random weights make no promise
    about int8 against fp32; the figures are checked below)."""
    from seqnet_export.cli import main

    torch.set_num_threads(THREADS)
    main(["--ckpt", str(ckpt), "--int8", "--calib-frames", "2", "--threads", str(THREADS),
          "--force"])  # fmt: skip
    return ckpt.with_name("epoch_0_package")


def graphs(package, flavour):
    manifest = package_format.read(package)
    return {
        name: onnx.load(str(package / spec.file), load_external_data=False)
        for name, spec in manifest.graphs[flavour].items()
    }


# -------------------------------------------------------------------- the package --- #
def test_int8_flavour_in_the_package(package):
    manifest = package_format.read(package)
    assert set(manifest.graphs) == {"fp32", "int8"}
    assert {g.file for g in manifest.graphs["int8"].values()} == {
        "detect_int8.onnx",
        "embed_int8.onnx",
    }
    assert manifest.graphs["int8"]["detect"].inputs == manifest.graphs["fp32"]["detect"].inputs
    files = sorted(p.name for p in package.iterdir())
    assert files == ["detect.onnx", "detect_int8.onnx", "embed.onnx", "embed_int8.onnx",
                     "manifest.json", "weights.bin"]  # fmt: skip
    for proto in graphs(package, "int8").values():  # large tensors in the one weights.bin
        places = {
            {e.key: e.value for e in t.external_data}["location"]
            for t in proto.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL
        }
        assert places == {"weights.bin"}
    record = manifest.parity["int8_vs_fp32"]
    assert record["calibration"]["source"] == "synthetic scenes"
    assert record["calibration"]["frames"] == 2
    backends = {"onnxruntime", "openvino"} if has_openvino() else {"onnxruntime"}
    assert set(record["backends"]) == backends
    for figures in record["backends"].values():
        assert {"matched_fraction", "cosine_median", "cosine_min", "passed"} <= set(figures)
    assert record["contract"]["iou_at_least"] == 0.9


def test_quantized_nodes_are_exactly_the_trunk(package):
    """Every node reading a dequantized value is a trunk convolution or what joins them; every
    trunk convolution is quantized, nothing else (the RPN's predictors, boxes, RoIAlign, TopK,
    NMS, norms, the linear heads stay fp32); weights int8 per channel and activations int8 with
    zero point 0 (TensorRT's explicit quantization takes only that)."""
    fp32, int8 = graphs(package, "fp32"), graphs(package, "int8")
    for name in ("detect", "embed"):
        trunk = quantize.trunk_convs(fp32[name])
        proto = int8[name]
        fed = quantize.quantized_nodes(proto)
        assert set(fed) <= TRUNK_OPS, fed
        assert not set(fed) & set(quantize.FORBIDDEN), fed
        assert sorted(fed["Conv"]) == sorted(trunk), name
        region = quantize.trunk_nodes(proto, set(trunk))
        assert {n for names in fed.values() for n in names} <= region
        # the trunk: the backbone, the RPN head's shared 3x3 and both RoI heads' res5, never
        # the RPN's predictors of objectness and box deltas
        weights = {n.name: n.input[1] for n in fp32[name].graph.node if n.op_type == "Conv"}
        assert all(w.startswith(("backbone.", "rpn_head.conv.", "box_head.", "reid_head."))
                   for n, w in weights.items() if n in trunk)  # fmt: skip
        predictors = ("rpn_head.cls_logits.", "rpn_head.bbox_pred.")
        assert all(w.startswith(predictors) for n, w in weights.items() if n not in trunk)
        assert any(w.startswith("reid_head.") for n, w in weights.items() if n in trunk)
        if name == "detect":
            assert any(w.startswith("box_head.") for n, w in weights.items() if n in trunk)
            assert sum(w.startswith("rpn_head.conv.") for n, w in weights.items() if n in trunk)
            assert sum(w.startswith(predictors) for w in weights.values()) == 2
        inits = {t.name: t for t in proto.graph.initializer}
        for node in proto.graph.node:
            if node.op_type not in quantize.QDQ or node.input[2] not in inits:
                continue
            zero = inits[node.input[2]]
            if zero.data_type == onnx.TensorProto.INT32:  # a bias
                continue
            assert zero.data_type == onnx.TensorProto.INT8, node.name
            assert not onnx.numpy_helper.to_array(zero).any(), node.name


def test_int8_on_onnxruntime_is_int8(package, tmp_path):
    """ONNX Runtime (with the runner's options) fuses every trunk convolution into QLinearConv
    (on x86 it used to keep the two convolutions reading one quantized tensor, a block's conv1
    and downsample, in fp32), and the int8 session detects and embeds."""
    import onnxruntime as ort

    from seqnet_runtime.onnx_backend import session_options

    for name in ("detect", "embed"):
        options = session_options(THREADS)
        options.optimized_model_filepath = str(tmp_path / f"{name}.onnx")
        ort.InferenceSession(str(package / f"{name}_int8.onnx"), options)
        optimized = onnx.load(str(tmp_path / f"{name}.onnx"), load_external_data=False)
        ops = [n.op_type for n in optimized.graph.node]
        trunk = quantize.trunk_convs(graphs(package, "fp32")[name])
        assert ops.count("QLinearConv") == len(trunk), name
        assert ops.count("Conv") == (2 if name == "detect" else 0)  # the RPN's predictors
    session = load(package, "onnxruntime", precision="int8", threads=THREADS)
    assert session.flavour == "int8"
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    (found,) = session.detect([image])
    assert found["embeddings"].shape == (len(found["boxes"]), 256)
    embedded = session.embed(image, np.array([[10, 10, 60, 100]], np.float32))
    assert embedded.shape == (1, 256) and abs(np.linalg.norm(embedded) - 1) < 1e-3


@pytest.mark.skipif(not has_openvino(), reason="openvino is not installed")
def test_int8_on_openvino_is_int8(package):
    """OpenVINO reads the same QDQ file and runs its trunk convolutions in int8."""
    session = load(package, "openvino", precision="int8", threads=THREADS)
    runtime = session._graphs["detect"].model.get_runtime_model()
    precisions = {}
    for op in runtime.get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            kind = info["runtimePrecision"].astype(str)
            precisions[kind] = precisions.get(kind, 0) + 1
    trunk = quantize.trunk_convs(graphs(package, "fp32")["detect"])
    assert sum(v for k, v in precisions.items() if k in ("u8", "i8")) == len(trunk), precisions
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    (found,) = session.detect([image])
    assert found["boxes"].shape[1] == 4


# ------------------------------------------------------------- calibration sources --- #
def test_calibration_sources(tmp_path):
    from PIL import Image

    from seqnet_runtime.video import VideoWriter

    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), (40 * i, 0, 0)).save(folder / f"{i}.png")
    frames, record = quantize.calibration_frames(calib=folder, frames=2)
    assert len(frames) == 2 and frames[0].shape == (48, 64, 3)
    assert record == {"source": str(folder), "frames": 2}
    writer = VideoWriter(tmp_path / "v.mp4", 10)
    for i in range(12):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.close()
    frames, record = quantize.calibration_frames(calib_video=tmp_path / "v.mp4", frames=3)
    assert len(frames) == 3 and record["frames"] == 3
    assert frames[0].mean() < frames[1].mean() < frames[2].mean()  # spread over the video
    frames, record = quantize.calibration_frames(frames=3)
    assert len(frames) == 3 and record["source"] == "synthetic scenes"


@pytest.mark.parametrize(
    "case", ["empty", "missing", "file", "unreadable", "video", "both", "without_int8"]
)
def test_bad_calibration_input(case, ckpt, tmp_path, capsys):
    """Each fails in one line, before the export, and writes nothing."""
    work = tmp_path / "work"
    work.mkdir()
    calib = work / "calib"
    calib.mkdir()
    args = ["--ckpt", ckpt, "--out", work / "pkg", "--int8"]
    if case == "empty":
        args, expect = args + ["--calib", calib], "no images in it"
    elif case == "missing":
        args, expect = args + ["--calib", work / "nope"], "no such folder"
    elif case == "file":
        (work / "a.txt").write_text("x")
        args, expect = args + ["--calib", work / "a.txt"], "no such folder"
    elif case == "unreadable":
        (calib / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
        args, expect = args + ["--calib", calib], "cannot read image"
    elif case == "video":
        (work / "clip.mp4").write_bytes(b"not a video at all")
        args, expect = args + ["--calib-video", work / "clip.mp4"], "cannot decode video"
    elif case == "both":
        args, expect = args + ["--calib", calib, "--calib-video", work / "v.mp4"], "give one"
    else:
        args = ["--ckpt", ckpt, "--out", work / "pkg", "--calib", calib]
        expect = "go with --int8"
    before = listing(work)
    code, lines = run_cli(args, capsys)
    assert code != 0
    errors = [line for line in lines if "seqnet-export" in line]
    assert len(errors) == 1 and errors[0].startswith("seqnet-export: error: "), lines
    assert expect in errors[0], errors[0]
    assert listing(work) == before


# --------------------------------------------------------------------------- bf16 --- #
def test_bf16_refused_without_native_bf16(package, monkeypatch):
    """On a CPU without AMX-BF16 or AVX-512 BF16: one line saying which features are missing
    (before any graph is read)."""
    if not has_openvino():
        pytest.skip("openvino is not installed")
    from seqnet_runtime import openvino_backend

    monkeypatch.setattr(openvino_backend, "cpu_features", lambda: ("avx512f", "avx512_vnni"))
    with pytest.raises(SeqNetError) as e:
        load(package, "openvino", precision="bf16")
    assert "\n" not in str(e.value)
    assert "AMX-BF16" in str(e.value) and "AVX-512 BF16" in str(e.value)


def test_bf16_elsewhere_than_openvino_is_one_line(package):
    with pytest.raises(SeqNetError, match="bf16 runs on the openvino backend only") as e:
        load(package, "onnxruntime", precision="bf16")
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not has_openvino(), reason="openvino is not installed")
def test_bf16_is_the_trunk_only(package):
    """The bf16 ops of the model OpenVINO compiles are the trunk's convolutions and what joins
    them; RoIAlign, top-k, NMS, the linear heads, the pre-processing and the outputs are fp32."""
    import openvino as ov

    from seqnet_runtime.openvino_backend import bf16_trunk, openvino_core, trunk

    core = openvino_core()
    for name, proto in graphs(package, "fp32").items():
        model = core.read_model(str(package / f"{name}.onnx"))
        region = trunk(model)
        kinds = {op.get_type_name() for op in model.get_ordered_ops()
                 if op.get_friendly_name() in region}  # fmt: skip
        assert kinds <= {"Convolution", "Add", "Relu", "MaxPool"}, kinds
        convs = [
            op
            for op in model.get_ordered_ops()
            if op.get_friendly_name() in region and op.get_type_name() == "Convolution"
        ]
        assert len(convs) == len(quantize.trunk_convs(proto))
        bf16_trunk(model)
        for op in model.get_ordered_ops():
            if op.get_type_name() in ("Constant", "Convert", "Parameter"):
                continue
            bf16 = any(o.get_element_type() == ov.Type.bf16 for o in op.outputs())
            assert bf16 == (op.get_friendly_name() in region), op.get_friendly_name()
        for output in model.outputs:
            assert output.get_element_type() != ov.Type.bf16


@pytest.mark.skipif(not has_openvino(), reason="openvino is not installed")
def test_bf16_session(package, monkeypatch):
    """The bf16 session runs (natively where the CPU can; elsewhere OpenVINO emulates, which
    this test allows by pretending) and stays near fp32; its key is its own."""
    from seqnet_runtime import openvino_backend

    monkeypatch.setattr(openvino_backend, "cpu_features", lambda: ("avx512_bf16",))
    bf16 = load(package, "openvino", precision="bf16", threads=THREADS)
    fp32 = load(package, "openvino", precision="fp32", threads=THREADS)
    assert bf16.precision == "bf16" and bf16.flavour == "fp32" and bf16.key != fp32.key
    image = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    box = np.array([[10, 10, 60, 100]], np.float32)
    a, b = bf16.embed(image, box), fp32.embed(image, box)
    assert float((a * b).sum()) > 0.98


# --------------------------------------------------------- openvino not installed --- #
def test_openvino_missing_is_one_line(package, monkeypatch):
    """``--backend openvino`` where OpenVINO is not installed (its import fails)."""
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.delitem(sys.modules, "seqnet_runtime.openvino_backend", raising=False)
    with pytest.raises(SeqNetError) as e:
        load(package, "openvino", precision="int8")
    assert "\n" not in str(e.value)
    assert "openvino" in str(e.value) and "not installed" in str(e.value)


def test_eval_parity_openvino_missing(package, monkeypatch, tmp_path):
    """benchmarks/eval_parity.py --backend openvino without OpenVINO: one line, exit status."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import eval_parity

    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.delitem(sys.modules, "seqnet_runtime.openvino_backend", raising=False)
    monkeypatch.setattr(eval_parity, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(package_format.read(package).config)
    with pytest.raises(SystemExit) as e:
        eval_parity.main(["--cfg", str(cfg), "--ckpt", "x.pth", "--model", str(package),
                          "--backend", "openvino", "--precision", "int8"])  # fmt: skip
    message = str(e.value.code)
    assert message.startswith("eval_parity: error: ") and "\n" not in message
    assert "openvino" in message and "not installed" in message


# ------------------------------------------------------------------- eval parity --- #
@pytest.mark.slow
def test_eval_parity_of_int8_and_bf16_on_the_demo_model(tmp_path):
    """benchmarks/eval_parity.py on ``make demo``'s trained model and its package (which the
    demo exports with --int8): int8 on ONNX Runtime and OpenVINO, bf16 on OpenVINO where the CPU
    computes bf16 natively (else its one-line refusal), each within 1.0 point of the package's
    fp32 on the same backend on every protocol, most detections matched at IoU >= 0.9."""
    import os

    from seqnet_runtime.openvino_backend import check_bf16

    demo = Path(os.environ.get("SEQNET_DEMO_OUTPUT", Path(__file__).parents[1] / "demo_output"))
    ckpts = sorted((demo / "train").glob("epoch_*.pth"), key=lambda p: int(p.stem[6:]))
    package = demo / "model"
    if not ckpts or not (package / "manifest.json").is_file():
        pytest.skip(f"no trained demo model in {demo}: run make demo (or set SEQNET_DEMO_OUTPUT)")
    if "int8" not in package_format.read(package).graphs:
        pytest.skip(f"{package} has no int8 graphs: run make demo again")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import eval_parity

    cfg = load_cfg(demo / "train" / "config.yaml", ["INPUT.DATA_ROOT", str(demo / "data"),
                   "OUTPUT_DIR", str(tmp_path), "INPUT.NUM_WORKERS_TEST", "0"])  # fmt: skip
    combos = [("onnxruntime", "int8")]
    if has_openvino():
        combos.append(("openvino", "int8"))
        try:
            check_bf16()
            combos.append(("openvino", "bf16"))
        except SeqNetError as e:
            assert "AMX-BF16" in str(e)  # refused, in one line: this CPU has no native bf16
    results = eval_parity.compare_all(cfg, ckpts[-1], package, combos, tmp_path)
    print(eval_parity.summary(results))
    for result in results:
        assert result["contract_points"] == 1.0
        assert result["within_contract"], eval_parity.table(result)
        assert {"det/ap", "det/recall"} <= set(result["metrics"])
        assert any(k.endswith("/mAP") for k in result["metrics"])
        assert result["matched_at_iou"]["gallery"]["matched_fraction"] >= 0.9
