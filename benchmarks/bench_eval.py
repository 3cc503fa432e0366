"""Time every search protocol on full-scale synthetic outputs, with and without CBGM.

Sizes as the real test sets: CUHK-SYSU 6,978 gallery images (~42k detections), 2,900 queries,
TestG50..4000 and the whole pool; PRW 6,112 frames (~28k detections), 2,057 queries, 6
cameras. Protocol structures are synthesised in memory. Prints (and with --json writes) JSON.
Targets (issue 4): CUHK-SYSU G100 <= 0.35 s, PRW <= 8 s, each with CBGM <= 2x that.

    python bench/bench_eval.py [--quick] [--json OUT]
"""

import argparse
import json
import time

import numpy as np
import torch
from machine import cpu_name

from seqnet_train.evaluation.search import Cbgm, Protocol, keep_detections, search, summarize

DIM = 256


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synth_gallery(rng, num_images, dets_per_image, num_people, cams=None):
    """Detections, features and the identity of each detection (-1: nobody we search)."""
    counts = rng.poisson(dets_per_image, num_images).clip(1, None)
    n = int(counts.sum())
    xy = rng.uniform(0, 800, (n, 2))
    wh = rng.uniform(30, 200, (n, 2))
    dets = np.c_[xy, xy + wh, rng.uniform(0.3, 1.0, n)].astype(np.float32)
    who = np.where(rng.random(n) < 0.3, rng.integers(0, num_people, n), -1)
    people = _unit(rng.standard_normal((num_people, DIM)))
    feats = _unit(
        np.where(who[:, None] >= 0, people[who], 0) + 0.05 * rng.standard_normal((n, DIM))
    )
    return counts, dets, feats, who, people


def query_side(rng, people, pid, k2):
    """Query box features and the query images' context (query first, k2 - 1 others)."""
    q = _unit(people[pid] + 0.05 * rng.standard_normal((len(pid), DIM)))
    ctx = _unit(rng.standard_normal((len(pid), k2, DIM)))
    ctx[:, 0] = q
    return q, Cbgm(k1=0, k2=k2, ptr=np.arange(len(pid) + 1) * k2, feats=ctx.reshape(-1, DIM))


def occurrences(counts, dets, who, pid):
    """(query, image, GT box) for every image showing each query's person."""
    image = np.repeat(np.arange(len(counts)), counts)
    rows = np.flatnonzero(who >= 0)
    by_person = {}
    for r in rows:
        by_person.setdefault(int(who[r]), []).append(r)
    gq, gi, gb = [], [], []
    for q, p in enumerate(pid):
        for r in by_person.get(int(p), []):
            gq.append(q), gi.append(image[r]), gb.append(dets[r, :4] + 2)
    return np.array(gq), np.array(gi), np.array(gb, np.float64)


def cuhk(rng, quick):
    nq, ni = (290, 698) if quick else (2900, 6978)
    counts, dets, feats, who, people = synth_gallery(rng, ni, 6, nq)
    pid = np.arange(nq)
    gq, gi, gb = occurrences(counts, dets, who, pid)
    keep = np.r_[True, (gq[1:] != gq[:-1]) | (gi[1:] != gi[:-1])]
    gq, gi, gb = gq[keep], gi[keep], gb[keep]
    own = rng.integers(0, ni, nq)
    qf, cbgm = query_side(rng, people, pid, 3)
    gallery = keep_detections(dets, feats, counts, 0.5)
    out, t0 = {}, time.perf_counter()
    protocols = {}
    for size in (50, 100, 500, 1000, 2000, 4000, -1):
        n_gt = np.bincount(gq, minlength=nq)
        p = Protocol(f"G{size}" if size > 0 else "all", n_gt, gq, gi, gb)
        if size == -1:
            p.exclude_image = own
        else:  # the person's images first, then random others up to the gallery size
            lists = []
            for q in range(nq):
                pos = gi[gq == q]
                others = rng.choice(ni, min(size, ni), replace=False)
                others = others[~np.isin(others, np.r_[pos, own[q]])]
                lists.append(np.r_[pos, others][: min(size, ni - 1)])
            p.gallery_ptr = np.r_[0, np.cumsum([len(x) for x in lists])]
            p.gallery_image = np.concatenate(lists)
        protocols[p.name] = p
    out["build_protocols_s"] = time.perf_counter() - t0
    out["detections"] = len(dets)
    out["kept_detections"] = len(gallery.image)
    cbgm.k1 = 10
    for name, p in protocols.items():
        out[name] = _time(gallery, qf, p, cbgm)
    out["all_sizes_s"] = sum(out[n]["s"] for n in protocols)
    out["all_sizes_cbgm_s"] = sum(out[n]["cbgm_s"] for n in protocols)
    return out


def prw(rng, quick):
    nq, ni = (206, 611) if quick else (2057, 6112)
    counts, dets, feats, who, people = synth_gallery(rng, ni, 4.6, 450)
    cams = rng.integers(1, 7, ni)
    pid = rng.integers(0, 450, nq)
    own = rng.integers(0, ni, nq)
    qf, cbgm = query_side(rng, people, pid, 4)
    gq, gi, gb = occurrences(counts, dets, who, pid)
    keep = np.r_[True, (gq[1:] != gq[:-1]) | (gi[1:] != gi[:-1])] & (gi != own[gq])
    gq, gi, gb = gq[keep], gi[keep], gb[keep]
    gallery = keep_detections(dets, feats, counts, 0.5, cams=cams)
    cbgm.k1 = 30
    out = {"detections": len(dets), "kept_detections": len(gallery.image)}
    p = Protocol("all", np.bincount(gq, minlength=nq), gq, gi, gb, exclude_image=own)
    out["all"] = _time(gallery, qf, p, cbgm)
    cross = cams[gi] != cams[own][gq]
    qcams = cams[own]
    p = Protocol("cross_cam", np.bincount(gq[cross], minlength=nq), gq[cross], gi[cross],
                 gb[cross], exclude_image=own, query_cams=qcams)  # fmt: skip
    out["cross_cam"] = _time(gallery, qf, p, cbgm)
    return out


def _time(gallery, qf, protocol, cbgm):
    t = time.perf_counter()
    plain = summarize(search(gallery, qf, protocol))
    mid = time.perf_counter()
    rescored = summarize(search(gallery, qf, protocol, cbgm))
    end = time.perf_counter()
    return {"s": round(mid - t, 3), "cbgm_s": round(end - mid, 3),
            "mAP": round(plain["mAP"], 4), "cbgm_mAP": round(rescored["mAP"], 4)}  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the queries and images")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    result = {
        "machine": {"cpu": cpu_name(),
                    "torch_threads": torch.get_num_threads()},
        "quick": args.quick,
        "cuhk_sysu": cuhk(rng, args.quick),
        "prw": prw(rng, args.quick),
        "targets_s": {"cuhk_G100": 0.35, "cuhk_G100_cbgm": 0.7, "prw": 8, "prw_cbgm": 16},
    }  # fmt: skip
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
