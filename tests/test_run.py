"""``seqnet-run`` end to end on the PyTorch backend with a tiny untrained model: a video, a
folder and one image; several queries; the index reused; Ctrl-C; and bad input."""

import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from seqnet_runtime import backend as runtime_backend
from seqnet_runtime import run as run_module
from seqnet_runtime.cli import main
from seqnet_runtime.index import load_index
from seqnet_train.config import load_cfg
from seqnet_train.modeling.seqnet import SeqNet
from tests.test_apps_search import make_workspace

av = pytest.importorskip("av", reason="PyAV is not installed (pip install av)")

FRAMES = 6


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The search tests' workspace, plus a checkpoint carrying its config, a video of the
    synthetic scenes, and query crops."""
    base = make_workspace(tmp_path_factory.mktemp("run"))
    cfg = load_cfg(base / "config.yaml")
    state = torch.load(base / "tiny.pth", weights_only=True)
    torch.save({"model": state, "config": cfg.dump()}, base / "model.pth")
    images = base / "synth" / "Image" / "SSM"
    with av.open(str(base / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for i in range(1, FRAMES + 1):
            im = Image.open(images / f"s{i}.jpg").convert("RGB")
            for packet in stream.encode(av.VideoFrame.from_image(im)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with Image.open(images / "s6.jpg") as im:
        im.crop((20, 10, 60, 90)).save(base / "alice.jpg")
        im.crop((64, 8, 100, 88)).save(base / "bob.jpg")
        im.crop((0, 0, 10, 40)).save(base / "tiny.jpg")
    return base


@pytest.fixture
def predicted(monkeypatch):
    """Images each ``SeqNet.predict`` call received."""
    calls = []
    predict = SeqNet.predict

    def counting(self, images, *args, **kwargs):
        calls.append(len(images))
        return predict(self, images, *args, **kwargs)

    monkeypatch.setattr(SeqNet, "predict", counting)
    return calls


def seqnet_run(ws, input, out, *extra, queries=("alice.jpg", "bob.jpg")):
    argv = [str(input), "--model", str(ws / "model.pth"), "--backend", "torch", "--out", str(out)]
    for q in queries:
        argv += ["--query", str(ws / q)]
    return CliRunner().invoke(main, argv + list(extra))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


def test_video_with_two_queries(ws, tmp_path, predicted):
    out = tmp_path / "out"
    result = seqnet_run(ws, ws / "clip.mp4", out, "--batch", "4", "--topk", "3")
    assert result.exit_code == 0, result.output
    assert predicted == [4, 2]  # batches of up to 4 frames
    report = json.loads((out / "matches.json").read_text())
    assert report["kind"] == "video" and report["frames"] == FRAMES and not report["partial"]
    assert [q["name"] for q in report["queries"]] == ["alice", "bob"]
    (unit,) = load_index(out / "index").values()
    stored = unit.arrays()
    embeddings, boxes = stored["embeddings"], stored["boxes"]
    frames = np.repeat(stored["frames"], stored["counts"])
    for q in report["queries"]:
        emb = np.array(q["embedding"], np.float32)
        sims = embeddings @ emb
        assert len(q["hits"]) == 3
        for hit, j in zip(q["hits"], np.argsort(-sims, kind="stable")[:3], strict=True):
            assert hit["frame"] == frames[j] and hit["time"] == pytest.approx(frames[j] / 5)
            assert hit["similarity"] == pytest.approx(sims[j], abs=1e-4)
            assert hit["box"] == pytest.approx(boxes[j], abs=0.051)
        assert [f[0] for f in q["per_frame"]] == list(range(FRAMES))
        for frame, _, best in q["per_frame"]:
            assert best == pytest.approx(sims[frames == frame].max(), abs=1e-4)
    with av.open(str(out / "annotated.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == FRAMES and decoded[0].shape == (96, 128, 3)
    with Image.open(out / "timeline.png") as im:
        assert im.format == "PNG" and im.width > im.height
    parser = _Links()
    parser.feed((out / "index.html").read_text())
    assert "annotated.mp4" in parser.links and "timeline.png" in parser.links
    for link in parser.links:  # relative, so the page opens from disk
        assert (out / link).is_file(), link


def test_second_run_reuses_the_index(ws, tmp_path, predicted):
    out = tmp_path / "out"
    assert seqnet_run(ws, ws / "clip.mp4", out, "--no-video").exit_code == 0
    first = json.loads((out / "matches.json").read_text())
    predicted.clear()
    assert seqnet_run(ws, ws / "clip.mp4", out, queries=["bob.jpg"]).exit_code == 0
    assert predicted == []  # detected nothing again, even to draw the video
    again = json.loads((out / "matches.json").read_text())

    def found(hits):
        return [{k: h[k] for k in ("frame", "box", "similarity", "det_score")} for h in hits]

    assert found(again["queries"][0]["hits"]) == found(first["queries"][1]["hits"])
    assert (out / "annotated.mp4").is_file()
    assert seqnet_run(ws, ws / "clip.mp4", out, "--every", "2").exit_code == 0
    assert sum(predicted) == 3  # another sampling: detected again


def test_folder_and_single_image(ws, tmp_path):
    out = tmp_path / "folder"
    assert seqnet_run(ws, ws / "gallery", out, "--topk", "2").exit_code == 0
    report = json.loads((out / "matches.json").read_text())
    assert report["kind"] == "images" and report["frames"] == 3
    names = sorted(p.name for p in (ws / "gallery").iterdir())
    for q in report["queries"]:
        assert [f[0] for f in q["per_frame"]] == [0, 1, 2]
        for hit in q["hits"]:
            assert hit["image"].rsplit("/", 1)[1] == names[hit["frame"]]
    one = tmp_path / "one"
    image = ws / "gallery" / "s2.jpg"
    assert seqnet_run(ws, image, one, queries=["alice.jpg"]).exit_code == 0
    report = json.loads((one / "matches.json").read_text())
    assert report["frames"] == 1 and report["queries"][0]["hits"][0]["image"] == str(image)


def test_query_box_in_a_full_image(ws, tmp_path):
    out = tmp_path / "out"
    image = ws / "synth" / "Image" / "SSM" / "s6.jpg"
    argv = [str(ws / "gallery"), "--model", str(ws / "model.pth"), "--backend", "torch",
            "--query", str(image), "--box", "20", "10", "60", "90", "--out", str(out)]  # fmt: skip
    assert CliRunner().invoke(main, argv).exit_code == 0
    crop = json.loads((out / "matches.json").read_text())["queries"][0]
    assert crop["box"] == [20, 10, 60, 90] and crop["name"] == "s6"


def test_ctrl_c_writes_what_was_done_marked_partial(ws, tmp_path, monkeypatch):
    calls = []
    predict = SeqNet.predict

    def interrupted(self, images, *args, **kwargs):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return predict(self, images, *args, **kwargs)

    monkeypatch.setattr(SeqNet, "predict", interrupted)
    out = tmp_path / "out"
    result = seqnet_run(ws, ws / "clip.mp4", out, "--batch", "2")
    assert result.exit_code == 130
    assert "stopped after 2 frames; partial results in" in result.output
    report = json.loads((out / "matches.json").read_text())
    assert report["partial"] and report["frames"] == 2
    assert [f[0] for f in report["queries"][0]["per_frame"]] == [0, 1]
    with av.open(str(out / "annotated.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2
    meta = json.loads((out / "index" / "meta.json").read_text())
    assert meta["units"] == []  # an unfinished video is not an index entry


BAD = {
    "missing video": ({"input": "@nope.mp4"}, "gallery not found"),
    "damaged video": ({"input": "@bad.mp4"}, "cannot decode video"),
    "query not an image": ({"query": "@bad.mp4"}, "cannot read image"),
    "query too small": ({"query": "tiny.jpg"}, "need at least 16"),
    "box outside": ({"extra": ["--box", "0", "0", "500", "50"]}, "lies outside the query"),
    "box with two queries": (
        {"query": ["alice.jpg", "bob.jpg"], "extra": ["--box", "1", "1", "30", "40"]},
        "--box marks a person in one query image",
    ),
    "missing model": ({"model": "@none"}, "model package not found"),
    "backend not installed": (
        {"backend": "onnxruntime", "registry": "no_such_module:Session"},
        "onnxruntime (no_such_module is not installed)",
    ),
    "cuda without a GPU": ({"extra": ["--device", "cuda"]}, "no CUDA GPU"),
    "bad topk": ({"extra": ["--topk", "0"]}, "--topk must be 1 or more"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_keeps_the_earlier_output(ws, tmp_path, monkeypatch, case):
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    change, message = BAD[case]
    if "registry" in change:  # the backend's module as if it were not installed
        monkeypatch.setitem(runtime_backend.RUNTIME_BACKENDS, change["backend"], change["registry"])
    files = tmp_path / "files"
    files.mkdir()
    (files / "bad.mp4").write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    assert seqnet_run(ws, ws / "gallery", out, "--no-video").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def at(v):
        return str(files / v[1:]) if v.startswith("@") else str(ws / v)

    queries = change.get("query", "alice.jpg")
    queries = [queries] if isinstance(queries, str) else queries
    argv = [at(change.get("input", "gallery")), "--out", str(out)]
    argv += ["--model", at(change.get("model", "model.pth"))]
    argv += ["--backend", change.get("backend", "torch")]
    for q in queries:
        argv += ["--query", at(q)]
    result = CliRunner().invoke(main, argv + change.get("extra", []))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("seqnet-run: error: ") and message in lines[-1], result.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["files", "out"]  # no temporary left


def test_output_folder_not_ours_is_refused(ws, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    result = seqnet_run(ws, ws / "gallery", out)
    assert result.exit_code == 1 and "holds other files" in result.output
    assert [p.name for p in out.iterdir()] == ["holiday.jpg"]


def test_no_model_says_how_to_export_one(ws, tmp_path, monkeypatch):
    monkeypatch.delenv("SEQNET_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [str(ws / "gallery"), "--query", str(ws / "alice.jpg")])
    assert result.exit_code == 1 and "seqnet-export --ckpt" in result.output
    monkeypatch.setenv("SEQNET_MODEL", str(ws / "model.pth"))
    assert run_module.resolve_model(None) == ws / "model.pth"
    shutil.rmtree(tmp_path / "run_output", ignore_errors=True)


def test_onnxruntime_and_torch_find_the_same_matches(ws, tmp_path):
    """The same video through an exported package on ONNX Runtime and through the checkpoint
    it came from on PyTorch (``--backend torch`` on the package): the same hits within the
    fp32 parity contract (boxes 1e-3 px; similarities rounded to 4 decimals)."""
    from seqnet_export.run import export_package

    package, _ = export_package(ws / "model.pth", out=ws / "model_package", threads=2)
    reports = {}
    for backend in ("onnxruntime", "torch"):
        out = tmp_path / backend
        argv = [str(ws / "clip.mp4"), "--model", str(package), "--backend", backend,
                "--query", str(ws / "alice.jpg"), "--query", str(ws / "bob.jpg"),
                "--out", str(out), "--no-video"]  # fmt: skip
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 0, result.output
        reports[backend] = json.loads((out / "matches.json").read_text())
    assert reports["onnxruntime"]["backend"] == "onnxruntime"
    for ort_q, torch_q in zip(*(r["queries"] for r in reports.values()), strict=True):
        assert len(ort_q["hits"]) == len(torch_q["hits"]) == 10
        same = 0  # a near-tie at the 10th place may swap one hit for another
        for a in ort_q["hits"]:
            for b in torch_q["hits"]:
                if a["frame"] == b["frame"] and a["box"] == pytest.approx(b["box"], abs=0.101):
                    assert a["similarity"] == pytest.approx(b["similarity"], abs=2e-4)
                    same += 1
        assert same >= 9
        assert ort_q["hits"][0]["frame"] == torch_q["hits"][0]["frame"]
        for a, b in zip(ort_q["per_frame"], torch_q["per_frame"], strict=True):
            assert a[0] == b[0] and a[2] == pytest.approx(b[2], abs=2e-4)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_outputs_get_the_umasks_permissions(ws, tmp_path, mask):
    import os
    import stat

    old = os.umask(mask)
    try:
        result = seqnet_run(ws, ws / "clip.mp4", tmp_path / "out")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    paths = [tmp_path / "out", *(tmp_path / "out").rglob("*")]
    assert any(p.is_file() for p in paths) and any(p.is_dir() for p in paths[1:])
    for path in paths:
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == want, path


def test_a_torch_session_takes_the_threads_a_ray_worker_gives_it(ws):
    """A Ray worker opens its session with the CPUs Ray gave it (``threads``), whatever the
    backend: on PyTorch they are the process's intra-op threads."""
    from seqnet_runtime.backend import load

    before = torch.get_num_threads()
    try:
        session = load(ws / "model.pth", "torch", threads=before + 1)
        assert torch.get_num_threads() == before + 1 and session.batch_size >= 1
    finally:
        torch.set_num_threads(before)
