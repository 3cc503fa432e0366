"""The inference pass, the outputs file, caching, sharding and the written reports."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from seqnet_train.backend import ModelSession
from seqnet_train.config import load_cfg
from seqnet_train.data import load_split
from seqnet_train.errors import SeqNetError
from seqnet_train.evaluation import evaluate
from seqnet_train.evaluation.inference import infer, merge_shards
from seqnet_train.evaluation.outputs import load_outputs, save_outputs
from seqnet_train.evaluation.report import format_table


class FakeModel(nn.Module):
    """predict/embed_boxes with outputs that depend on the image only (any batch size)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def _feat(self, image, box):
        v = torch.cat([image.mean((1, 2)), box / 100, torch.ones(256 - 7)])
        return v / v.norm()

    def predict(self, images, context_boxes=None):
        out = []
        for i, img in enumerate(images):
            h, w = img.shape[-2:]
            boxes = torch.tensor([[0, 0, w / 2, h / 2], [w / 4, h / 4, w, h]])
            if context_boxes is not None:
                boxes = torch.cat([context_boxes[i].reshape(1, 4).float(), boxes])
            feats = torch.stack([self._feat(img, b) for b in boxes])
            scores = torch.linspace(1, 0.4, len(boxes))
            out.append({"boxes": boxes, "scores": scores, "embeddings": feats})
        return out

    def embed_boxes(self, images, boxes):
        return [torch.stack([self._feat(i, b.float()) for b in bs]) for i, bs in zip(images, boxes)]


@pytest.fixture(scope="module")
def cuhk_root(shared):
    return shared / "evalgold" / "CUHK-SYSU"


def cfg_for(root, out, *opts):
    return load_cfg(None, [
        "INPUT.DATA_ROOT", str(root), "OUTPUT_DIR", str(out), "DEVICE", "cpu",
        "INPUT.NUM_WORKERS_TEST", "0", "EVAL_GALLERY_SIZES", "[50, 100, -1]", *opts,
    ])  # fmt: skip


def test_evaluate_writes_outputs_and_reports_then_reuses_the_cache(cuhk_root, tmp_path):
    cfg = cfg_for(cuhk_root, tmp_path, "EVAL_USE_CBGM", "True", "INPUT.BATCH_SIZE_TEST", "3")
    metrics = evaluate(FakeModel(), cfg, tmp_path, epoch=2)
    raw = torch.load(tmp_path / "eval_outputs.pt", weights_only=True)
    assert raw["meta"]["epoch"] == 2 and raw["gallery_dets"].shape == (2 * 60, 5)
    assert raw["query_dets"].shape == (3 * 20, 5) and len(raw["query_names"]) == 20
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    expected = {"det/recall", "det/ap", "det_labeled/recall", "det_labeled/ap"} | {
        f"{p}/{g}/{k}"
        for p in ("search", "search_cbgm")
        for g in ("G50", "G100", "all")
        for k in ("mAP", "top1", "top5", "top10")
    }
    assert set(metrics) == expected
    assert all(0 <= v <= 1 for v in metrics.values())
    assert (tmp_path / "map_vs_gallery_size.png").stat().st_size > 1000
    top = json.loads((tmp_path / "search_top10.json").read_text())
    assert len(top["search/G100"]) == 20 and 0 < len(top["search_cbgm/G100"][0]["top10"]) <= 10
    assert "search_cbgm/G100" in format_table(metrics)

    class Broken(FakeModel):
        def predict(self, *a, **k):
            raise AssertionError("the cache should have been used")

    cached = cfg_for(cuhk_root, tmp_path, "EVAL_USE_CBGM", "True", "EVAL_USE_CACHE", "True")
    assert evaluate(Broken(), cached, tmp_path) == pytest.approx(metrics)


def test_batched_and_sharded_inference_give_the_same_outputs(cuhk_root, tmp_path):
    gallery = load_split("CUHK-SYSU", cuhk_root, "gallery")[:7]
    queries = load_split("CUHK-SYSU", cuhk_root, "query")[:5]
    session = ModelSession(FakeModel())
    one = cfg_for(cuhk_root, tmp_path)
    ref = merge_shards([infer(session, one, gallery, queries)], gallery, queries, {})
    four = cfg_for(cuhk_root, tmp_path, "INPUT.BATCH_SIZE_TEST", "4")
    parts = [infer(session, four, gallery, queries, rank=r, world_size=2) for r in (0, 1)]
    merged = merge_shards(parts, gallery, queries, {})
    assert merged.keys() == ref.keys() and len(ref["gallery_dets"]) > 0
    for k, v in ref.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_allclose(merged[k], v, atol=1e-6, err_msg=k)
        else:
            assert merged[k] == v


def test_gt_boxes_mode_uses_the_annotations(cuhk_root, tmp_path):
    evaluate(FakeModel(), cfg_for(cuhk_root, tmp_path, "EVAL_USE_GT", "True"), tmp_path)
    out = load_outputs(tmp_path / "eval_outputs_gt.pt")
    gallery = load_split("CUHK-SYSU", cuhk_root, "gallery")
    boxes = np.concatenate([g["boxes"] for g in gallery])
    np.testing.assert_allclose(out["gallery_dets"][:, :4], boxes)
    assert (out["gallery_dets"][:, 4] == 1).all() and out["meta"]["use_gt"] is True
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["det/recall"] == 1.0 and metrics["det/ap"] == pytest.approx(1.0)


def test_outputs_round_trip_and_npz_converter(tmp_path):
    rng = np.random.default_rng(0)
    out = {
        "gallery_names": ["a.jpg", "b.jpg"], "gallery_counts": np.array([2, 0]),
        "gallery_dets": rng.random((2, 5), dtype=np.float32),
        "gallery_feats": rng.random((2, 256), dtype=np.float32),
        "query_names": ["a.jpg"], "query_box_feats": rng.random((1, 256), dtype=np.float32),
        "query_counts": np.array([1]), "query_dets": rng.random((1, 5), dtype=np.float32),
        "query_feats": rng.random((1, 256), dtype=np.float32),
    }  # fmt: skip
    np.savez(tmp_path / "x.npz", **out)
    cmd = [sys.executable, "-m", "seqnet_train.evaluation.convert_npz", tmp_path / "x.npz"]
    subprocess.run([*cmd, tmp_path / "x.pt"], check=True)
    back = load_outputs(tmp_path / "x.pt")
    for k, v in out.items():
        assert back[k] == v if isinstance(v, list) else np.array_equal(back[k], v)
    assert not list(tmp_path.glob("*.tmp"))
    out["gallery_counts"] = np.array([1, 0])
    save_outputs(out, tmp_path / "bad.pt")
    with pytest.raises(SeqNetError, match="do not add up"):
        load_outputs(tmp_path / "bad.pt")
