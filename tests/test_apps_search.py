"""``seqnet search`` end to end with a tiny untrained model on synthetic scenes: the files it
writes, the gallery index reused and refreshed, video galleries, and bad input."""

import importlib.util
import json
import logging
import os
import shutil
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from seqnet_train.cli import main
from seqnet_train.config import load_cfg
from seqnet_train.data.synth import generate
from seqnet_train.modeling.seqnet import SeqNet
from tests.tiny import TINY_OPTS, tiny_model

# an untrained model scores every box near 0.5: keep them all (a few per image) so that the
# outputs have something to draw and rank
APP_OPTS = [
    "MODEL.ROI_HEAD.SCORE_THRESH_TEST",
    "0.0",
    "MODEL.ROI_HEAD.DETECTIONS_PER_IMAGE_TEST",
    "4",
]
QUERY_BOX = ["20", "10", "60", "90"]  # inside the 128 x 96 synthetic images


def make_workspace(base):
    """A synthetic CUHK-SYSU set, a tiny checkpoint with its config.yaml, and a gallery folder."""
    root = generate("cuhk-sysu", base / "synth", seed=3, train_images=4, test_images=8,
                    train_ids=2, test_ids=3, people=3, size=(96, 128))  # fmt: skip
    cfg = load_cfg(None, TINY_OPTS + APP_OPTS + ["INPUT.DATA_ROOT", str(root)])
    (base / "config.yaml").write_text(cfg.dump())
    torch.save(tiny_model(*APP_OPTS).state_dict(), base / "tiny.pth")
    gallery = base / "gallery"
    gallery.mkdir()
    for i in (1, 2, 3):
        shutil.copy(root / "Image" / "SSM" / f"s{i}.jpg", gallery)
    return base


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("apps"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQNET_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def predicted(monkeypatch):
    """Number of images each ``SeqNet.predict`` call received."""
    calls = []
    predict = SeqNet.predict

    def counting(self, images, *args, **kwargs):
        calls.append(len(images))
        return predict(self, images, *args, **kwargs)

    monkeypatch.setattr(SeqNet, "predict", counting)
    return calls


def search(ws, out, *extra, gallery=None, query="s6.jpg"):
    main(["search", "--cfg", str(ws / "config.yaml"), "--ckpt", str(ws / "tiny.pth"),
          "--query", str(ws / "synth" / "Image" / "SSM" / query), "--box", *QUERY_BOX,
          "--gallery", str(gallery or ws / "gallery"), "--out", str(out), *extra])  # fmt: skip
    return json.loads((out / "results.json").read_text())


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


def test_search_writes_results_page_and_summary(ws, tmp_path):
    out = tmp_path / "out"
    results = search(ws, out, "--topk", "5")

    matches = results["matches"]
    assert [m["rank"] for m in matches] == [1, 2, 3, 4, 5]
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert {m["image"] for m in matches} <= {str(p) for p in (ws / "gallery").iterdir()}
    for m in matches:
        x1, y1, x2, y2 = m["box"]
        assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 96
    assert results["indexed"] == {"units": 3, "frames": 3, "detections": 12}
    assert results["query"]["box"] == [float(v) for v in QUERY_BOX]

    page = (out / "index.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert len(parser.links) == 1 + 3 * 5  # query crop; per match its crop, thumbnail, link
    for link in parser.links:  # relative, so the page opens from disk
        with Image.open(out / link) as im:
            im.verify()
    assert f"{matches[0]['score']:.3f}" in page
    with Image.open(out / "summary.png") as im:
        assert im.format == "PNG" and im.width > im.height
    assert sorted(p.name for p in out.iterdir()) == [
        "index", "index.html", "results.json", "summary.png", "thumbs",
    ]  # fmt: skip


def test_second_query_reuses_the_index(ws, tmp_path, predicted, caplog):
    out = tmp_path / "out"
    first = search(ws, out)
    assert sum(predicted) == 3
    with caplog.at_level(logging.INFO):
        again = search(ws, out)
        search(ws, tmp_path / "other", "--index", str(out / "index"), query="s7.jpg")
    assert sum(predicted) == 3  # no detection on the second and third queries
    assert "3 units reused, 0 to index, 0 removed" in caplog.text
    assert again["matches"] == first["matches"]
    assert not (tmp_path / "other" / "index").exists()  # --index: kept where it was given


def test_changed_gallery_is_reindexed_incrementally(ws, tmp_path, predicted, caplog):
    gallery = tmp_path / "gallery"
    shutil.copytree(ws / "gallery", gallery)
    out = tmp_path / "out"
    search(ws, out, gallery=gallery)
    predicted.clear()

    images = ws / "synth" / "Image" / "SSM"
    (gallery / "s1.jpg").unlink()  # removed
    shutil.copy(images / "s4.jpg", gallery)  # added
    shutil.copy(images / "s5.jpg", gallery / "s2.jpg")  # modified
    st = (gallery / "s2.jpg").stat()
    os.utime(gallery / "s2.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with caplog.at_level(logging.INFO):
        results = search(ws, out, gallery=gallery)
    assert sum(predicted) == 2  # s2 (modified) and s4 (added) only
    assert "1 units reused, 2 to index, 1 removed" in caplog.text
    assert results["indexed"]["units"] == 3
    assert not any(m["image"].endswith("s1.jpg") for m in results["matches"])


def test_changed_model_config_is_reindexed(ws, tmp_path, predicted, caplog):
    out = tmp_path / "out"
    search(ws, out)
    with caplog.at_level(logging.INFO):
        search(ws, out, "MODEL.ROI_HEAD.NMS_THRESH_TEST", "0.3")
    assert sum(predicted) == 6
    assert "the model or its config changed" in caplog.text


def _write_video(path, frames):
    av = pytest.importorskip("av", reason="PyAV is not installed (pip install av)")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for im in frames:
            for packet in stream.encode(av.VideoFrame.from_image(im)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_gallery_every_kth_frame(ws, tmp_path, predicted):
    video = tmp_path / "clip.mp4"
    images = ws / "synth" / "Image" / "SSM"
    _write_video(video, [Image.open(images / f"s{i}.jpg").convert("RGB") for i in range(1, 6)])
    out = tmp_path / "out"
    results = search(ws, out, "--every", "2", "--topk", "3", gallery=video)
    assert sum(predicted) == 3  # frames 0, 2, 4 of 5
    assert results["every"] == 2 and results["indexed"]["frames"] == 3
    assert len(results["matches"]) == 3
    for m in results["matches"]:
        assert m["video"] == str(video) and m["frame"] in (0, 2, 4)
        assert m["time"] == pytest.approx(m["frame"] / 5)
        with Image.open(out / m["thumb"]) as im:
            im.verify()
    assert "frame" in (out / "index.html").read_text()
    search(ws, out, "--every", "2", gallery=video)
    assert sum(predicted) == 3  # reused
    search(ws, out, "--every", "1", gallery=video)
    assert sum(predicted) == 3 + 5  # another sampling: indexed again


HAVE_AV = importlib.util.find_spec("av") is not None

# (argument changes, expected message); "@name" is a file the fixture below makes in tmp_path
BAD_INPUTS = {
    "missing query": ({"--query": "@nope.jpg"}, "image not found"),
    "unreadable query": ({"--query": "@fake.jpg"}, "cannot read image"),
    "box outside": ({"--box": ["100", "10", "140", "90"]}, "lies outside the query image"),
    "box negative": ({"--box": ["-5", "10", "40", "90"]}, "lies outside the query image"),
    "zero-size box": ({"--box": ["20", "10", "20", "90"]}, "has zero size"),
    "empty gallery": ({"--gallery": "@empty"}, "empty gallery: no images"),
    "no images in gallery": ({"--gallery": "@notes"}, "empty gallery: no images"),
    "unreadable gallery image": ({"--gallery": "@broken"}, "1 of 1 images missing or unreadable"),
    "truncated gallery image": ({"--gallery": "@truncated"}, "cannot read image"),
    "missing gallery": ({"--gallery": "@nowhere"}, "gallery not found"),
    "one image as gallery": ({"--gallery": "@fake.jpg"}, "a folder of images or a video"),
    "undecodable video": (
        {"--gallery": "@bad.mp4"},
        "cannot decode video" if HAVE_AV else "needs PyAV",
    ),
    "bad --every": ({"--gallery": "@bad.mp4", "--every": "0"}, "--every must be 1 or more"),
    "bad --topk": ({"--topk": "0"}, "--topk must be 1 or more"),
    "missing checkpoint": ({"--ckpt": "@none.pth"}, "checkpoint not found"),
    "corrupt checkpoint": ({"--ckpt": "@corrupt.pth"}, "cannot read checkpoint"),
    "checkpoint of another model": ({"--ckpt": "@other.pth"}, "does not fit the configured model"),
}


@pytest.fixture
def bad_files(ws, tmp_path):
    inputs = tmp_path / "inputs"
    for name in ("empty", "notes", "broken", "truncated"):
        (inputs / name).mkdir(parents=True)
    jpeg = (ws / "gallery" / "s1.jpg").read_bytes()
    (inputs / "truncated" / "s1.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # fails mid-indexing
    (inputs / "notes" / "a.txt").write_text("not an image")
    (inputs / "broken" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (inputs / "bad.mp4").write_bytes(b"\x00" * 64)
    (inputs / "fake.jpg").write_text("text")
    (inputs / "corrupt.pth").write_bytes(b"PK\x03\x04 truncated")
    torch.save({"backbone.conv1.weight": torch.zeros(1)}, inputs / "other.pth")
    return inputs


def _argv(ws, out, changes, files=None):
    args = {
        "--cfg": ws / "config.yaml",
        "--ckpt": ws / "tiny.pth",
        "--query": ws / "synth" / "Image" / "SSM" / "s6.jpg",
        "--box": QUERY_BOX,
        "--gallery": ws / "gallery",
        "--out": out,
    } | changes
    argv = ["search"]
    for k, v in args.items():
        if isinstance(v, str) and v.startswith("@"):
            v = files / v[1:]
        argv += [k, *(v if isinstance(v, list) else [str(v)])]
    return argv


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_with_one_line_and_writes_nothing(ws, tmp_path, bad_files, case):
    changes, message = BAD_INPUTS[case]
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        main(_argv(ws, results / "out", changes, bad_files))
    text = str(e.value.code)
    assert text.startswith("seqnet search: error: ") and message in text
    assert "\n" not in text
    assert not results.exists() or not any(results.iterdir())  # no output, no temporary folder


def test_failed_search_keeps_the_previous_results(ws, tmp_path):
    out = tmp_path / "out"
    search(ws, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(SystemExit):
        main(_argv(ws, out, {"--ckpt": tmp_path / "none.pth"}))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_search_refuses_to_replace_a_foreign_folder(ws, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(SystemExit, match="holds other files"):
        main(_argv(ws, out, {}))
    assert [p.name for p in out.iterdir()] == ["holiday.jpg"]
