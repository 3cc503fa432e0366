"""``seqnet synth`` -> loaders round trips for the three formats, protocol construction,
determinism, and JSON conversion round trips."""

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from seqnet_train.cli import main
from seqnet_train.data import load_cuhk_protocol, load_queries, load_split, synth_write
from seqnet_train.data.convert import convert
from seqnet_train.data.synth import generate
from seqnet_train.data.synth_world import MAX_QUERY_HIDDEN, Frame, Person, choose_queries, hidden
from seqnet_train.errors import SeqNetError

SIZES = dict(train_images=14, test_images=10, train_ids=5, test_ids=4, people=3, size=(96, 128))
DATASET = {"cuhk-sysu": ("CUHK-SYSU", ""), "prw": ("PRW", ""), "json": ("JSON", "dataset.json")}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQNET_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    return {fmt: generate(fmt, base / fmt, seed=5, **SIZES) for fmt in DATASET}


def _load(synth, fmt):
    name, file = DATASET[fmt]
    root = synth[fmt] / file if file else synth[fmt]
    return name, root, {s: load_split(name, root, s) for s in ("train", "gallery", "query")}


@pytest.mark.parametrize("fmt", list(DATASET))
def test_round_trip(synth, fmt):
    name, root, splits = _load(synth, fmt)
    train, gallery, query = splits["train"], splits["gallery"], splits["query"]
    assert len(train) == 14 and len(gallery) == 10
    for r in train + gallery:
        assert Path(r["img_path"]).is_file() and r["img_path"].endswith(".jpg")
        b = r["boxes"]
        assert len(b) >= 1 and (b[:, 2] > b[:, 0]).all() and (b[:, :2] >= 0).all()
        assert (b[:, 2] <= 129).all() and (b[:, 3] <= 97).all()
        assert (b[:, 3] - b[:, 1] >= 0.3 * 96 - 2).all()  # people are large
    train_ids = {int(p) for r in train for p in r["pids"] if p != 5555}
    test_ids = {int(p) for r in gallery for p in r["pids"] if p != 5555}
    assert len(train_ids) == 5 and len(test_ids) == 4
    labels = np.concatenate([r["labels"] for r in train])
    assert set(labels[labels >= 0].tolist()) == set(range(5))
    assert any((r["pids"] == 5555).any() for r in train)  # unlabelled passers-by
    if fmt != "cuhk-sysu":  # CUHK-SYSU numbers train and test identities independently
        assert not train_ids & test_ids
    queries = load_queries(name, root)
    assert len(queries) == len(query) >= 4
    gallery_names = {r["img_name"] for r in gallery}
    assert all(q["query"]["img_name"] in gallery_names for q in queries)


def test_cuhk_protocols_like_the_real_ones(synth):
    root = synth["cuhk-sysu"]
    gallery = {r["img_name"]: r for r in load_split("CUHK-SYSU", root, "gallery")}
    for size in (50, 100, 500, 1000, 2000, 4000):
        proto = load_cuhk_protocol(root, size)
        assert len(proto) == 4
        for q in proto:
            names = [g["img_name"] for g in q["gallery"]]
            assert len(names) == min(size, 9) == len(set(names))  # capped by the pool
            assert q["query"]["img_name"] not in names
            has = [g["box"] is not None for g in q["gallery"]]
            assert has == sorted(has, reverse=True) and any(has)  # positives first
            for g in q["gallery"]:
                r = gallery[g["img_name"]]
                if g["box"] is not None:  # the positive box carries the query's id
                    k = int(np.flatnonzero((r["boxes"] == g["box"]).all(1))[0])
                    assert r["pids"][k] == q["query"]["pid"]
                else:
                    assert q["query"]["pid"] not in r["pids"]


def test_prw_query_file_uses_crlf(synth):
    data = (synth["prw"] / "query_info.txt").read_bytes()
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == data.count(b"\n")


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    small = dict(SIZES, train_images=6, test_images=5, train_ids=2, test_ids=2)
    a = generate("prw", tmp_path / "a", seed=1, **small)
    b = generate("prw", tmp_path / "b", seed=1, **small)
    c = generate("prw", tmp_path / "c", seed=2, **small)
    assert _digest(a) == _digest(b) != _digest(c)


def test_refuses_non_empty_output_and_cleans_up(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep")
    with pytest.raises(SeqNetError, match="exists and is not an empty folder"):
        generate("json", tmp_path / "out", **SIZES)
    with pytest.raises(SeqNetError, match="too few images"):
        generate("json", tmp_path / "new", **dict(SIZES, test_images=1, test_ids=9))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _test_set(root):
    """TestG50 with image names replaced by the images' bytes: the test set's content."""

    def content(name):
        return hashlib.sha256((root / "Image" / "SSM" / name).read_bytes()).digest()

    return [
        (
            content(q["query"]["img_name"]),
            q["query"]["box"].tolist(),
            [
                (content(g["img_name"]), None if g["box"] is None else g["box"].tolist())
                for g in q["gallery"]
            ],
        )
        for q in load_cuhk_protocol(root, 50)
    ]


def test_test_split_does_not_move_with_training_sizes(tmp_path):
    base = generate("cuhk-sysu", tmp_path / "a", seed=3, **SIZES)
    more = dict(SIZES, train_images=20, train_ids=9)
    bigger = generate("cuhk-sysu", tmp_path / "b", seed=3, **more)
    other = generate("cuhk-sysu", tmp_path / "c", seed=4, **more)
    assert _test_set(base) == _test_set(bigger) != _test_set(other)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(streams, out, *args):
        (out / "half-written").write_text("x")
        raise OSError("disk full")

    monkeypatch.setitem(synth_write.WRITERS, "json", fail)
    with pytest.raises(OSError, match="disk full"):
        generate("json", tmp_path / "new", **SIZES)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
@pytest.mark.parametrize("fmt", list(DATASET))
def test_outputs_get_the_umasks_permissions(tmp_path, fmt, mask):
    """Every folder and file written (the output folder too: it was a private temporary
    folder, renamed) has the permissions the umask gives, and nothing is left beside it."""
    small = dict(SIZES, train_images=6, test_images=5, train_ids=2, test_ids=2)
    old = os.umask(mask)
    try:
        out = generate(fmt, tmp_path / "out", seed=1, **small)
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 5
    assert {mode(p) for p in folders} == {0o777 & ~mask}
    assert {mode(p) for p in files} == {0o666 & ~mask}
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["out"]


def test_cli_synth_and_convert(tmp_path, capsys):
    main(
        [
            "synth",
            "--format",
            "cuhk-sysu",
            "--out",
            str(tmp_path / "c"),
            "--seed",
            "3",
            "--train-images",
            "6",
            "--test-images",
            "5",
            "--train-ids",
            "2",
            "--test-ids",
            "2",
            "--size",
            "80",
            "100",
        ]
    )
    out = tmp_path / "conv" / "c.json"
    main(["convert", "--format", "cuhk-sysu", "--root", str(tmp_path / "c"), "--out", str(out)])
    doc = json.loads(out.read_text())
    assert doc["format"] == "seqnet-json" and len(doc["images"]) == 11
    with pytest.raises(SystemExit) as e:
        main(["convert", "--format", "prw", "--root", str(tmp_path / "none"), "--out", str(out)])
    assert "PRW root folder not found" in str(e.value)


@pytest.mark.parametrize("fmt", ["cuhk-sysu", "prw"])
def test_convert_round_trip(synth, tmp_path, fmt):
    name, root, splits = _load(synth, fmt)
    out = convert(fmt, root, tmp_path / "d.json")
    for split in ("train", "gallery"):
        for a, b in zip(splits[split], load_split("JSON", out, split), strict=True):
            assert a["img_name"] == b["img_name"] and a["cam_id"] == b["cam_id"]
            assert Path(a["img_path"]).resolve() == Path(b["img_path"]).resolve()
            np.testing.assert_array_equal(a["boxes"], b["boxes"])
            np.testing.assert_array_equal(a["pids"], b["pids"])
            if split == "train":
                np.testing.assert_array_equal(a["labels"], b["labels"])
    qa, qb = load_queries(name, root), load_queries("JSON", out)
    assert len(qa) == len(qb)
    for a, b in zip(qa, qb):
        assert a["query"]["img_name"] == b["query"]["img_name"]
        assert a["query"]["pid"] == b["query"]["pid"]
        np.testing.assert_array_equal(a["query"]["box"], b["query"]["box"])
        if a["gallery"] is None:
            assert b["gallery"] is None
        else:
            assert [g["img_name"] for g in a["gallery"]] == [g["img_name"] for g in b["gallery"]]
            assert [g["box"] is None for g in a["gallery"]] == [
                g["box"] is None for g in b["gallery"]
            ]


def test_json_bad_inputs(tmp_path):
    with pytest.raises(SeqNetError, match="dataset.json: JSON dataset file not found"):
        load_split("JSON", tmp_path, "train")
    path = tmp_path / "d.json"
    path.write_text("{not json")
    with pytest.raises(SeqNetError, match="d.json: not valid JSON"):
        load_split("JSON", path, "train")
    doc = {
        "format": "seqnet-json",
        "version": 1,
        "queries": [],
        "images": [
            {"name": "a.jpg", "path": "a.jpg", "split": "train", "boxes": [[0, 0, 5]], "pids": [1]}
        ],
    }
    path.write_text(json.dumps(doc))
    with pytest.raises(SeqNetError, match=r"images\[0\]: expected a box \[x1, y1, x2, y2\]"):
        load_split("JSON", path, "train")
    doc["images"][0].update(boxes=[[0, 0, 5, 5]], pids=[5555])
    path.write_text(json.dumps(doc))
    with pytest.raises(SeqNetError, match="expected pid null or an integer other than 5555"):
        load_split("JSON", path, "train")
    doc["images"][0].update(pids=[None], split="val")
    path.write_text(json.dumps(doc))
    with pytest.raises(SeqNetError, match="expected split train or gallery, got 'val'"):
        load_split("JSON", path, "train")


def _frame(index, cam, *people):
    """A test frame of (box, pid) people."""
    return Frame(index, "test", cam, [Person(box, pid, None, False) for box, pid in people])


def test_hidden_counts_only_people_in_front():
    back, front = ((0, 0, 10, 20), 1), ((5, 0, 15, 30), 2)  # front: lower feet, drawn later
    frame = _frame(0, 0, back, front)
    assert hidden(frame, frame.people[0]) == 0.5  # its right half is behind ``front``
    assert hidden(frame, frame.people[1]) == 0.0
    far = _frame(1, 0, ((0, 0, 10, 20), 1), ((-50, -50, 50, 10), 2))  # feet above: behind
    assert hidden(far, far.people[0]) == 0.0


def test_queries_show_their_person():
    """The query is an appearance that shows its person whenever the identity has one;
    a hidden appearance only when nothing else is left (it is still a query)."""
    inside = (((40, 0, 50, 20), 7), ((30, 0, 60, 40), None))  # box wholly behind a passer-by
    frames = [_frame(0, 0, *inside), _frame(1, 1, ((0, 0, 10, 20), 7)), _frame(2, 2, *inside)]
    assert hidden(frames[0], frames[0].people[0]) == 1.0 > MAX_QUERY_HIDDEN
    for seed in range(20):
        [(pid, frame, person)] = choose_queries(np.random.default_rng(seed), frames, [7])
        assert (pid, frame.index) == (7, 1)
    [(_, frame, _)] = choose_queries(np.random.default_rng(0), [frames[0], frames[2]], [7])
    assert frame.index in (0, 2)
