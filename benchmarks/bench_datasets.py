"""Time the dataset loaders on full-scale synthetic annotations; print the results as JSON.

Writes CUHK-SYSU (18,184 images, ~96k boxes, 5,532 training identities, 2,900 queries,
TestG50..4000) and PRW (11,816 frames, 2,057 queries) annotation files into a temporary folder
(no image pixels: loading reads annotations only), then times each split and the protocols in a
fresh process each, first with an empty parse cache, then cached. Usage:
``python bench/bench_datasets.py [--json FILE] [--keep DIR]``.
"""

import argparse
import io
import json
import resource
import shutil
import struct as st
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io

from seqnet_train.data.synth_write import cell, savemat, struct

N_IMAGES, N_POOL, N_TRAIN_IDS, N_QUERIES = 18_184, 6_978, 5_532, 2_900
N_FRAMES, N_TRAIN_FRAMES, N_PRW_QUERIES = 11_816, 5_704, 2_057
GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)


# ---- a fast MAT v5 writer for the huge protocol files (savemat would need >10 GB) ----------- #
def _element(typ, payload):
    return st.pack("<II", typ, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _matrix(cls, dims, *parts, name=b""):
    body = (
        _element(6, st.pack("<II", cls, 0))
        + _element(5, st.pack("<ii", *dims))
        + _element(1, name)
        + b"".join(parts)
    )
    return st.pack("<II", 14, len(body)) + body


def _chars(s):
    return _matrix(4, (1, len(s)), _element(16, s.encode()))


def _doubles(values):
    return _matrix(6, (1, len(values)), _element(9, np.asarray(values, "<f8").tobytes()))


def _struct_header(n, fields, name=b""):
    width = max(map(len, fields)) + 1
    names = b"".join(f.encode().ljust(width, b"\0") for f in fields)
    return (
        _element(6, st.pack("<II", 2, 0))
        + _element(5, st.pack("<ii", 1, n))
        + _element(1, name)
        + st.pack("<HHi", 5, 4, width)
        + _element(1, names)
    )


def _struct(n, fields, children):
    body = _struct_header(n, fields) + children
    return st.pack("<II", 14, len(body)) + body


def _write_protocol(path, var, n_rows, row):
    """``row(q)`` -> (query name, query box, gallery bytes, gallery length); streamed to
    ``path`` in two passes (sizes, then bytes), so memory holds one row at a time."""
    head = io.BytesIO()
    scipy.io.savemat(head, {"x": np.zeros(1)})

    def child(q):
        qname, qbox, gallery, n = row(q)
        query = _struct(
            1,
            ["imname", "idlocate", "ishard", "idname"],
            _chars(qname) + _doubles(qbox) + _doubles([0]) + _chars("p"),
        )
        return query + _struct(n, ["imname", "idlocate", "ishard"], gallery)

    header = _struct_header(n_rows, ["Query", "Gallery"], var.encode())
    size = len(header) + sum(len(child(q)) for q in range(n_rows))
    with open(path, "wb") as f:
        f.write(head.getvalue()[:128] + st.pack("<II", 14, size) + header)
        for q in range(n_rows):
            f.write(child(q))


# ---- full-scale annotation sets --------------------------------------------------------------- #
def write_cuhk(root, rng):
    names = [f"s{i + 1}.jpg" for i in range(N_IMAGES)]
    counts = rng.integers(1, 10, N_IMAGES)  # ~96k boxes
    boxes = [
        np.column_stack([rng.integers(0, 800, (k, 2)), rng.integers(20, 300, (k, 2))]).astype(float)
        for k in counts
    ]
    anno = root / "annotation"
    img = [
        {
            "imname": n,
            "nAppear": np.array([[float(len(b))]]),
            "box": struct(
                [{"idlocate": x[None], "ishard": np.zeros((1, 1))} for x in b],
                ["idlocate", "ishard"],
            ),
        }
        for n, b in zip(names, boxes)
    ]
    savemat(anno / "Images.mat", {"Img": struct(img, ["imname", "nAppear", "box"])})
    order = rng.permutation(N_IMAGES)
    pool, train_imgs = order[:N_POOL], order[N_POOL:]
    savemat(anno / "pool.mat", {"pool": cell([names[i] for i in pool])})

    def draw_boxes(images, n):  # n distinct (image, box) pairs, each in a distinct image
        chosen = rng.choice(images, n, replace=False)
        return [(int(i), int(rng.integers(counts[i]))) for i in chosen]

    train = []
    for j in range(N_TRAIN_IDS):
        seen = draw_boxes(train_imgs, int(rng.integers(1, 5)))
        scene = struct(
            [
                {"imname": names[i], "idlocate": boxes[i][k][None], "ishard": np.zeros((1, 1))}
                for i, k in seen
            ],
            ["imname", "idlocate", "ishard"],
        )
        train.append(
            struct(
                [{"idname": f"p{j}", "nAppear": np.array([[float(len(seen))]]), "scene": scene}],
                ["idname", "nAppear", "scene"],
            )
        )
    savemat(anno / "test/train_test/Train.mat", {"Train": cell(train)})

    empty = _doubles([])
    negative = {int(i): _chars(names[i]) + empty + empty for i in pool}
    queries = []
    for _ in range(N_QUERIES):
        seen = draw_boxes(pool, int(rng.integers(2, 5)))
        (qi, qk), pos = seen[0], seen[1:]
        pos_bytes = [_chars(names[i]) + _doubles(boxes[i][k]) + _doubles([0]) for i, k in pos]
        used = {i for i, _ in seen}
        negs = rng.permutation(pool)[: max(GALLERY_SIZES) + 8]
        queries.append((names[qi], boxes[qi][qk], pos_bytes, negs[~np.isin(negs, list(used))]))
    for g in GALLERY_SIZES:

        def row(q, g=g):
            qn, qb, pos, negs = queries[q]
            return qn, qb, b"".join(pos + [negative[i] for i in negs[: g - len(pos)].tolist()]), g

        _write_protocol(anno / f"test/train_test/TestG{g}.mat", f"TestG{g}", len(queries), row)


def write_prw(root, rng):
    names = [f"c{1 + i % 6}s{1 + i % 4}_{i * 7:06d}" for i in range(N_FRAMES)]
    rows = {}
    for n in names:
        k = int(rng.integers(1, 8))
        ids = np.where(rng.random(k) < 0.3, -2, rng.integers(1, 933, k))
        rows[n] = np.column_stack(
            [
                ids,
                rng.uniform(-5, 1800, k),
                rng.uniform(0, 900, k),
                rng.uniform(20, 200, k),
                rng.uniform(50, 500, k),
            ]
        )
        savemat(root / "annotations" / f"{n}.jpg.mat", {"box_new": rows[n]})
    savemat(root / "frame_train.mat", {"img_index_train": cell(names[:N_TRAIN_FRAMES])})
    savemat(root / "frame_test.mat", {"img_index_test": cell(names[N_TRAIN_FRAMES:])})
    lines = []
    for n in rng.choice(names[N_TRAIN_FRAMES:], N_PRW_QUERIES):
        pid, x, y, w, h = rows[n][0]
        lines.append(f"{int(abs(pid))} {x:.2f} {y:.2f} {w:.2f} {h:.2f} {n}\r\n")
    (root / "query_info.txt").write_text("".join(lines), newline="")


# ---- measurements, each in a fresh process ---------------------------------------------------- #
def measure(what, root):
    """Run one measurement here; return seconds and this process's peak memory."""
    from seqnet_train.data import cuhk_sysu, load_cuhk_protocol, load_split

    kind, arg = what.split(":")
    t = time.perf_counter()
    if kind == "splits":
        for split in ("train", "gallery", "query"):
            load_split(arg, root, split)
    elif kind == "arrays":
        cuhk_sysu.protocol_arrays(root, int(arg))
    else:
        load_cuhk_protocol(root, int(arg))
    seconds = time.perf_counter() - t
    return {
        "seconds": round(seconds, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def _run(what, root, cache):
    out = subprocess.run(
        [sys.executable, __file__, "--measure", what, "--root", str(root)],
        capture_output=True,
        text=True,
        check=True,
        env={"SEQNET_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--keep", help="write the annotation sets here (kept) instead of a temp dir")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.root)))
        return
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench_datasets."))
    rng = np.random.default_rng(0)
    results = {}
    try:
        t = time.perf_counter()
        cuhk, prw, cache = base / "CUHK-SYSU", base / "PRW", base / "cache"
        if not cuhk.exists():
            write_cuhk(cuhk, rng)
            write_prw(prw, rng)
        results["write_seconds"] = round(time.perf_counter() - t, 1)
        for dataset, root in (("CUHK-SYSU", cuhk), ("PRW", prw)):
            results[f"{dataset} train+gallery+query first"] = _run(f"splits:{dataset}", root, cache)
            results[f"{dataset} train+gallery+query cached"] = _run(
                f"splits:{dataset}", root, cache
            )
        for g in GALLERY_SIZES:
            if g != 50:
                results[f"TestG{g} arrays first"] = _run(f"arrays:{g}", cuhk, cache)
            results[f"TestG{g} arrays cached"] = _run(f"arrays:{g}", cuhk, cache)
        results["TestG4000 load_cuhk_protocol (dicts) cached"] = _run("dicts:4000", cuhk, cache)
        results["TestG4000.mat GB"] = round(
            (cuhk / "annotation/test/train_test/TestG4000.mat").stat().st_size / 1e9, 2
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
