"""``make demo`` (seqnet_quickstart) end to end, shrunk: synthesise, train, evaluate,
search and draw, with the summary that the README quotes."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import seqnet_quickstart as quickstart
from seqnet_export import verify
from seqnet_runtime.gallery import open_gallery
from seqnet_runtime.images import to_array
from seqnet_runtime.index import load_index
from seqnet_train.backend import TorchSession
from seqnet_train.config import load_cfg

TINY = """
DEVICE: cpu
TF_BOARD: False
EVAL_PERIOD: 100
EVAL_GALLERY_SIZES: [50, 100]
INPUT: {MIN_SIZE: 120, MAX_SIZE: 160, BATCH_SIZE_TRAIN: 2, BATCH_SIZE_TEST: 2,
        NUM_WORKERS_TRAIN: 0, NUM_WORKERS_TEST: 0}
SOLVER: {OPTIMIZER: AdamW, BASE_LR: 0.001, MAX_EPOCHS: 1, LR_SCHEDULE: cosine}
MODEL:
  BACKBONE: resnet18
  FREEZE_STEM: False
  RPN: {PRE_NMS_TOPN_TRAIN: 200, POST_NMS_TOPN_TRAIN: 50, PRE_NMS_TOPN_TEST: 100,
        POST_NMS_TOPN_TEST: 30}
  ROI_HEAD: {BATCH_SIZE_TRAIN: 8, POOL_SIZE: 7, SCORE_THRESH_TEST: 0.0}
  LOSS: {LUT_SIZE: 4, CQ_SIZE: 8}
"""


def test_builtin_demo_end_to_end(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("SEQNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(
        quickstart, "DATA", dict(seed=0, train_images=6, test_images=8, train_ids=4, test_ids=2)
    )
    # a 3-step model detects noise, which int8 moves past its check against fp32 (that check is
    # test_int8's, on a trained model): here the int8 half of the demo must run all the same
    for check in ("INT8_MATCHED", "INT8_COSINE_MEDIAN", "INT8_COSINE_MIN"):
        monkeypatch.setattr(verify, check, -1.0)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "demo_output"
    quickstart.main(["--out", str(out), "--cfg", str(cfg), "--precision", "fp32"])

    summary = json.loads((out / "summary.json").read_text())
    metrics = json.loads((out / "train" / "metrics.json").read_text())
    assert summary["gallery_size"] == 100
    assert summary["mAP"] == metrics["search/G100/mAP"] and 0 <= summary["mAP"] <= 1
    assert summary["top1"] == metrics["search/G100/top1"]
    assert summary["precision"] == "fp32"
    assert load_cfg(out / "train" / "config.yaml").SOLVER.AMP is False  # as asked
    assert set(summary["steps_s"]) >= {"synthesise", "train and evaluate", "demo"}
    assert (out / "train" / "epoch_0.pth").is_file()
    for q in range(2):  # two test identities: two queries searched
        page = (out / f"search_q{q}" / "index.html").read_text()
        results = json.loads((out / f"search_q{q}" / "results.json").read_text())
        assert "<img" in page and len(results["matches"]) > 0
    with Image.open(out / "demo" / "summary.png") as im:
        assert im.width > 100 and im.height > 50
    assert not (out / "search_q2").exists()

    # The deployment half: the exported package searched a synthetic video on ONNX Runtime
    # (for both test identities: the shrunk set has two).
    video = summary["video"]
    assert video["backend"] == "onnxruntime" and video["frames"] == 150
    assert 0 <= video["ap"] <= 1 and 0 <= video["recall"] <= 1 and len(video["queries"]) == 2
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["source"]["checkpoint"] == "epoch_0.pth"
    report = json.loads((out / "run" / "matches.json").read_text())
    assert report["backend"] == "onnxruntime" and not report["partial"]
    assert {q["name"] for q in report["queries"]} == set(video["queries"])
    assert (out / "run" / "annotated.mp4").is_file() and (out / "run" / "index.html").is_file()
    assert set(summary["steps_s"]) >= {"export", "synthesise video", "seqnet-run"}

    # The int8 graphs in the same package: evaluated, and timed beside fp32.
    int8 = summary["int8"]
    assert int8["exported"]
    assert set(manifest["graphs"]) == {"fp32", "int8"} and "evaluate int8" in summary["steps_s"]
    assert int8["backend"] in ("openvino", "onnxruntime")
    assert set(int8["delta_points_vs_fp32"]) >= {"search/G100/mAP", "det/ap"}
    assert int8["max_delta_points"] == max(abs(v) for v in int8["delta_points_vs_fp32"].values())
    assert {f"{int8['backend']} int8", "onnxruntime fp32"} <= set(int8["frames_per_s"])
    assert (out / "eval_int8" / "metrics.json").is_file()

    # The searches reused the evaluation's detections, which are what detecting afresh gives.
    overrides = ["INPUT.DATA_ROOT", str(out / "data"), "OUTPUT_DIR", str(out / "train")]
    run_cfg = load_cfg(str(cfg), overrides + ["SOLVER.AMP", "False"])
    ckpt = out / "train" / "epoch_0.pth"
    session = TorchSession(ckpt, run_cfg)
    seeded = load_index(out / "gallery_index", session.key)
    gallery = open_gallery(out / "gallery")
    fresh = {
        key: session.detect([to_array(next(gallery.frames(key))[2])])[0] for key in gallery.units()
    }
    assert seeded.keys() == fresh.keys() == gallery.units().keys()
    assert sum(len(d["boxes"]) for d in fresh.values()) > 0  # people were found to compare
    for key, dets in fresh.items():
        assert seeded[key].sig == gallery.units()[key]
        ((frame, _, stored),) = seeded[key].rows()
        assert frame == -1
        for field, value in dets.items():
            np.testing.assert_allclose(stored[field], value, rtol=1e-5, atol=1e-5)
    reused = f"gallery index: {len(fresh)} units reused, 0 to index"
    assert caplog.text.count(reused) == 2  # by both searches: none detected the pool


def test_int8_beyond_its_check_leaves_an_fp32_package(monkeypatch, tmp_path):
    """The demo goes on without int8 graphs that fail their check (the reason is kept for the
    summary); any other export error ends it."""
    calls = []

    def export(argv):
        calls.append(argv)
        if "--int8" in argv:
            raise SystemExit("seqnet-export: error: int8 vs fp32: beyond the parity contract")

    monkeypatch.setattr(quickstart, "export", export)
    reason = quickstart._export(tmp_path, tmp_path / "epoch_0.pth", {})
    assert "int8 vs fp32" in reason
    assert len(calls) == 2 and "--int8" in calls[0] and "--int8" not in calls[1]

    def broken(argv):
        raise SystemExit("seqnet-export: error: fp32 vs PyTorch: beyond the parity contract")

    monkeypatch.setattr(quickstart, "export", broken)
    with pytest.raises(SystemExit, match="fp32 vs PyTorch"):
        quickstart._export(tmp_path, tmp_path / "epoch_0.pth", {})


@pytest.mark.parametrize(
    "units, native",
    [({"amx_bf16": True}, True), ({"avx512_bf16": True, "amx_bf16": False}, True),
     ({"avx512_bf16": False, "amx_bf16": False, "avx512_f": True}, False), ({}, False)],
)  # fmt: skip
def test_precision_follows_the_cpu_unless_asked(monkeypatch, units, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: units)
    assert quickstart.bf16_training("auto") is native
    assert quickstart.bf16_training("bf16") is True
    assert quickstart.bf16_training("fp32") is False


def test_an_interrupted_demo_resumes_only_its_own_training(tmp_path):
    cfg = load_cfg(None, ["SOLVER.MAX_EPOCHS", "3"])
    assert not quickstart.interrupted(tmp_path, cfg)  # nothing there
    (tmp_path / "config.yaml").write_text(cfg.dump())
    assert not quickstart.interrupted(tmp_path, cfg)  # no checkpoint yet
    (tmp_path / "epoch_0.pth").write_bytes(b"")
    assert quickstart.interrupted(tmp_path, cfg)
    assert not quickstart.interrupted(tmp_path, load_cfg(None, ["SOLVER.MAX_EPOCHS", "4"]))
