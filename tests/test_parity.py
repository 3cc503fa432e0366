"""Our network is the released one: golden outputs of the established code (../shared/parity).

Tolerances are those of ../shared/parity/README.md: boxes matched by position within 1e-3 px,
scores and embeddings within 1e-4, one image at a time and as one batch of 3 (the forced-empty
cases through the released function only: the fast copy changes the convolutions alone).

The largest differences measured (per mode, per kind of output) go to a JSON report for the
benchmarks and the docs: ``$SEQNET_PARITY_REPORT``, else ``.pytest_cache/parity_report.json``.
"""

import copy
import functools
import json
import os
import platform
import sys
from pathlib import Path

import pytest
import torch

from seqnet_train.config import load_cfg
from seqnet_train.modeling import build_model
from seqnet_train.modeling.inference import optimize_for_inference

BOX_TOL, SCORE_TOL, EMB_TOL = 1e-3, 1e-4, 1e-4
MODES = ["reference/one_by_one", "fast/one_by_one", "fast/batch_of_3"]
EMPTY_MODE = MODES[0]  # the fast copy changes only the convolutions: same thresholds, same code
KINDS = {"gallery": ("box", "score", "embedding"), "query": ("embedding",),
         "cbgm": ("box", "score", "embedding"), "empty": ("box", "score", "embedding")}  # fmt: skip


@pytest.fixture(scope="module")
def report(request):
    """{mode: {kind: {"box"|"score"|"embedding": largest difference}}}, written as it fills."""
    path = Path(os.environ.get("SEQNET_PARITY_REPORT") or
                request.config.rootpath / ".pytest_cache" / "parity_report.json")  # fmt: skip
    measured = {}

    def record(mode, kind, diffs):
        entry = measured.setdefault(mode, {}).setdefault(kind, {})
        for k, v in diffs.items():
            entry[k] = max(entry.get(k, 0.0), v)
        wanted = [(m, k) for m in MODES for k in KINDS if k != "empty" or m == EMPTY_MODE]
        complete = all(set(KINDS[k]) <= set(measured.get(m, {}).get(k, {})) for m, k in wanted)
        doc = {
            "tolerances": {"box": BOX_TOL, "score": SCORE_TOL, "embedding": EMB_TOL},
            "max_differences": measured,
            "complete": complete,  # every mode and kind measured
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")

    return record


@pytest.fixture(scope="module")
def golden(shared):
    return torch.load(shared / "parity" / "golden_inference.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(shared, golden):
    sys.path.insert(0, str(shared / "parity"))
    from fill_weights import fill_

    cfg = load_cfg(None, [str(x) for x in golden["config_overrides"]])
    m = build_model(cfg, load_imagenet=False)
    fill_(m)
    return m.eval()


def _run_all(model, images, golden, one_by_one):
    """Every mode's outputs for all images, either one call per image or one call for all."""

    def call(fn, *per_image):
        if not one_by_one:
            return fn(images, *[list(x) for x in per_image])
        return [fn([img], *[[x[i]] for x in per_image])[0] for i, img in enumerate(images)]

    return {
        "gallery": call(model.predict),
        "query": call(model.embed_boxes, golden["query_boxes"]),
        "cbgm": call(lambda im, ctx: model.predict(im, context_boxes=ctx), golden["cbgm_gt_box"]),
    }


@pytest.fixture(scope="module")
def fast_model(model):
    return optimize_for_inference(model)


# The released function, and our fast inference copy one image at a time and batched.
@pytest.fixture(scope="module", params=MODES)
def outputs(request, model, fast_model, golden):
    which, mode = request.param.split("/")
    net = model if which == "reference" else fast_model
    out = _run_all(net, golden["images"], golden, one_by_one=mode == "one_by_one")
    return {**out, "mode": request.param}


def assert_same_detections(ours, gold, first_is_gt=False, record=None):
    """Same count; each golden box matched to one of ours (by position, not index); the
    differences go to ``record`` before they are checked."""
    assert ours["boxes"].shape == gold["boxes"].shape
    assert ours["embeddings"].shape == gold["embeddings"].shape
    assert ours["scores"].shape == gold["scores"].shape
    if not len(gold["boxes"]):
        return {}
    dist = (gold["boxes"][:, None, :] - ours["boxes"][None, :, :]).abs().amax(-1)
    match = dist.argmin(1)
    assert len(set(match.tolist())) == len(match), "two golden boxes matched one of ours"
    box_diff = dist.min(1).values.max().item()
    score_diff = (gold["scores"] - ours["scores"][match]).abs().max().item()
    emb_diff = (gold["embeddings"] - ours["embeddings"][match]).abs().max().item()
    if record:
        record({"box": box_diff, "score": score_diff, "embedding": emb_diff})
    assert box_diff <= BOX_TOL, box_diff
    assert score_diff <= SCORE_TOL, score_diff
    assert emb_diff <= EMB_TOL, emb_diff
    assert torch.equal(ours["labels"], torch.ones_like(ours["labels"]))
    if first_is_gt:
        assert match[0] == 0 and ours["scores"][0] == 1.0
    return {"box": box_diff, "score": score_diff, "embedding": emb_diff}


def test_state_dict_names_and_shapes(model, shared):
    reference = json.loads((shared / "parity" / "reference_state_dict_keys.json").read_text())
    ours = {k: (list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}
    for key, shape, dtype in reference:
        assert ours.pop(key) == (shape, dtype), key
    assert set(ours) == {"roi_heads.reid_loss.cq_ptr"}  # our only extra: the queue pointer


@pytest.mark.golden
def test_gallery(outputs, golden, report):
    assert len(outputs["gallery"]) == len(golden["gallery"]) == len(golden["images"])
    for i, gold in enumerate(golden["gallery"]):
        assert len(gold["boxes"]) > 0
        record = functools.partial(report, outputs["mode"], "gallery")
        assert_same_detections(outputs["gallery"][i], gold, record=record)


@pytest.mark.golden
def test_query_embeddings(outputs, golden, report):
    assert len(outputs["query"]) == len(golden["query_embeddings"]) == len(golden["images"])
    for ours, gold in zip(outputs["query"], golden["query_embeddings"], strict=True):
        assert ours.shape == gold.shape == (2, 256)
        diff = (ours - gold).abs().max().item()
        report(outputs["mode"], "query", {"embedding": diff})
        assert diff <= EMB_TOL


@pytest.mark.golden
def test_query_image_as_gallery(outputs, golden, report):
    assert len(outputs["cbgm"]) == len(golden["cbgm"]) == len(golden["images"])
    for i, gold in enumerate(golden["cbgm"]):
        ours = outputs["cbgm"][i]
        record = functools.partial(report, outputs["mode"], "cbgm")
        assert_same_detections(ours, gold, first_is_gt=True, record=record)
        assert (ours["boxes"][0] - golden["cbgm_gt_box"][i][0]).abs().max() <= BOX_TOL


@pytest.mark.golden
def test_forced_empty(model, golden, report):
    """Score threshold 0.999: nothing detected, CBGM keeps only the given box. The released
    function, one image at a time (EMPTY_MODE: the fast copy shares its post-processing)."""
    thresh = model.roi_heads.score_thresh
    model.roi_heads.score_thresh = golden["meta"]["empty_case_score_thresh"]
    try:
        pairs = zip(golden["images"], golden["cbgm_gt_box"], strict=True)
        outputs = [
            (model.predict([image])[0], model.predict([image], context_boxes=[box])[0])
            for image, box in pairs
        ]
    finally:
        model.roi_heads.score_thresh = thresh
    assert len(outputs) == len(golden["empty"]) == len(golden["images"])
    for (gallery, cbgm), gold in zip(outputs, golden["empty"], strict=True):
        assert gallery["boxes"].shape == (0, 4) and gallery["embeddings"].shape == (0, 256)
        assert gallery["scores"].shape == (0,) and gallery["labels"].shape == (0,)
        assert_same_detections(gallery, gold["gallery"])
        assert cbgm["boxes"].shape == (1, 4) and cbgm["embeddings"].shape == (1, 256)
        record = functools.partial(report, EMPTY_MODE, "empty")
        assert_same_detections(cbgm, gold["cbgm"], first_is_gt=True, record=record)


@pytest.mark.cuda
@pytest.mark.golden
@pytest.mark.parametrize("which", ["reference", "fast"])
def test_golden_parity_on_cuda(model, golden, report, which):
    """On a GPU (fp32 with TF32 off; custom_ops' CUDA kernels where built): the golden outputs
    within the same tolerances, one image at a time."""
    net = copy.deepcopy(model).cuda()
    net = optimize_for_inference(net) if which == "fast" else net
    record = lambda kind: functools.partial(report, f"cuda {which}/one_by_one", kind)  # noqa: E731
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for i, image in enumerate(golden["images"]):
            image = image.cuda()
            gallery = net.predict([image])[0]
            gallery = {k: v.cpu() for k, v in gallery.items()}
            assert_same_detections(gallery, golden["gallery"][i], record=record("gallery"))
            query = net.embed_boxes([image], [golden["query_boxes"][i].cuda()])[0].cpu()
            diff = (query - golden["query_embeddings"][i]).abs().max().item()
            record("query")({"embedding": diff})
            assert diff <= EMB_TOL
            cbgm = net.predict([image], context_boxes=[golden["cbgm_gt_box"][i].cuda()])[0]
            cbgm = {k: v.cpu() for k, v in cbgm.items()}
            assert_same_detections(cbgm, golden["cbgm"][i], first_is_gt=True,
                                   record=record("cbgm"))  # fmt: skip
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
