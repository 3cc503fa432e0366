"""``seqnet demo`` end to end: the built-in default on a synthetic CUHK-SYSU set, explicit
inputs, and bad input."""

import pytest
from PIL import Image

from seqnet_runtime import draw
from seqnet_train.cli import main
from seqnet_train.data import load_cuhk_protocol
from tests.test_apps_search import QUERY_BOX, make_workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("demo"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQNET_CACHE_DIR", str(tmp_path / "cache"))


def demo(ws, out, *extra):
    main(["demo", "--cfg", str(ws / "config.yaml"), "--ckpt", str(ws / "tiny.pth"),
          "--out", str(out), *extra])  # fmt: skip


def _pngs(out):
    return sorted(p.name for p in out.glob("*.png"))


def test_default_demo_uses_the_first_query_and_its_gallery(ws, tmp_path):
    out = tmp_path / "out"
    demo(ws, out, "--topk", "3")
    first = load_cuhk_protocol(ws / "synth", 50)[0]
    names = [g["img_name"] for g in first["gallery"][:4]]
    assert first["gallery"][0]["box"] is not None  # the query person's own image comes first
    expected = [f"{n:02d}_{name.removesuffix('.jpg')}.png" for n, name in enumerate(names)]
    assert _pngs(out) == sorted(expected + ["summary.png"])
    for name in expected:
        with Image.open(out / name) as im:  # enlarged from 128 x 96 so that labels fit
            assert im.format == "PNG" and min(im.size) == draw.MIN_SIDE
    with Image.open(out / "summary.png") as im:  # the query and 3 matches side by side
        assert im.width == 4 * (draw.CROP_WIDTH + 10) + 10 + 24


def test_demo_with_own_query_and_gallery(ws, tmp_path):
    out = tmp_path / "out"
    images = ws / "synth" / "Image" / "SSM"
    demo(ws, out, "--query", str(images / "s6.jpg"), "--box", *QUERY_BOX,
         "--gallery", str(images / "s1.jpg"), str(images / "s2.jpg"))  # fmt: skip
    assert _pngs(out) == ["00_s1.png", "01_s2.png", "summary.png"]
    # a folder as the gallery; the earlier output is replaced
    demo(ws, out, "--query", str(images / "s6.jpg"), "--box", *QUERY_BOX,
         "--gallery", str(ws / "gallery"))  # fmt: skip
    assert _pngs(out) == ["00_s1.png", "01_s2.png", "02_s3.png", "summary.png"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--box", *QUERY_BOX], "--box and --gallery need --query"),
        (["--query", "q.jpg"], "--query needs --box"),
        (["--query", "missing.jpg", "--box", *QUERY_BOX, "--gallery", "g"], "image not found"),
        (["--query", "@", "--box", "0", "0", "500", "50", "--gallery", "g"], "lies outside"),
        (["--query", "@", "--box", *QUERY_BOX, "--gallery", "@empty"], "empty gallery"),
        (["--query", "@", "--box", *QUERY_BOX, "--gallery", "@", "nope.png"], "image not found"),
    ],
)
def test_demo_bad_input(ws, tmp_path, extra, message):
    (tmp_path / "empty").mkdir()
    query = str(ws / "synth" / "Image" / "SSM" / "s6.jpg")
    extra = [query if a == "@" else str(tmp_path / "empty") if a == "@empty" else a for a in extra]
    with pytest.raises(SystemExit) as e:
        demo(ws, tmp_path / "out", *extra)
    assert str(e.value.code).startswith("seqnet demo: error: ") and message in str(e.value.code)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["empty"]
