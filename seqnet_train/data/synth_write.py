"""Write a planned synthetic dataset in the exact on-disk layouts of CUHK-SYSU, PRW (the
``scipy.io.loadmat`` structures of ``DATASETS.md``, as in ``evalgold/``) or our JSON format."""

import io
from pathlib import Path

import numpy as np
import scipy.io

from seqnet_train.data import json_format
from seqnet_train.data.records import make_record
from seqnet_train.data.synth_draw import render
from seqnet_train.data.synth_world import appearances, choose_queries
from seqnet_train.identities import RAW_UNLABELED

CUHK_GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)
HEADER = b"MATLAB 5.0 MAT-file, written by seqnet synth".ljust(116)  # no date: same bytes per seed


def savemat(path, variables):
    """``scipy.io.savemat`` with a fixed header text, so equal inputs give equal bytes."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables)
    data = buf.getvalue()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(HEADER + data[116:])


def struct(rows, fields):
    """A MATLAB struct array (1, n) from dicts (values: arrays or strings)."""
    arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        arr[0, i] = tuple(np.array([row[f]]) if isinstance(row[f], str) else row[f] for f in fields)
    return arr


def cell(items):
    """A MATLAB cell column (n, 1)."""
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = np.array([item]) if isinstance(item, str) else item
    return out


def _xywh(box):
    x1, y1, x2, y2 = box
    return np.array([[x1, y1, x2 - x1, y2 - y1]], dtype=np.float64)


def _jpeg(streams, frame, cams, size, path):
    people = [(p.box, p.look, p.mirror) for p in frame.people]
    path.parent.mkdir(parents=True, exist_ok=True)
    render(streams.of(frame.split), cams[frame.cam], size, people).save(path, quality=90)


def write_cuhk(streams, out, frames, cams, size):
    """Image/SSM/s<k>.jpg and annotation/{Images,pool,Person}.mat, Train.mat, TestG*.mat."""
    order = streams.world.permutation(len(frames))
    names = {f.index: f"s{k + 1}.jpg" for f, k in zip(frames, order)}
    for f in frames:
        _jpeg(streams, f, cams, size, out / "Image" / "SSM" / names[f.index])
    anno = out / "annotation"
    by_number = sorted(frames, key=lambda f: int(names[f.index][1:-4]))

    def boxes(f):
        return struct(
            [{"idlocate": _xywh(p.box), "ishard": np.zeros((1, 1))} for p in f.people],
            ["idlocate", "ishard"],
        )

    img = [
        {"imname": names[f.index], "nAppear": np.array([[float(len(f.people))]]), "box": boxes(f)}
        for f in by_number
    ]
    savemat(anno / "Images.mat", {"Img": struct(img, ["imname", "nAppear", "box"])})
    test = [f for f in frames if f.split == "test"]
    savemat(anno / "pool.mat", {"pool": cell([names[f.index] for f in test])})

    def person(pid, seen):
        scene = struct(
            [
                {"imname": names[f.index], "idlocate": _xywh(p.box), "ishard": np.zeros((1, 1))}
                for f, p in seen
            ],
            ["imname", "idlocate", "ishard"],
        )
        return {"idname": f"p{pid}", "nAppear": np.array([[float(len(seen))]]), "scene": scene}

    pids = sorted({p.pid for f in frames for p in f.people if p.pid is not None})
    people = {pid: person(pid, appearances(frames, pid)) for pid in pids}
    savemat(
        anno / "Person.mat",
        {"Person": struct([people[i] for i in pids], ["idname", "nAppear", "scene"])},
    )
    train_ids = sorted({p.pid for f in frames if f.split == "train" for p in f.people if p.pid})
    train = cell([struct([people[i]], ["idname", "nAppear", "scene"]) for i in train_ids])
    savemat(anno / "test" / "train_test" / "Train.mat", {"Train": train})
    test_ids = sorted({p.pid for f in test for p in f.people if p.pid})
    queries = choose_queries(streams.test, test, test_ids)
    for g in CUHK_GALLERY_SIZES:
        rows = [_cuhk_query(streams.test, test, names, pid, qf, qp, g) for pid, qf, qp in queries]
        savemat(
            anno / "test" / "train_test" / f"TestG{g}.mat",
            {f"TestG{g}": struct(rows, ["Query", "Gallery"])},
        )


def _cuhk_query(rng, test, names, pid, qframe, qperson, gallery_size):
    """One TestG row: the query, then its other appearances (with box), then distinct
    negatives, ``gallery_size`` entries at most (capped by the pool, as in the real files)."""
    query = struct(
        [
            {
                "imname": names[qframe.index],
                "idlocate": _xywh(qperson.box),
                "ishard": np.zeros((1, 1)),
                "idname": f"p{pid}",
            }
        ],
        ["imname", "idlocate", "ishard", "idname"],
    )
    pos = [(f, p) for f, p in appearances(test, pid) if f is not qframe]
    neg = [f for f in test if f is not qframe and all(p.pid != pid for p in f.people)]
    neg = [neg[i] for i in rng.permutation(len(neg))[: max(gallery_size - len(pos), 0)]]
    empty = np.zeros((1, 0))
    entries = [
        {"imname": names[f.index], "idlocate": _xywh(p.box), "ishard": np.zeros((1, 1))}
        for f, p in pos
    ]
    entries += [{"imname": names[f.index], "idlocate": empty, "ishard": empty} for f in neg]
    return {
        "Query": query,
        "Gallery": struct(entries[:gallery_size], ["imname", "idlocate", "ishard"]),
    }


def _prw_name(f):
    return f"c{f.cam + 1}s{1 + f.index % 2}_{(f.index * 37 + 13) % 1_000_000:06d}"


def _prw_rows(rng, f):
    """[id x y w h] rows with fractional coordinates; -2 = unlabelled (as PRW)."""
    rows = []
    for p in f.people:
        x1, y1, x2, y2 = p.box
        jitter = np.round(rng.uniform(-0.5, 0.5, 4), 2)
        rows.append(
            [-2 if p.pid is None else p.pid, *(np.array([x1, y1, x2 - x1, y2 - y1]) + jitter)]
        )
    return np.array(rows, dtype=np.float64)


def write_prw(streams, out, frames, cams, size):
    """frames/*.jpg, annotations/*.jpg.mat (all three box keys), frame/ID lists, query_info.txt."""
    rows = {}
    for f in frames:
        name = _prw_name(f)
        _jpeg(streams, f, cams, size, out / "frames" / f"{name}.jpg")
        rows[f.index] = _prw_rows(streams.of(f.split), f)
        # the published files use three keys; some carry a stale anno_previous beside box_new
        variables = {"anno_file" if f.index % 7 == 3 else "box_new": rows[f.index]}
        if f.index % 11 == 5:
            variables["anno_previous"] = rows[f.index][::-1] + 3.0
        savemat(out / "annotations" / f"{name}.jpg.mat", variables)
    for split, key, id_var in (("train", "train", "ID_train"), ("test", "test", "ID_test2")):
        part = [f for f in frames if f.split == split]
        savemat(out / f"frame_{key}.mat", {f"img_index_{key}": cell([_prw_name(f) for f in part])})
        ids = sorted({p.pid for f in part for p in f.people if p.pid})
        savemat(out / f"ID_{key}.mat", {id_var: np.array([ids], dtype=np.float64)})
    test = [f for f in frames if f.split == "test"]
    test_ids = sorted({p.pid for f in test for p in f.people if p.pid})
    lines = []
    for pid, f, p in choose_queries(streams.test, test, test_ids, per_id=2):
        row = rows[f.index][f.people.index(p)]
        lines.append(
            " ".join([str(pid), *(str(round(float(v), 2)) for v in row[1:]), _prw_name(f)])
        )
    (out / "query_info.txt").write_bytes("".join(line + "\r\n" for line in lines).encode())


def write_json(streams, out, frames, cams, size):
    """images/*.jpg and dataset.json (queries with an implicit gallery: all gallery images)."""
    images, records = [], {}
    for f in frames:
        name = f"img{f.index + 1:05d}.jpg"
        _jpeg(streams, f, cams, size, out / "images" / name)
        pids = [RAW_UNLABELED if p.pid is None else p.pid for p in f.people]
        records[f.index] = make_record(
            name, out / "images" / name, [p.box for p in f.people], pids, f.cam
        )
        images.append((records[f.index], "train" if f.split == "train" else "gallery"))
    test = [f for f in frames if f.split == "test"]
    test_ids = sorted({p.pid for f in test for p in f.people if p.pid})
    queries = [
        {
            "query": {
                "img_name": records[f.index]["img_name"],
                "box": p.box,
                "pid": pid,
                "cam_id": f.cam,
            },
            "gallery": None,
        }
        for pid, f, p in choose_queries(streams.test, test, test_ids)
    ]
    json_format.write(out / "dataset.json", images, queries)


WRITERS = {"cuhk-sysu": write_cuhk, "prw": write_prw, "json": write_json}
