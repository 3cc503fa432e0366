"""OpenVINO: the package graphs compute on it what they compute on ONNX Runtime, and its
graph runner (``seqnet_runtime.openvino_backend``).

OpenVINO's CPU plugin loads graphs it then computes differently, with no error: it runs float64
in float32, int64 in int32, integer Div/Mod through a float32 division, and (2026.4) fused
``Div(MIN, ReduceMin(hw))`` with its operands swapped. The size rule is written so that none
of it matters (seqnet_export.preprocess); these tests hold it to the float64 rule.
"""

import gc
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import openvino as ov
except ImportError:
    pytest.skip("openvino is not installed (pip install openvino)", allow_module_level=True)

import onnxruntime as ort
import torch

from seqnet_export.preprocess import preprocess_model, resized_size, size_model
from seqnet_runtime.cpu import FEATURES, cpu_features
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.openvino_backend import OpenVinoRunner, openvino_core

THREADS = 2
BOX_TOL, SCORE_TOL, EMB_TOL = 1e-3, 1e-4, 1e-4  # DEPLOY.md's fp32 contract
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# float32 arithmetic gets 201 x 268 wrong at 900/1500 (900 x 1200, not 899 x 1200) and 97 x 101
# at 128/192 (127 x 133, not 128 x 133); the swapped Div got 480 x 640 wrong
SIZES = [(201, 268), (480, 640), (1080, 1920), (600, 400), (32, 4096), (4096, 32), (1, 1),
         (800, 1333), (1333, 800), (97, 101), (309, 68), (5592, 17), (1, 5592)]  # fmt: skip
RULES = [(900, 1500), (800, 1333), (128, 192)]
DETECT_OUTPUTS = ["boxes", "scores", "embeddings", "count"]


def compile_cpu(model):
    core = openvino_core()  # one per process (why: its docstring)
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": THREADS}
    return core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", config)


# ------------------------------------------------------------------------- size rule --- #
@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r[0]}-{r[1]}")
def test_size_rule(rule):
    """The size-rule nodes alone (hw -> new hw) on OpenVINO and ONNX Runtime against the
    float64 rule: the listed sizes and 1000 random ones up to 4096 px."""
    model = size_model(*rule)
    openvino = compile_cpu(model).create_infer_request()
    onnxruntime = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(0)
    sizes = SIZES + [tuple(int(x) for x in hw) for hw in rng.integers(1, 4097, (1000, 2))]
    for h, w in sizes:
        hw = np.array([h, w], np.int64)
        want = resized_size(h, w, *rule)
        openvino.infer({"hw": hw})
        assert tuple(openvino.get_output_tensor(0).data.tolist()) == want, (h, w)
        assert tuple(onnxruntime.run(None, {"hw": hw})[0].tolist()) == want, (h, w)


def test_preprocessing():
    """The whole pre-processing graph (the swapped Div showed only in it): OpenVINO's
    resized_hw and pixels' shape are the rule's; its pixels within 1e-3 of ONNX Runtime's
    (it computes the bilinear source positions, float64 in the graph, in float32)."""
    model = preprocess_model(900, 1500, MEAN, STD)
    openvino = compile_cpu(model)
    onnxruntime = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(0)
    for h, w in SIZES[:9]:
        image = rng.random((1, 3, h, w), dtype=np.float32)
        pixels, resized, original = openvino({"images": image}).values()
        want = resized_size(h, w, 900, 1500)
        assert tuple(resized.astype(int).tolist()) == want, (h, w)
        assert tuple(original.astype(int).tolist()) == (h, w)
        assert pixels.shape == (1, 3, -(-want[0] // 32) * 32, -(-want[1] // 32) * 32)
        reference = onnxruntime.run(["pixels"], {"images": image})[0]
        assert np.abs(pixels - reference).max() <= 1e-3, (h, w)


# ---------------------------------------------------------------- the tiny package --- #
@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The tiny model's fp32 graphs (as test_export's: 128/192, non-square RoIs), unverified."""
    from seqnet_export.run import write_graphs
    from tests.test_export import MODEL_OPTS
    from tests.tiny import tiny_model

    torch.set_num_threads(THREADS)
    folder = tmp_path_factory.mktemp("openvino_package")
    write_graphs(folder, tiny_model(*MODEL_OPTS).eval())
    return folder


def onnxruntime_session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def detect_feeds(images, context=None):
    n = len(images)
    return {
        "images": images,
        "context_boxes": np.zeros((n, 4), np.float32) if context is None else context,
        "use_context": np.full(n, context is not None, np.float32),
        "score_thresh": np.array(0.3, np.float32),
        "nms_thresh": np.array(0.4, np.float32),
        "nms_thresh_refined": np.array(0.5, np.float32),
        "rpn_nms_thresh": np.array(0.7, np.float32),
    }


def images(seed, n, h, w):
    """Noise with a flat block (edges for the resize and the detector)."""
    x = np.random.default_rng(seed).random((n, 3, h, w), dtype=np.float32)
    x[:, :, h // 4 : h // 2, w // 4 : w // 2] = 0.8
    return x


@pytest.mark.parametrize(
    "h, w, n, context",
    [(120, 160, 2, False), (97, 101, 1, False), (201, 268, 1, True), (300, 97, 1, False)],
)
def test_detect_matches_onnxruntime(package, h, w, n, context):
    """detect.onnx through OpenVinoRunner and through ONNX Runtime: the same count; boxes
    within 1e-3 px, scores and embeddings within 1e-4 (rows matched by their boxes)."""
    box = np.tile(np.array([[10, 12, 60, 90]], np.float32), (n, 1)) if context else None
    feeds = detect_feeds(images(h + w, n, h, w), box)
    ours = OpenVinoRunner(package / "detect.onnx", threads=THREADS).run(DETECT_OUTPUTS, feeds)
    ref = onnxruntime_session(package / "detect.onnx").run(DETECT_OUTPUTS, feeds)
    assert [a.dtype for a in ours] == [a.dtype for a in ref]
    assert [a.shape for a in ours] == [a.shape for a in ref]
    assert ours[3].tolist() == ref[3].tolist() and ref[3].min() > 0
    for j, k in enumerate(ref[3].tolist()):
        boxes, scores, embeddings = (a[j, :k] for a in ours[:3])
        dist = np.abs(ref[0][j, :k, None] - boxes[None]).max(-1)
        match = dist.argmin(1)
        assert len(set(match.tolist())) == k
        assert dist.min(1).max() <= BOX_TOL
        assert np.abs(ref[1][j, :k] - scores[match]).max() <= SCORE_TOL
        assert np.abs(ref[2][j, :k] - embeddings[match]).max() <= EMB_TOL


def test_embed_matches_onnxruntime(package):
    for h, w in [(120, 160), (97, 101)]:
        boxes = np.array([[[10, 10, 60, 100], [30, 5, 90, 110.5], [0, 0, w, h]]], np.float32)
        feeds = {"images": images(h, 1, h, w), "boxes": boxes}
        (ours,) = OpenVinoRunner(package / "embed.onnx").run(["embeddings"], feeds)
        (ref,) = onnxruntime_session(package / "embed.onnx").run(["embeddings"], feeds)
        assert ours.shape == ref.shape == (1, 3, 256)
        assert np.abs(ours - ref).max() <= EMB_TOL


def test_runner_settings_and_errors(package, tmp_path):
    runner = OpenVinoRunner(package / "embed.onnx", threads=1)
    assert runner.name == "openvino" and runner.devices == ("cpu",)
    assert runner.model.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert runner.model.get_property("INFERENCE_NUM_THREADS") == 1
    with pytest.raises(SeqNetError, match="no such graph file"):
        OpenVinoRunner(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07not a model")
    with pytest.raises(SeqNetError, match="OpenVINO cannot load it") as e:
        OpenVinoRunner(tmp_path / "bad.onnx")
    assert "\n" not in str(e.value)
    with pytest.raises(SeqNetError, match="runs on cpu"):
        OpenVinoRunner(package / "embed.onnx", device="cuda")


def test_cpu_features(tmp_path):
    assert set(cpu_features()) <= set(FEATURES)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_vnni amx_tile amx_bf16\n")
    assert cpu_features(info) == ("amx_bf16", "amx_tile", "avx512_vnni", "avx512f")
    assert cpu_features(info, names=("avx2", "avx512f", "fpu")) == ("avx512f", "fpu")
    assert cpu_features(tmp_path / "none") == ()


def _signal_stack_is_mapped():
    """Whether this thread's alternate signal stack, if it has one, lies in mapped memory."""
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    stack = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    if stack.flags & 2:  # SS_DISABLE: none
        return True
    spans = (
        line.split()[0].split("-")
        for line in Path("/proc/self/maps").read_text().split("\n")
        if line
    )
    return any(int(a, 16) <= stack.sp < int(b, 16) for a, b in spans)


@pytest.mark.skipif(sys.platform != "linux", reason="sigaltstack and /proc/self/maps are Linux's")
def test_runners_leave_a_valid_signal_stack(package):
    """OpenVINO's CPU plugin swaps the compiling thread's alternate signal stack and puts the
    previous one back when it is destroyed: runners of one Core per graph, freed in the order
    they were made, left the thread on a freed stack, and the next SIGCHLD crashed pytest."""
    for _ in range(2):
        first = OpenVinoRunner(package / "detect.onnx", threads=THREADS)
        second = OpenVinoRunner(package / "embed.onnx", threads=THREADS)
        del first, second
        gc.collect()
        assert _signal_stack_is_mapped()
