"""Hand-checkable cases of the evaluation protocols (AP on paper, ties, missing GT, CBGM)."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from seqnet_train.evaluation.ap import average_precision
from seqnet_train.evaluation.detection import eval_detection
from seqnet_train.evaluation.protocols import cuhk_protocol, identity_protocol
from seqnet_train.evaluation.search import Cbgm, keep_detections, search, summarize


def unit(s):
    """2-d unit vector whose dot product with the query [1, 0] is s."""
    return [s, np.sqrt(1 - s * s)]


QUERY = np.array([[1.0, 0.0]], dtype=np.float32)
BOX = [10, 10, 60, 110]  # the query person's GT box in gallery images 0 and 2
FAR = [200, 200, 250, 300]


def three_image_gallery():
    """a: TP 0.9, negative 0.3; b: negative 0.8; c: TP 0.5; d, q: undetected."""
    dets = [BOX + [0.99], FAR + [0.9], FAR + [0.9], BOX + [0.7]]
    feats = [unit(0.9), unit(0.3), unit(0.8), unit(0.5)]
    return keep_detections(np.array(dets), np.array(feats), [2, 1, 1, 0, 0], 0.5)


def arrays(gallery_lists):
    """TestG<G>-like arrays for one query in image 'q': lists of (image name, xywh or None)."""
    entries = gallery_lists[0]
    names = sorted({n for n, _ in entries})
    return {
        "q_names": np.array(["q"]),
        "g_counts": np.array([len(entries)]),
        "names": np.array(names),
        "g_index": np.array([names.index(n) for n, _ in entries]),
        "g_boxes": np.array([[np.nan] * 4 if b is None else b for _, b in entries], np.float32),
    }


XYWH = [10, 10, 50, 100]
NAMES = ["a", "b", "c", "d", "q"]


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = rng.random(40) < 0.3
        s = rng.integers(0, 6, 40).astype(float)  # many ties
        if y.any():
            assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), 1e-12)
    assert average_precision([1, 0], [0.5, 0.5]) == 0.5  # a tie shares one threshold


def test_three_image_gallery_ap_on_paper():
    # ranking TP(0.9) N(0.8) TP(0.5) N(0.3): AP = (1/1 + 2/3) / 2; both occurrences found
    p = cuhk_protocol(arrays([[("a", XYWH), ("c", XYWH), ("b", None)]]), NAMES, 50)
    r = search(three_image_gallery(), QUERY, p)
    assert r["ap"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert r["hits"][0].tolist() == [True, True, True]
    assert (r["n_gt"][0], r["n_tp"][0]) == (2, 2)


def test_undetected_and_repeated_gt_entries_count_as_occurrences():
    # image d holds the person but has no detection; c is listed twice: 4 occurrences, 2 found
    entries = [("a", XYWH), ("c", XYWH), ("c", XYWH), ("d", XYWH), ("b", None), ("b", None)]
    p = cuhk_protocol(arrays([entries]), NAMES, 50)
    r = search(three_image_gallery(), QUERY, p)
    assert r["n_gt"][0] == 4
    assert r["ap"][0] == pytest.approx((1 + 2 / 3) / 2 * 2 / 4)


def test_whole_pool_adds_every_other_image_but_the_querys_own():
    # list holds only image a; the pool adds b and c (c's person is no GT occurrence here)
    p = cuhk_protocol(arrays([[("a", XYWH)]]), NAMES, -1)
    r = search(three_image_gallery(), QUERY, p)
    assert r["ap"][0] == pytest.approx(1.0)
    names = NAMES[:3] + ["q"]  # the query image itself is a pool image: never searched
    p = cuhk_protocol(arrays([[("b", None)]]), names, -1)
    assert p.exclude_image.tolist() == [3]


def test_top_k_with_fewer_than_ten_detections_and_top_records():
    p = cuhk_protocol(arrays([[("c", XYWH), ("b", None)]]), NAMES, 50)
    r = search(three_image_gallery(), QUERY, p, top=10)
    # img1's negative (0.8) outranks img2's TP (0.5): top-1 misses, top-5 hits
    assert r["hits"][0].tolist() == [False, True, True]
    assert [round(s, 5) for _, _, s, _ in r["top"][0]] == [0.8, 0.5]
    assert [tp for *_, tp in r["top"][0]] == [False, True]
    assert r["ap"][0] == pytest.approx(0.5)


def test_tied_scores_count_against_the_true_positive():
    dets = np.array([BOX + [0.9], FAR + [0.9]])
    g = keep_detections(dets, np.array([unit(0.6), unit(0.6)]), [1, 1], 0.5)
    p = cuhk_protocol(arrays([[("a", XYWH), ("b", None)]]), NAMES[:2] + ["q"], 50)
    r = search(g, QUERY, p)
    assert r["ap"][0] == pytest.approx(0.5)
    assert r["hits"][0].tolist() == [False, True, True]


def test_small_person_needs_less_overlap():
    # GT 10 x 20: threshold 200 / (20 * 30) = 1/3; a det with IoU 0.4 is a TP
    small_xywh, det = [0, 0, 10, 20], [0, 0, 10, 8]  # IoU 80 / 200 = 0.4
    g = keep_detections(np.array([det + [0.9]]), np.array([unit(0.7)]), [1], 0.5)
    p = cuhk_protocol(arrays([[("a", small_xywh)]]), ["a", "q"], 50)
    assert search(g, QUERY, p)["n_tp"][0] == 1


def records(cams):
    """PRW-like gallery: person 7 in frames 0 (cam 1) and 2 (cam 2); frame 1 is the query's."""
    return [
        {"img_name": "f0", "boxes": np.array([BOX, FAR], np.float32), "pids": np.array([7, 5555]),
         "cam_id": cams[0]},
        {"img_name": "f1", "boxes": np.array([BOX], np.float32), "pids": np.array([7]),
         "cam_id": cams[1]},
        {"img_name": "f2", "boxes": np.array([BOX], np.float32), "pids": np.array([7]),
         "cam_id": cams[2]},
    ]  # fmt: skip


def test_prw_cross_camera_and_queries_without_occurrence():
    recs = records([1, 1, 2])
    queries = [
        {"img_name": "f1", "pid": 7, "cam_id": 1},
        {"img_name": "f0", "pid": 9, "cam_id": 1},  # nobody else shows person 9
    ]
    dets = np.array([BOX + [0.9], FAR + [0.9], BOX + [0.9], BOX + [0.9]])
    feats = np.array([unit(0.9), unit(0.95), unit(0.2), unit(0.4)])
    g = keep_detections(dets, feats, [2, 1, 1], 0.5, cams=[1, 1, 2])
    qf = np.repeat(QUERY, 2, axis=0)
    everyone = search(g, qf, identity_protocol(recs, queries))
    # all gallery: f0 (0.95 N, 0.9 TP), f2 (0.4 TP): AP = (1/2 + 2/3) / 2
    assert everyone["ap"][0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    cross = search(g, qf, identity_protocol(recs, queries, cross_cam=True))
    assert cross["n_gt"][0] == 1 and cross["ap"][0] == pytest.approx(1.0)
    s = summarize(cross)
    assert s["no_gt"] == [1] and s["mAP"] == pytest.approx(1.0)  # query 1 left out


def test_cbgm_raises_the_partner_of_the_matched_query_box():
    # gallery image: A (0.6 to the query, 0 to the context person), B (0.55, 0.95 to the
    # context). Best matching: query-A, context-B -> A's score becomes max(0.6, 0.95)
    ctx = np.array([[1.0, 0, 0], [0, 1.0, 0]], np.float32)
    a, b = [0.6, 0.0, 0.8], [0.55, 0.95, 0.0]
    dets = np.array([BOX + [0.9], FAR + [0.9], FAR + [0.9]])
    feats = np.array([a, b, [0.7, 0, np.sqrt(0.51)]], np.float32)
    g = keep_detections(dets, feats, [2, 1], 0.5)
    p = cuhk_protocol(arrays([[("a", XYWH), ("b", None)]]), ["a", "b", "q"], 50)
    cbgm = Cbgm(k1=10, k2=3, ptr=np.array([0, 2]), feats=ctx)
    plain, rescored = search(g, ctx[:1], p, top=3), search(g, ctx[:1], p, cbgm, top=3)
    assert plain["hits"][0, 0] == 0 and plain["ap"][0] == pytest.approx(0.5)  # 0.7 beats A
    assert rescored["top"][0][0][2] == pytest.approx(0.95) and rescored["top"][0][0][3]
    assert rescored["ap"][0] == pytest.approx(1.0)
    # k1 = 1 revisits only image b (0.7): A keeps its score
    assert search(g, ctx[:1], p, Cbgm(1, 3, cbgm.ptr, ctx))["ap"][0] == pytest.approx(0.5)


def test_detection_one_to_one_and_gt_less_image():
    gt = [np.array([BOX, FAR], np.float32), np.zeros((0, 4), np.float32)]
    pids = [np.array([3, 5555]), np.zeros(0, np.int64)]
    dets = [
        np.array([BOX + [0.9], [12, 12, 60, 110, 0.8]]),  # duplicate of BOX: one TP only
        np.array([FAR + [0.95], BOX + [0.005]]),  # GT-less image: FP; below 0.01: dropped
    ]
    r = eval_detection(gt, pids, dets, det_thresh=0.01)
    # recall 1/2; ranking FP(0.95) TP(0.9) FP(0.8): AP = 1/2 x recall
    assert r["recall"] == 0.5 and r["ap"] == pytest.approx(0.25)
    lab = eval_detection(gt, pids, dets, det_thresh=0.01, labeled_only=True)
    assert lab["recall"] == 1.0 and lab["ap"] == pytest.approx(1.0)  # image 2 skipped
