"""The established evaluation's numbers on ../shared/evalgold, per query too, and via the CLI."""

import json

import numpy as np
import pytest
import torch

from seqnet_train.cli import main
from seqnet_train.data import load_queries, load_split
from seqnet_train.data.cuhk_sysu import protocol_arrays
from seqnet_train.evaluation.detection import eval_detection
from seqnet_train.evaluation.outputs import load_outputs, save_outputs, split_rows
from seqnet_train.evaluation.protocols import cuhk_protocol, identity_protocol
from seqnet_train.evaluation.search import Cbgm, keep_detections, search, summarize

pytestmark = pytest.mark.golden
CASES = [("CUHK-SYSU", "cuhk"), ("PRW", "prw")]


@pytest.fixture(scope="module")
def gold(shared):
    root = shared / "evalgold"
    return root, json.loads((root / "expected.json").read_text())


def _setup(root, dataset, short):
    out = load_outputs(root / "outputs" / f"{short}_outputs.npz")
    gallery = load_split(dataset, root / dataset, "gallery")
    return out, gallery


@pytest.mark.parametrize("dataset,short", CASES)
def test_detection_numbers(gold, dataset, short):
    root, expected = gold
    out, gallery = _setup(root, dataset, short)
    dets = split_rows(out["gallery_dets"], out["gallery_counts"])
    for case in expected[dataset]["eval_detection"]:
        r = eval_detection(
            [g["boxes"] for g in gallery], [g["pids"] for g in gallery], dets, **case["args"]
        )
        assert r["recall"] == pytest.approx(case["recall"], abs=1e-6)
        assert r["ap"] == pytest.approx(case["ap"], abs=1e-6)


@pytest.mark.parametrize("dense", [0.0, 2.0], ids=["one-product", "image-by-image"])
@pytest.mark.parametrize("dataset,short", CASES)
def test_search_numbers_per_query(gold, dataset, short, dense, monkeypatch):
    monkeypatch.setattr("seqnet_train.evaluation.search.DENSE_FRACTION", dense)  # both CUHK paths
    root, expected = gold
    out, gallery = _setup(root, dataset, short)
    for case in expected[dataset]["eval_search"]:
        a = case["args"]
        cams = [g["cam_id"] for g in gallery]
        kept = keep_detections(
            out["gallery_dets"], out["gallery_feats"], out["gallery_counts"], a["det_thresh"], cams
        )
        if dataset == "CUHK-SYSU":
            size = a["gallery_size"]
            protocol = cuhk_protocol(
                protocol_arrays(root / dataset, size), out["gallery_names"], size
            )
        else:
            queries = [q["query"] for q in load_queries(dataset, root / dataset)]
            protocol = identity_protocol(gallery, queries, cross_cam=not a["ignore_cam_id"])
        ptr = np.r_[0, np.cumsum(out["query_counts"])]
        cbgm = Cbgm(a["k1"], a["k2"], ptr, out["query_feats"]) if a["cbgm"] else None
        r = search(kept, out["query_box_feats"], protocol, cbgm)
        s = summarize(r)
        for k in ("mAP", "top1", "top5", "top10"):
            assert s[k] == pytest.approx(case[k], abs=1e-6), (a, k)
        np.testing.assert_allclose(r["ap"], case["per_query_ap"], atol=1e-6, err_msg=str(a))
        np.testing.assert_array_equal(r["hits"].astype(int), case["per_query_topk"])


def test_score_command_reproduces_golden_numbers(gold, tmp_path):
    root, expected = gold
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"INPUT:\n  DATASET: PRW\n  DATA_ROOT: {root / 'PRW'}\nEVAL_USE_CBGM: True\n")
    converted = tmp_path / "prw.pt"  # through our outputs file: .npz -> .pt -> score
    save_outputs(load_outputs(root / "outputs" / "prw_outputs.npz"), converted)
    assert torch.load(converted, weights_only=True)["gallery_dets"].shape[1] == 5
    json_path = str(tmp_path / "m.json")
    main(["score", "--cfg", str(cfg), "--outputs", str(converted), "--json", json_path])
    metrics = json.loads((tmp_path / "m.json").read_text())
    names = {(True, False): "search/all", (False, False): "search/cross_cam",
             (True, True): "search_cbgm/all", (False, True): "search_cbgm/cross_cam"}  # fmt: skip
    for case in expected["PRW"]["eval_search"]:
        key = names[case["args"]["ignore_cam_id"], case["args"]["cbgm"]]
        for k in ("mAP", "top1", "top5", "top10"):
            assert metrics[f"{key}/{k}"] == pytest.approx(case[k], abs=1e-6)
    det = expected["PRW"]["eval_detection"][0]
    assert metrics["det/ap"] == pytest.approx(det["ap"], abs=1e-6)


def test_score_command_cuhk_sizes_and_pool(gold, tmp_path):
    root, expected = gold
    cfg = tmp_path / "cfg.yaml"
    sizes = "EVAL_GALLERY_SIZES: [50, 100, -1]"
    cfg.write_text(f"INPUT:\n  DATA_ROOT: {root / 'CUHK-SYSU'}\n{sizes}\n")
    main(["score", "--cfg", str(cfg), "--outputs", str(root / "outputs" / "cuhk_outputs.npz"),
          "--json", str(tmp_path / "m.json")])  # fmt: skip
    metrics = json.loads((tmp_path / "m.json").read_text())
    for case in expected["CUHK-SYSU"]["eval_search"]:
        if not case["args"]["cbgm"]:
            assert metrics[f"search/G{case['args']['gallery_size']}/mAP"] == pytest.approx(
                case["mAP"], abs=1e-6
            )
    # TestG100 lists every image of this small pool, so the whole pool gives G100's numbers
    assert metrics["search/all/mAP"] == pytest.approx(metrics["search/G100/mAP"], abs=1e-12)
    assert "search_cbgm/G50/mAP" not in metrics


def test_score_command_rejects_outputs_of_another_dataset(gold, tmp_path):
    root, _ = gold
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"INPUT:\n  DATA_ROOT: {root / 'CUHK-SYSU'}\n")
    with pytest.raises(SystemExit, match="gallery images"):
        main(["score", "--cfg", str(cfg), "--outputs", str(root / "outputs" / "prw_outputs.npz")])
