"""The runtime's own layer, with no model: the session interface's checks, ranking against a
brute-force search, the index file, and the whole search app running where torch cannot be
imported."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seqnet_runtime import backend, index
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.index import TopHits

ROOT = Path(__file__).resolve().parents[1]


def _frames(seed=0):
    """Hand-made frames of two units: an image (one frame) and a video (three, one empty):
    [(unit, signature, frame, seconds, detections)]."""
    rng = np.random.default_rng(seed)

    def dets(n):
        emb = rng.normal(size=(n, 8)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        xy = rng.uniform(0, 100, size=(n, 2)).astype(np.float32)
        scores = rng.uniform(size=n).astype(np.float32)
        return {"boxes": np.hstack([xy, xy + 20]), "scores": scores, "embeddings": emb}

    return [("/a.jpg", [1, 2], -1, 0.0, dets(3))] + [
        ("/v.mp4", [3, 4, 2], i, t, dets(n)) for i, t, n in ((0, 0.0, 2), (2, 0.4, 0), (4, 0.8, 4))
    ]


def test_top_hits_are_a_brute_force_search():
    frames = _frames()
    query = frames[-1][4]["embeddings"][3] * 0.9
    flat = [  # every detection with where it came from, by hand
        (d["embeddings"][j], key, i, t, d["boxes"][j], d["scores"][j])
        for key, _, i, t, d in frames
        for j in range(len(d["boxes"]))
    ]
    assert len(flat) == 9
    best = sorted(flat, key=lambda d: -float(d[0] @ query))[:5]
    top, everything = TopHits(query, 5), TopHits(query, 100)
    for key, _, i, t, d in frames:
        top.add(key, i, t, d)
        everything.add(key, i, t, d)
    got = top.hits()
    assert len(got) == 5
    for (emb, key, frame, _, box, det), m in zip(best, got, strict=True):
        assert m["unit"] == key and m["frame"] == frame
        assert m["score"] == pytest.approx(float(emb @ query), abs=5.1e-5)  # 4 decimals
        assert m["box"] == [round(float(v), 1) for v in box]
        assert m["det_score"] == round(float(det), 4)
    assert got[0]["unit"] == "/v.mp4" and got[0]["frame"] == 4 and got[0]["time"] == 0.8
    assert len(everything.hits()) == 9
    assert TopHits(query, 5).hits() == []


def test_equal_similarities_keep_arrival_order():
    one = {"boxes": np.zeros((1, 4), np.float32), "scores": np.ones(1, np.float32),
           "embeddings": np.ones((1, 2), np.float32) / np.sqrt(2)}  # fmt: skip
    top = TopHits(one["embeddings"][0], 2)
    for i in range(5):
        top.add("/v.mp4", i, i / 10, one)
    assert [h["frame"] for h in top.hits()] == [0, 1]


def test_index_round_trip_in_chunks_and_invalidation(tmp_path, monkeypatch):
    monkeypatch.setattr(index, "CHUNK_FRAMES", 2)  # the video's three frames take two chunks
    frames = _frames()
    writer = index.IndexWriter(tmp_path / "idx", "key1", 8)
    for key, sig, i, t, d in frames:
        writer.add(key, sig, i, t, d)
    writer.end("/a.jpg")
    writer.end("/v.mp4")
    writer.close()
    back = index.load_index(tmp_path / "idx", "key1")
    assert list(back) == ["/a.jpg", "/v.mp4"] and len(back["/v.mp4"].chunks) == 2
    rows = [(k, *row) for k, u in back.items() for row in u.rows()]
    assert len(rows) == len(frames)
    for (key, i, t, d), (key0, sig, i0, t0, d0) in zip(rows, frames, strict=True):
        assert (key, i, t) == (key0, i0, t0) and back[key].sig == sig
        for field in ("boxes", "scores", "embeddings"):
            assert d[field].dtype == np.float32
            np.testing.assert_array_equal(d[field], d0[field])
    assert index.load_index(tmp_path / "idx", "another model") == {}
    # a unit never ended is left out; a reused one is linked into a new index
    writer = index.IndexWriter(tmp_path / "new", "key1", 8)
    writer.reuse("/a.jpg", back["/a.jpg"])
    writer.add("/v.mp4", [3, 4, 2], 0, 0.0, frames[1][4])
    writer.close()
    again = index.load_index(tmp_path / "new", "key1")
    assert list(again) == ["/a.jpg"]  # the unit never ended is kept apart, to draw it only
    assert list(index.load_index(tmp_path / "new", "key1", partial=True)) == ["/a.jpg", "/v.mp4"]
    chunk = tmp_path / "idx" / back["/v.mp4"].chunks[0]
    chunk.write_bytes(chunk.read_bytes()[:100])  # truncated: rebuilt, not a crash
    assert index.load_index(tmp_path / "idx", "key1") == {}
    (tmp_path / "idx" / index.META).write_text("{")
    assert index.load_index(tmp_path / "idx", "key1") == {}
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary left


class _Fake(backend.Session):
    name, key, dim = "fake", "k", 8

    def _detect(self, images, context_boxes):
        return [{"n": len(images), "ctx": context_boxes} for _ in images]

    def _embed(self, image, boxes):
        return np.ones((len(boxes), self.dim), np.float32)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((4, 4), np.uint8), "H x W x 3"),
        (np.zeros((4, 4, 4), np.uint8), "H x W x 3"),
        (np.zeros((0, 4, 3), np.uint8), "H x W x 3"),
        (np.zeros((4, 4, 3), np.float64), "uint8 or float32"),
    ],
)
def test_session_checks_images(image, message):
    with pytest.raises(SeqNetError, match=message):
        _Fake().detect([image])


def test_session_checks_boxes_and_context():
    session, image = _Fake(), np.zeros((8, 8, 3), np.uint8)
    assert session.detect([]) == []
    assert session.embed(image, np.zeros((0, 4))).shape == (0, 8)
    assert session.embed(image, [1, 2, 3, 4]).shape == (1, 8)
    with pytest.raises(SeqNetError, match=r"\(k, 4\)"):
        session.embed(image, np.zeros((2, 3)))
    with pytest.raises(SeqNetError, match="one each"):
        session.detect([image, image], context_boxes=[[0, 0, 2, 2]])
    (out,) = session.detect([image], context_boxes=[[0, 0, 2, 2]])
    assert out["ctx"][0].shape == (1, 4) and out["ctx"][0].dtype == np.float32


def test_load_names_the_backends():
    with pytest.raises(SeqNetError, match="unknown backend 'nope'"):
        backend.load("model", backend="nope")


TORCH_FREE = """
import json, sys

class NoTorch:  # as on a machine without PyTorch: importing it fails
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTorch())

import numpy as np
import seqnet_runtime
from seqnet_runtime import backend, demo, search

class Brightness(backend.Session):
    # A stand-in model: one box per image, its embedding the mean colour of the box.
    name, key, dim, batch_size = "brightness", "b1", 3, 2
    def _detect(self, images, context_boxes):
        return [{"boxes": np.array([[4, 4, 28, 40]], np.float32),
                 "scores": np.ones(1, np.float32),
                 "embeddings": self._embed(im, np.array([[4, 4, 28, 40]], np.float32))}
                for im in images]
    def _embed(self, image, boxes):
        out = []
        for x1, y1, x2, y2 in boxes.astype(int):
            v = image[y1:y2, x1:x2].reshape(-1, 3).mean(0).astype(np.float32) + 1
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

root = sys.argv[1]
job = search.prepare(f"{root}/query.png", [4, 4, 28, 40], f"{root}/gallery", f"{root}/out",
                     topk=2)
matches = search.search(Brightness(), job)
job = demo.prepare(f"{root}/query.png", [4, 4, 28, 40],
                   [f"{root}/gallery/{n}.png" for n in ("red", "green")], f"{root}/demo")
demo.demo(Brightness(), job)
print("MODULES:", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "seqnet_train")))
try:
    backend.load("x", backend="torch")
except seqnet_runtime.SeqNetError as e:
    print("LOAD:", e)
print("BEST:", json.dumps(matches[0]))
"""


def test_runtime_app_runs_without_torch(tmp_path):
    """The search and demo apps, end to end, in a process where importing torch fails."""
    (tmp_path / "gallery").mkdir()
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for name, rgb in colours.items():
        Image.new("RGB", (48, 64), rgb).save(tmp_path / "gallery" / f"{name}.png")
    Image.new("RGB", (40, 50), (30, 190, 40)).save(tmp_path / "query.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TORCH_FREE), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["MODULES"] == "[]"
    assert lines["LOAD"] == "no backend could be loaded: torch (torch is not installed)"
    best = json.loads(lines["BEST"])
    assert best["unit"].endswith("green.png") and best["score"] > 0.99
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [m["image"].rsplit("/", 1)[1] for m in results["matches"]] == ["green.png", "blue.png"]
    assert (tmp_path / "out" / "index" / "meta.json").is_file() and (
        tmp_path / "out" / "index.html"
    ).is_file()
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "00_red.png", "01_green.png", "summary.png",
    ]  # fmt: skip
