"""What every backend must pass: the golden cases of ../shared/parity through the exported
fp32 graphs, on each installed package backend (``seqnet_runtime.backend.backends``) and graph
flavour: the standard graphs, and the ``engine`` graphs (what TensorRT builds: standard-op
RoIAlign, NMS and top-k, fixed K, the resize computed on the host) on ONNX Runtime, which runs
every part of the TensorRT backend's path but TensorRT's own kernels.

The default ResNet-50 with the golden weights is exported once for the module (no PyTorch at
test time but for the export); then, per backend: every image through the gallery, query and
CBGM paths, a forced-empty case (the score threshold is a graph input, so the same graphs
run it), the three images as one call equal to one by one, frames of one size as one batch;
and (slow) the fp16 package against the fp32 one (DEPLOY.md's contract, on ONNX Runtime's CPU
provider). Tolerances are the golden ones (../shared/parity/README.md). A backend whose library
is not installed here skips with the reason.
"""

import importlib.util
import sys

import numpy as np
import pytest
import torch

from seqnet_runtime import load
from seqnet_train.config import load_cfg
from seqnet_train.modeling import build_model

pytestmark = pytest.mark.golden

BOX_TOL, SCORE_TOL, EMB_TOL = 1e-3, 1e-4, 1e-4
THREADS = 2
# (backend, graph flavour, the library it needs)
BACKENDS = [
    ("onnxruntime", "standard", "onnxruntime"),
    ("openvino", "standard", "openvino"),
    ("onnxruntime", "engine", "onnxruntime"),
]


@pytest.fixture(scope="module", params=BACKENDS, ids=[f"{b}-{g}" for b, g, _ in BACKENDS])
def backend(request):
    name, graphs, library = request.param
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} is not installed (pip install '.[{name}]')")
    return name, graphs


def open_session(package, backend, **options):
    name, graphs = backend
    return load(package, name, graphs=graphs, threads=THREADS, **options)


@pytest.fixture(scope="module")
def golden(shared):
    return torch.load(shared / "parity" / "golden_inference.pt", weights_only=True)


def _export(shared, golden, folder, fp16, engine=True):
    """The golden model (default config, golden overrides, fill_ weights) exported without
    the export's own verification (the tests here are it), the engine graphs too."""
    from seqnet_export.run import write_graphs

    sys.path.insert(0, str(shared / "parity"))
    from fill_weights import fill_

    torch.set_num_threads(THREADS)
    cfg = load_cfg(None, [str(x) for x in golden["config_overrides"]])
    model = build_model(cfg, load_imagenet=False)
    fill_(model)
    write_graphs(folder, model.eval(), fp16=fp16, engine=engine, config_yaml=cfg.dump())
    return folder


@pytest.fixture(scope="module")
def package(shared, golden, tmp_path_factory):
    return _export(shared, golden, tmp_path_factory.mktemp("golden_package"), fp16=False)


@pytest.fixture(scope="module")
def session(package, backend):
    return open_session(package, backend)


@pytest.fixture(scope="module")
def images(golden):
    return [im.permute(1, 2, 0).numpy() for im in golden["images"]]


@pytest.fixture(scope="module")
def gallery(session, images):
    """The gallery outputs one image per call."""
    return [session.detect([im])[0] for im in images]


@pytest.fixture(scope="module")
def cbgm(session, images, golden):
    return [
        session.detect([im], [golden["cbgm_gt_box"][i].numpy()])[0] for i, im in enumerate(images)
    ]


def assert_same_detections(ours, gold, first_is_gt=False):
    """Same count; each golden box matched to one of ours (by position, not index)."""
    gold = {k: gold[k].numpy() for k in ("boxes", "scores", "embeddings")}
    assert ours["boxes"].shape == gold["boxes"].shape
    assert ours["scores"].shape == gold["scores"].shape
    assert ours["embeddings"].shape == gold["embeddings"].shape
    if not len(gold["boxes"]):
        return
    dist = np.abs(gold["boxes"][:, None, :] - ours["boxes"][None]).max(-1)
    match = dist.argmin(1)
    assert len(set(match.tolist())) == len(match), "two golden boxes matched one of ours"
    assert dist.min(1).max() <= BOX_TOL, dist.min(1).max()
    assert np.abs(gold["scores"] - ours["scores"][match]).max() <= SCORE_TOL
    assert np.abs(gold["embeddings"] - ours["embeddings"][match]).max() <= EMB_TOL
    if first_is_gt:
        assert match[0] == 0 and ours["scores"][0] == 1.0


def assert_equal_outputs(a, b):
    """Two runs' outputs equal within the fp32 tolerances, row by row."""
    assert a["boxes"].shape == b["boxes"].shape
    assert np.abs(a["boxes"] - b["boxes"]).max(initial=0) <= BOX_TOL
    assert np.abs(a["scores"] - b["scores"]).max(initial=0) <= SCORE_TOL
    assert np.abs(a["embeddings"] - b["embeddings"]).max(initial=0) <= EMB_TOL


def test_gallery(gallery, golden):
    for ours, gold in zip(gallery, golden["gallery"]):
        assert len(gold["boxes"]) > 0
        assert_same_detections(ours, gold)


def test_query_embeddings(session, images, golden):
    for i, im in enumerate(images):
        ours = session.embed(im, golden["query_boxes"][i].numpy())
        gold = golden["query_embeddings"][i].numpy()
        assert ours.shape == gold.shape == (2, 256)
        assert np.abs(ours - gold).max() <= EMB_TOL


def test_query_image_as_gallery(cbgm, golden):
    for i, gold in enumerate(golden["cbgm"]):
        assert_same_detections(cbgm[i], gold, first_is_gt=True)
        assert np.abs(cbgm[i]["boxes"][0] - golden["cbgm_gt_box"][i][0].numpy()).max() <= BOX_TOL


def test_forced_empty(package, backend, images, golden):
    """The score threshold is a graph input: 0.999 through the same graphs. One golden image
    shows that the input is read, on every backend (test_parity runs all three through the
    PyTorch model; each costs the CI two ResNet-50 passes per backend)."""
    thresh = golden["meta"]["empty_case_score_thresh"]
    session = open_session(package, backend, score_thresh=thresh)
    for i, gold in enumerate(golden["empty"][:1]):
        gallery = session.detect([images[i]])[0]
        assert gallery["boxes"].shape == (0, 4) and gallery["embeddings"].shape == (0, 256)
        assert gallery["scores"].shape == (0,)
        assert_same_detections(gallery, gold["gallery"])
        cbgm = session.detect([images[i]], [golden["cbgm_gt_box"][i].numpy()])[0]
        assert cbgm["boxes"].shape == (1, 4) and cbgm["embeddings"].shape == (1, 256)
        assert_same_detections(cbgm, gold["cbgm"], first_is_gt=True)


def test_three_images_in_one_call(session, images, gallery):
    """Three sizes in one call: grouped by size, each as alone."""
    together = session.detect(images)
    for a, b in zip(together, gallery):
        assert_equal_outputs(a, b)


def test_frames_of_one_size_as_one_batch(package, backend, images, gallery):
    """Two frames of one size through one graph call (B = 2) equal one by one: the golden
    image and its mirror image."""
    session = open_session(package, backend, batch_size=2)
    mirror = np.ascontiguousarray(images[0][:, ::-1])
    batch = session.detect([images[0], mirror])
    assert_equal_outputs(batch[0], gallery[0])
    assert_equal_outputs(batch[1], session.detect([mirror])[0])


@pytest.mark.slow
def test_fp16_contract(shared, golden, tmp_path, backend, images, gallery, cbgm):
    """fp16 vs fp32 (DEPLOY.md): detections scoring >= 0.5 matched at IoU >= 0.95 (>= 99% of
    them), matched embeddings at cosine >= 0.999; query embeddings likewise. ONNX Runtime's
    CPU provider: fp16 storage between operators, fp32 arithmetic."""
    from seqnet_runtime.boxes import pairwise_iou as box_iou

    package = _export(shared, golden, tmp_path, fp16=True, engine=backend[1] == "engine")
    session = open_session(package, backend, precision="fp16")
    considered = matched = 0
    cosines = []
    for i, im in enumerate(images):
        for ref, ctx in ((gallery[i], None), (cbgm[i], [golden["cbgm_gt_box"][i].numpy()])):
            ours = session.detect([im], ctx)[0]
            keep = ref["scores"] >= 0.5
            iou = box_iou(ref["boxes"][keep], ours["boxes"])
            best = iou.argmax(1)
            ok = iou[np.arange(len(best)), best] >= 0.95
            considered, matched = considered + keep.sum(), matched + ok.sum()
            a, b = ref["embeddings"][keep][ok], ours["embeddings"][best[ok]]
            cosines += list((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
        q16 = session.embed(im, golden["query_boxes"][i].numpy())
        cosines += list((q16 * golden["query_embeddings"][i].numpy()).sum(1))
    assert considered > 100
    assert matched / considered >= 0.99, matched / considered
    assert min(cosines) >= 0.999, min(cosines)
