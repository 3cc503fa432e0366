"""seqnet-export on a tiny model (no ../shared needed): the package, the ONNX Runtime backend
against PyTorch, batching, thresholds as graph inputs, and every bad input as one line with
nothing written.

The tiny model is the demo's shape (ResNet-10) with non-square RoIs (POOL_SIZE [6, 3]) at small
input sizes; the command runs once for the module (--fp16, verification included).
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from seqnet_export import verify
from seqnet_export.cli import main
from seqnet_runtime.boxes import pairwise_iou
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.fs import sha256_file
from seqnet_runtime.onnx_backend import OnnxSession
from seqnet_runtime.package import FORMAT_VERSION
from seqnet_train.config import load_cfg
from tests.tiny import TINY_OPTS, tiny_batch, tiny_model

# the demo's backbone, non-square RoIs; random weights score about 0.4: some pass at 0.3
MODEL_OPTS = ["MODEL.BACKBONE", "resnet10", "MODEL.ROI_HEAD.POOL_SIZE", "[6, 3]"]
MODEL_OPTS += ["MODEL.ROI_HEAD.SCORE_THRESH_TEST", "0.3"]
# more proposals before NMS than a 128 x 192 input has anchors (1440): the padded top-k
MODEL_OPTS += ["MODEL.RPN.PRE_NMS_TOPN_TEST", "2000"]
OPTS = TINY_OPTS + MODEL_OPTS
THREADS = 2


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="module")
def model():
    return tiny_model(*MODEL_OPTS).eval()


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    """A training checkpoint of ours: weights and the config it was trained with."""
    path = tmp_path_factory.mktemp("train") / "epoch_0.pth"
    torch.save({"model": model.state_dict(), "config": load_cfg(None, OPTS).dump()}, path)
    return path


@pytest.fixture(scope="module")
def package(ckpt):
    """``seqnet-export --ckpt CKPT --fp16``: the package beside the checkpoint."""
    torch.set_num_threads(THREADS)
    main(["--ckpt", str(ckpt), "--fp16", "--threads", str(THREADS)])
    return ckpt.with_name("epoch_0_package")


@pytest.fixture(scope="module")
def session(package):
    return OnnxSession(package, threads=THREADS)


def frames(seed, n, height=120, width=160):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(height, width, 3, generator=g).numpy() for _ in range(n)]


def assert_close(ours, ref):
    """ref: PyTorch output (tensors) or another run (arrays); rows matched by position."""
    ref = {k: np.asarray(ref[k]) for k in ("boxes", "scores", "embeddings")}
    assert ours["boxes"].shape == ref["boxes"].shape
    assert ours["embeddings"].shape == ref["embeddings"].shape
    if not len(ref["boxes"]):
        return
    dist = np.abs(ref["boxes"][:, None] - ours["boxes"][None]).max(-1)
    match = dist.argmin(1)
    assert len(set(match.tolist())) == len(match)
    assert dist.min(1).max() <= verify.BOX_TOL
    assert np.abs(ref["scores"] - ours["scores"][match]).max() <= verify.SCORE_TOL
    assert np.abs(ref["embeddings"] - ours["embeddings"][match]).max() <= verify.EMB_TOL


# ------------------------------------------------------------------------ the package --- #
def test_package(package, ckpt):
    names = {p.name for p in package.iterdir()}
    assert names == {
        "manifest.json", "weights.bin", "detect.onnx", "embed.onnx", "detect_fp16.onnx",
        "embed_fp16.onnx",
    }  # fmt: skip
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith(".")]  # no temp left
    umask = os.umask(0)
    os.umask(umask)
    assert package.stat().st_mode & 0o777 == 0o777 & ~umask
    m = json.loads((package / "manifest.json").read_text())
    assert m["format_version"] == FORMAT_VERSION
    assert m["source"] == {"checkpoint": "epoch_0.pth", "sha256": sha256_file(ckpt)}
    pre = m["preprocess"]
    assert (pre["min_size"], pre["max_size"], pre["size_divisible"]) == (128, 192, 32)
    assert pre["pixel_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert m["thresholds"] == {
        "score_thresh": 0.3, "nms_thresh": 0.4, "nms_thresh_refined": 0.5, "rpn_nms_thresh": 0.7
    }  # fmt: skip
    assert (m["detections_per_image"], m["embedding_dim"], m["pool_size"]) == (300, 256, [6, 3])
    assert sorted(m["graphs"]) == ["fp16", "fp32"] and m["opset"] == 18
    detect = m["graphs"]["fp32"]["detect"]
    assert [i["name"] for i in detect["inputs"]] == [
        "images", "context_boxes", "use_context", "score_thresh", "nms_thresh",
        "nms_thresh_refined", "rpn_nms_thresh",
    ]  # fmt: skip
    assert detect["inputs"][0] == {
        "name": "images", "dtype": "float32", "shape": ["batch", 3, "height", "width"]
    }  # fmt: skip
    assert detect["outputs"] == [
        {"name": "boxes", "dtype": "float32", "shape": ["batch", 300, 4]},
        {"name": "scores", "dtype": "float32", "shape": ["batch", 300]},
        {"name": "embeddings", "dtype": "float32", "shape": ["batch", 300, 256]},
        {"name": "count", "dtype": "int64", "shape": ["batch"]},
    ]
    embed = m["graphs"]["fp16"]["embed"]
    assert embed["outputs"] == [
        {"name": "embeddings", "dtype": "float32", "shape": ["batch", "n_boxes", 256]}
    ]
    parity = m["parity"]
    assert parity["passed"] and not parity["forced"]
    assert parity["fp32_vs_torch"]["same_detections"] and parity["fp32_vs_torch"]["candidates"]
    assert "ONNX Runtime CPU" in parity["fp16_vs_fp32"]["ran_on"]
    if importlib.util.find_spec("openvino"):  # verified on every installed backend
        assert parity["fp32_vs_torch_openvino"]["passed"]
        assert parity["fp32_vs_torch_openvino"]["same_detections"]
    assert m["tools"]["onnxruntime"] and m["tools"]["torch"]
    for precision in m["graphs"].values():
        for graph in precision.values():
            onnx.checker.check_model(str(package / graph["file"]), full_check=True)


def test_standard_operators_only(package):
    """Only the default ONNX domain; RoiAlign and Resize-free pre-processing as DEPLOY.md
    asks (attributes written out)."""
    proto = onnx.load(str(package / "detect.onnx"), load_external_data=False)
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    ops = {n.op_type for n in proto.graph.node}
    assert {"NonMaxSuppression", "TopK", "RoiAlign"} <= ops
    for node in proto.graph.node:
        if node.op_type == "RoiAlign":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["coordinate_transformation_mode"] == b"output_half_pixel"
            assert attrs["sampling_ratio"] == 2 and attrs["mode"] == b"avg"
            assert (attrs["output_height"], attrs["output_width"]) == (6, 3)


# ------------------------------------------------------------------ runtime vs PyTorch --- #
def test_matches_pytorch(session, model):
    """Gallery, CBGM and query paths; two image sizes through one graph."""
    images, targets = tiny_batch(n_images=2)
    arrays = [im.permute(1, 2, 0).numpy() for im in images]
    assert arrays[0].shape != arrays[1].shape
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
        assert np.abs(q - ref_q[i].numpy()).max() <= verify.EMB_TOL


def test_uint8_images(session, model):
    image = (frames(3, 1)[0] * 255).astype(np.uint8)
    with torch.no_grad():
        ref = model.predict([torch.from_numpy(image).permute(2, 0, 1).float().div(255)])[0]
    assert_close(session.detect([image])[0], ref)


def test_batch_of_one_size(package, session):
    """Frames of one size in one graph call (B = 3) equal one by one; mixed sizes keep their
    order."""
    batched = OnnxSession(package, threads=THREADS, batch_size=3)
    same = frames(1, 3)
    together = batched.detect(same)
    for image, out in zip(same, together):
        assert_close(out, session.detect([image])[0])
    mixed = [same[0], frames(2, 1, 100, 150)[0], same[1]]
    out = batched.detect(mixed)
    assert_close(out[0], together[0])
    assert_close(out[2], together[1])
    assert_close(out[1], session.detect([mixed[1]])[0])


def test_thresholds_are_graph_inputs(package, session):
    image = frames(1, 1)[0]
    assert len(session.detect([image])[0]["boxes"]) > 0
    empty = OnnxSession(package, threads=THREADS, score_thresh=0.999)
    out = empty.detect([image])[0]
    assert out["boxes"].shape == (0, 4) and out["embeddings"].shape == (0, 256)
    assert out["scores"].shape == (0,)
    box = np.array([10.0, 10.0, 60.0, 110.0], np.float32)
    ctx = empty.detect([image], [box])[0]
    assert ctx["boxes"].shape == (1, 4) and ctx["scores"].tolist() == [1.0]
    assert np.abs(ctx["boxes"][0] - box).max() <= verify.BOX_TOL


def test_fp16_package(package, session):
    fp16 = OnnxSession(package, precision="fp16", threads=THREADS)
    image = frames(1, 1)[0]
    ref, out = session.detect([image])[0], fp16.detect([image])[0]
    iou = pairwise_iou(ref["boxes"], out["boxes"])
    assert (iou.max(1) >= 0.95).mean() >= 0.99


def test_runtime_checks_the_format_version(package, tmp_path):
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SeqNetError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        OnnxSession(tmp_path)
    with pytest.raises(SeqNetError, match="not a model package"):
        OnnxSession(tmp_path / "nothing")
    with pytest.raises(SeqNetError, match="no fp16 graphs|is a file"):
        OnnxSession(package / "weights.bin")


def test_runtime_imports_no_torch():
    code = (
        "import sys, seqnet_runtime.onnx_backend, seqnet_runtime.backend as b; "
        "assert 'onnxruntime' in b.backends() and b.AUTO_ORDER[0] == 'onnxruntime'; "
        "assert 'torch' not in sys.modules and 'seqnet_train' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_preprocessing_is_torchvisions():
    """The in-graph resize rule and bilinear resize against GeneralizedRCNNTransform."""
    import onnxruntime as ort
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from seqnet_export.preprocess import preprocess_model

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    transform = GeneralizedRCNNTransform(900, 1500, mean, std).eval()
    run = ort.InferenceSession(preprocess_model(900, 1500, mean, std).SerializeToString())
    g = torch.Generator().manual_seed(0)
    for h, w in [(240, 320), (300, 200), (1080, 1920), (700, 700), (37, 1000), (1501, 899)]:
        image = torch.rand(3, h, w, generator=g)
        ref, _ = transform([image])
        pixels, resized, original = run.run(None, {"images": image[None].numpy()})
        assert tuple(resized) == tuple(ref.image_sizes[0]) and tuple(original) == (h, w)
        assert pixels.shape == tuple(ref.tensors.shape)
        assert np.abs(pixels - ref.tensors.numpy()).max() <= 1e-6


# ----------------------------------------------------------------------- bad input --- #
def run_cli(args, capsys):
    """(exit status, stderr lines) of ``seqnet-export ARGS`` (sys.exit(message) prints the
    message to stderr and exits with 1)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    code = exit_info.value.code
    lines = capsys.readouterr().err.strip().splitlines()
    if isinstance(code, str):
        return 1, lines + code.splitlines()
    return code, lines


def listing(*folders):
    return {str(p) for f in folders for p in Path(f).rglob("*")}


def unwritable(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o555)
    if not os.access(folder, os.W_OK):  # not root
        return folder
    try:  # root writes anywhere but in /sys
        with tempfile.TemporaryFile(dir="/sys"):
            pass
    except OSError:
        return Path("/sys")
    pytest.skip("no unwritable folder for this user")


@pytest.mark.parametrize(
    "case",
    [
        "missing", "corrupt", "pickle", "released", "misfit", "out_not_package", "unwritable",
        "opset", "engine", "verify_images",
    ],
)  # fmt: skip
def test_bad_input(case, ckpt, tmp_path, capsys):
    """Each fails in one line, before the export, and writes nothing."""
    work = tmp_path / "work"
    work.mkdir()
    path = work / "epoch_0.pth"
    shutil.copy(ckpt, path)
    args = ["--ckpt", path]
    expect = ""
    if case == "missing":
        args, expect = ["--ckpt", work / "nope.pth"], "checkpoint not found"
    elif case == "corrupt":
        path.write_bytes(path.read_bytes()[:1000])
        expect = "cannot read checkpoint"
    elif case == "pickle":
        torch.save({"model": {}, "config": argparse_namespace()}, path)
        expect = "holds Python objects (argparse.Namespace)"
    elif case == "released":
        torch.save({"model": torch.load(ckpt, weights_only=True)["model"]}, path)
        expect = "carries no config"
    elif case == "misfit":
        cfg = work / "other.yaml"
        cfg.write_text("MODEL:\n  BACKBONE: resnet18\n")
        args, expect = args + ["--cfg", cfg], "does not fit the configured model"
    elif case == "out_not_package":
        out = work / "photos"
        out.mkdir()
        (out / "holiday.jpg").write_bytes(b"jpeg")
        args, expect = args + ["--out", out], "exists and is not a model package"
    elif case == "unwritable":
        args, expect = args + ["--out", unwritable(tmp_path) / "pkg"], "cannot write in"
    elif case == "opset":
        args, expect = args + ["--opset", "17"], "opset 18 or newer"
    elif case == "engine":  # no TensorRT, or one that does not build for sm90 (TensorRT-RTX)
        from seqnet_export.engine import missing

        if missing("sm90") is None:
            pytest.skip("full TensorRT on an sm90 GPU is here: --engine builds")
        args, expect = args + ["--engine", "--gpu-arch", "sm90"], "--engine: "
    elif case == "verify_images":
        args, expect = args + ["--verify-images", work / "none"], "no such folder"
    before = listing(work)
    code, lines = run_cli(args, capsys)
    assert code != 0
    errors = [line for line in lines if "seqnet-export" in line]
    assert len(errors) == 1 and errors[0].startswith("seqnet-export: error: "), lines
    assert "\n" not in errors[0] and expect in errors[0], errors[0]
    assert listing(work) == before


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=0.1)  # not a weights-only type: unpickling it runs code


def test_parity_failure_stops_the_export(ckpt, tmp_path, capsys, monkeypatch):
    """Beyond the contract: the figures, one error line and nothing written; with --force the
    package is written and marked as failing parity."""
    monkeypatch.setattr(verify, "BOX_TOL", -1.0)  # nothing can pass
    out = tmp_path / "pkg"
    code, lines = run_cli(["--ckpt", ckpt, "--out", out, "--threads", THREADS], capsys)
    assert code != 0 and "the fp32 graphs vs PyTorch" in lines[-1]
    assert lines[-1].endswith("--force writes the package, marked as failing parity)")
    assert "beyond the parity contract" in lines[-1] and "\n" not in lines[-1]
    assert not out.exists() and not list(tmp_path.iterdir())
    main(["--ckpt", str(ckpt), "--out", str(out), "--threads", str(THREADS), "--force"])
    parity = json.loads((out / "manifest.json").read_text())["parity"]
    assert parity["forced"] and not parity["passed"]
    # an earlier package is replaced; the verification's figures are in the manifest
    assert parity["fp32_vs_torch"]["box_max_px"] <= 1e-3


def test_auto_backend_opens_a_package(package):
    from seqnet_runtime import load

    session = load(package, device="cpu", threads=THREADS)
    assert session.name == "onnxruntime" and session.dim == 256 and len(session.key) == 64


def test_an_earlier_package_is_replaced_whole(tmp_path):
    """The package is staged beside its destination and renamed into place; an earlier package
    there is replaced, a failure leaves it as it was."""
    from seqnet_export.package import check_destination
    from seqnet_runtime.fs import atomic_dir as staged
    from seqnet_runtime.package import FORMAT

    out = tmp_path / "pkg"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": FORMAT, "format_version": 0}))
    (out / "old.onnx").write_text("old")
    check_destination(out)
    with pytest.raises(RuntimeError), staged(out) as tmp:
        (tmp / "new.onnx").write_text("new")
        raise RuntimeError("export failed")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "old.onnx"]
    with staged(out) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no temporary folder left


def _benchmark(name):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fmt, dataset", [("cuhk-sysu", "CUHK-SYSU"), ("prw", "PRW")])
def test_eval_parity_through_the_package(fmt, dataset, ckpt, package, tmp_path):
    """benchmarks/eval_parity.py: ``seqnet eval``'s protocols (CBGM on: the context mode) on a
    small synthetic benchmark, through PyTorch and through the package, every metric within
    the fp32 contract and every detection matched within the export's tolerances."""
    from seqnet_train.data.synth import generate

    root = generate(fmt, tmp_path / "data", train_images=2, test_images=8, train_ids=2,
                    test_ids=3, size=(120, 160))  # fmt: skip
    cfg = load_cfg(None, [*OPTS, "INPUT.DATASET", dataset, "INPUT.DATA_ROOT", str(root),
                          "OUTPUT_DIR", str(tmp_path / "out"), "INPUT.NUM_WORKERS_TEST", "0",
                          "EVAL_USE_CBGM", "True", "EVAL_GALLERY_SIZES", "[-1]"])  # fmt: skip
    parity = _benchmark("eval_parity")
    result = parity.compare(cfg, ckpt, package, out=tmp_path / "parity")
    assert result["within_contract"] and result["contract_points"] == 0.1
    keys = set(result["metrics"])
    assert {"det/ap", "det/recall"} <= keys and any(k.endswith("/mAP") for k in keys), keys
    assert all(abs(row["delta_points"]) <= 0.1 for row in result["metrics"].values())
    for split, d in result["detections"].items():
        assert d["matched"] > 0 and d["unmatched"] == 0, (split, d)
        assert d["max_box_diff_px"] <= 1e-3 and d["max_embedding_diff"] <= 1e-4, (split, d)
    assert "largest metric delta" in parity.table(result)


def test_fps_rows_and_a_broken_row(ckpt, package, tmp_path, monkeypatch):
    """benchmarks/fps.py on the tiny checkpoint and its package: one row after the other, each
    timing ``--repeats`` passes per batch; the fast copy and the fp32 graph match the baseline;
    a row that breaks is listed under "failed" (exit status 1) and the others still run."""
    fps = _benchmark("fps")
    passes = []  # (session, batch) of each timed pass, in order
    timed = fps.time_pass
    monkeypatch.setattr(fps, "time_pass", lambda s, f, b: passes.append((s, b)) or timed(s, f, b))
    opened = fps.load

    def load(package, backend, precision, **kw):
        if precision == "fp16":
            raise RuntimeError("broken on purpose")
        return opened(package, backend, precision=precision, **kw)

    monkeypatch.setattr(fps, "load", load)
    out = tmp_path / "fps.json"
    with pytest.raises(SystemExit, match="rows failed: onnxruntime fp16"):
        fps.main(["--ckpt", str(ckpt), "--model", str(package), "--sizes", "96x128",
                  "--frames", "2", "--eager-frames", "1", "--batches", "1", "2",
                  "--repeats", "2", "--threads", str(THREADS), "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["failed"] == {"onnxruntime fp16": "RuntimeError: broken on purpose"}
    assert "CUDA" in result["skipped"]["torch fast fp16 graphs"]
    rows = result["rows"]
    assert {fps.BASELINE, "torch fast fp32", "onnxruntime fp32"} <= set(rows)
    for name, row in rows.items():
        per = row["sizes"]["96x128"]
        assert per["batch1"]["median_s"] > 0 and per["speedup_vs_torch_eager_fp32"] > 0
        assert ("batch2" in per) == (name != fps.BASELINE), name
        if "fp32" in name:  # at parity; bf16 is not
            assert per["accuracy_vs_eager"]["unmatched_detections"] == 0, name
            assert per["accuracy_vs_eager"]["max_box_diff_px"] <= 1e-3, name
    sessions = list(dict.fromkeys(s for s, _ in passes))
    assert len(sessions) == len(rows)
    batches = {s: [1] if s is sessions[0] else [1, 2] for s in sessions}
    assert passes == [(s, b) for s in sessions for b in batches[s] for _ in range(2)]
