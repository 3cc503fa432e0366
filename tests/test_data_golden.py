"""The loaders against the golden sets in ../shared/evalgold: same records as the established
loaders (loader_expected.json), and the fast protocol reader against scipy.io.loadmat."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from seqnet_train.data import load_cuhk_protocol, load_queries, load_split

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def gold(shared):
    """../shared/evalgold, where conftest finds it (skips locally, fails in CI when absent)."""
    return shared / "evalgold"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQNET_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("dataset", ["CUHK-SYSU", "PRW"])
@pytest.mark.parametrize("split", ["train", "gallery", "query"])
def test_records_match_established_loaders(dataset, split, gold):
    expected = json.loads((gold / "loader_expected.json").read_text())[dataset][split]
    records = load_split(dataset, gold / dataset, split)
    assert [r["img_name"] for r in records] == [e["img_name"] for e in expected]
    for r, e in zip(records, expected, strict=True):
        assert r["boxes"].dtype == np.float32 and r["pids"].dtype == np.int64
        np.testing.assert_array_equal(r["boxes"], np.array(e["boxes"], np.float32).reshape(-1, 4))
        np.testing.assert_array_equal(r["pids"], e["pids"])
        assert r["cam_id"] == e.get("cam_id", -1)
        assert Path(r["img_path"]).is_file()


def test_second_load_comes_from_the_cache_and_is_equal(tmp_path, gold):
    first = load_split("CUHK-SYSU", gold / "CUHK-SYSU", "gallery")
    assert list((tmp_path / "cache").glob("*.npz")), "parsed annotations were not cached"
    again = load_split("CUHK-SYSU", gold / "CUHK-SYSU", "gallery")
    assert len(first) == len(again) > 0
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["pids"], b["pids"])


def test_cuhk_quirks_in_golden_set(caplog, gold):
    with caplog.at_level(logging.INFO):
        train = load_split("CUHK-SYSU", gold / "CUHK-SYSU", "train")
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
def test_protocol_matches_loadmat(size, gold):
    path = gold / "CUHK-SYSU/annotation/test/train_test" / f"TestG{size}.mat"
    ref = _reference_protocol(path, f"TestG{size}")
    got = load_cuhk_protocol(gold / "CUHK-SYSU", size)
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


def test_gallery_size_minus_one_is_testg50(gold):
    a, b = load_cuhk_protocol(gold / "CUHK-SYSU", -1), load_cuhk_protocol(gold / "CUHK-SYSU", 50)
    assert [q["query"]["img_name"] for q in a] == [q["query"]["img_name"] for q in b]
    assert len(a[0]["gallery"]) == len(b[0]["gallery"]) == 50


def test_prw_quirks_in_golden_set(gold):
    gallery = load_split("PRW", gold / "PRW", "gallery")
    query = load_split("PRW", gold / "PRW", "query")
    assert all(r["cam_id"] == int(r["img_name"][1]) for r in gallery + query)
    assert all((r["boxes"] >= 0).all() for r in gallery + query)
    assert all((r["boxes"] == np.trunc(r["boxes"])).all() for r in gallery)
    queries = load_queries("PRW", gold / "PRW")
    assert queries[0]["gallery"] is None and queries[0]["query"]["cam_id"] == 4
    assert queries[0]["query"]["box"].tolist() == [0.0, 228.0, 192.0, 767.0]  # x=-41.78 clipped


def _pytest(args, cwd, **env):
    argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args]
    env = {**os.environ, **env}
    run = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return run, run.stdout + run.stderr


def test_missing_golden_cases_fail_the_run_in_ci(tmp_path):
    """SEQNET_SHARED pointing to an empty folder in CI: the run stops at the start with one line
    and exit status 1, before any test runs."""
    test = "tests/test_data_golden.py::test_prw_quirks_in_golden_set"
    run, output = _pytest([test], REPO, CI="true", SEQNET_SHARED=str(tmp_path))
    assert run.returncode == 1, output
    lines = [x for x in run.stdout.splitlines() if f"golden cases not found at {tmp_path}" in x]
    assert len(lines) == 1 and "CI:" in lines[0], output
    assert "passed" not in output and "skipped" not in output, output


def test_missing_golden_cases_skip_with_the_reason_locally(tmp_path):
    """The same outside CI: a test that asks for ``shared`` skips and says why (conftest loaded
    as a plugin by a one-test file, so that the run does not import torch)."""
    (tmp_path / "test_one.py").write_text("def test_needs_golden(shared):\n    pass\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    run, output = _pytest(["-p", "tests.conftest", str(tmp_path / "test_one.py")], REPO,
                          CI="", SEQNET_SHARED=str(empty))  # fmt: skip
    assert run.returncode == 0, output
    assert "1 skipped" in run.stdout and f"golden cases not found at {empty}" in run.stdout, output
