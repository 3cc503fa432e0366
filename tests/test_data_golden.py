"""The loaders against the golden sets in ../shared/evalgold: same records as the established
loaders (loader_expected.json), and the fast protocol reader against scipy.io.loadmat."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from seqnet_train.data import load_cuhk_protocol, load_queries, load_split

GOLD = Path(__file__).resolve().parents[2] / "shared" / "evalgold"
pytestmark = [
    pytest.mark.golden,
    pytest.mark.skipif(not GOLD.is_dir(), reason=f"golden sets not found at {GOLD}"),
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQNET_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("dataset", ["CUHK-SYSU", "PRW"])
@pytest.mark.parametrize("split", ["train", "gallery", "query"])
def test_records_match_established_loaders(dataset, split):
    expected = json.loads((GOLD / "loader_expected.json").read_text())[dataset][split]
    records = load_split(dataset, GOLD / dataset, split)
    assert [r["img_name"] for r in records] == [e["img_name"] for e in expected]
    for r, e in zip(records, expected):
        assert r["boxes"].dtype == np.float32 and r["pids"].dtype == np.int64
        np.testing.assert_array_equal(r["boxes"], np.array(e["boxes"], np.float32).reshape(-1, 4))
        np.testing.assert_array_equal(r["pids"], e["pids"])
        assert r["cam_id"] == e.get("cam_id", -1)
        assert Path(r["img_path"]).is_file()


def test_second_load_comes_from_the_cache_and_is_equal(tmp_path):
    first = load_split("CUHK-SYSU", GOLD / "CUHK-SYSU", "gallery")
    assert list((tmp_path / "cache").glob("*.npz")), "parsed annotations were not cached"
    again = load_split("CUHK-SYSU", GOLD / "CUHK-SYSU", "gallery")
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["pids"], b["pids"])


def test_cuhk_quirks_in_golden_set(caplog):
    with caplog.at_level(logging.INFO):
        train = load_split("CUHK-SYSU", GOLD / "CUHK-SYSU", "train")
    assert "dropped 4 zero-size boxes" in caplog.text
    names = [r["img_name"] for r in train]
    assert names == sorted(names)  # sorted as strings: s10 < s2
    assert all(len(r["boxes"]) for r in train)  # every image keeps a box
    for r in train:  # contiguous training index, UNLABELED for 5555
        assert ((r["labels"] == -1) == (r["pids"] == 5555)).all()
    labels = np.concatenate([r["labels"] for r in train])
    assert set(labels[labels >= 0]) == set(range(len(set(labels[labels >= 0]))))


def _reference_protocol(path, var):
    """The protocol read with plain loadmat, as the established code does."""
    rows = scipy.io.loadmat(path)[var].ravel()
    out = []
    for row in rows:
        q = row["Query"][0, 0]
        box = q["idlocate"].ravel().astype(np.int32)
        gallery = []
        for g in row["Gallery"].ravel():
            b = g["idlocate"].ravel()
            if b.size:
                b = b.astype(np.int32)
                b = np.concatenate([b[:2], b[:2] + b[2:]])
            gallery.append((str(g["imname"][0]), None if b.size == 0 else b.tolist()))
        qbox = np.concatenate([box[:2], box[:2] + box[2:]]).tolist()
        out.append((str(q["imname"][0]), qbox, gallery))
    return out


@pytest.mark.parametrize("size", [50, 100])
def test_protocol_matches_loadmat(size):
    path = GOLD / "CUHK-SYSU/annotation/test/train_test" / f"TestG{size}.mat"
    ref = _reference_protocol(path, f"TestG{size}")
    got = load_cuhk_protocol(GOLD / "CUHK-SYSU", size)
    assert len(got) == len(ref) == 20
    for q, (name, box, gallery) in enumerate(ref):
        assert got[q]["query"]["img_name"] == name and got[q]["query"]["pid"] == q + 1
        assert got[q]["query"]["box"].tolist() == box
        assert [
            (g["img_name"], None if g["box"] is None else g["box"].tolist())
            for g in got[q]["gallery"]
        ] == gallery
        assert name not in [g["img_name"] for g in got[q]["gallery"]]
    assert any(len({g["img_name"] for g in q["gallery"]}) < len(q["gallery"]) for q in got), (
        "the golden set repeats negatives; the reader must keep the repeats"
    )


def test_gallery_size_minus_one_is_testg50():
    a, b = load_cuhk_protocol(GOLD / "CUHK-SYSU", -1), load_cuhk_protocol(GOLD / "CUHK-SYSU", 50)
    assert [q["query"]["img_name"] for q in a] == [q["query"]["img_name"] for q in b]
    assert len(a[0]["gallery"]) == len(b[0]["gallery"]) == 50


def test_prw_quirks_in_golden_set():
    gallery = load_split("PRW", GOLD / "PRW", "gallery")
    query = load_split("PRW", GOLD / "PRW", "query")
    assert all(r["cam_id"] == int(r["img_name"][1]) for r in gallery + query)
    assert all((r["boxes"] >= 0).all() for r in gallery + query)
    assert all((r["boxes"] == np.trunc(r["boxes"])).all() for r in gallery)
    queries = load_queries("PRW", GOLD / "PRW")
    assert queries[0]["gallery"] is None and queries[0]["query"]["cam_id"] == 4
    assert queries[0]["query"]["box"].tolist() == [0.0, 228.0, 192.0, 767.0]  # x=-41.78 clipped
