"""Every quirk of DATASETS.md on hand-made files, and each bad input failing with one clear line."""

import logging

import numpy as np
import pytest
import scipy.io
from PIL import Image

from seqnet_train.data import check_images, check_lut_size, load_cuhk_protocol, load_split
from seqnet_train.data.cuhk_sysu import load_subset
from seqnet_train.data.synth_write import cell, savemat, struct
from seqnet_train.errors import SeqNetError
from seqnet_train.identities import UNLABELED


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQNET_CACHE_DIR", str(tmp_path / "cache"))


def _one(v):
    return np.array([[float(v)]])


def _box(*xywh):
    return np.array([xywh], dtype=np.float64)


# --------------------------------------------------------------- CUHK-SYSU --- #
IMAGES = {  # name -> boxes [x, y, w, h]; s1 has a zero-width box
    "s1.jpg": [(10, 10, 20, 40), (50, 5, 0, 30)],
    "s2.jpg": [(5, 5, 20, 40)],
    "s10.jpg": [(1, 2, 30, 60), (40, 2, 30, 60)],
    "s3.jpg": [(7, 7, 20, 40)],
    "s4.jpg": [(8, 8, 22, 44), (60, 8, 20, 40)],
}
POOL = ["s4.jpg", "s3.jpg"]


def _cuhk(root, train=None, query_box=(8, 8, 22, 44), images=IMAGES):
    anno = root / "annotation"
    img = [
        {
            "imname": n,
            "nAppear": _one(len(b)),
            "box": struct(
                [{"idlocate": _box(*x), "ishard": _one(0)} for x in b], ["idlocate", "ishard"]
            ),
        }
        for n, b in images.items()
    ]
    savemat(anno / "Images.mat", {"Img": struct(img, ["imname", "nAppear", "box"])})
    savemat(anno / "pool.mat", {"pool": cell(POOL)})
    scene = lambda rows: struct(  # noqa: E731
        [{"imname": n, "idlocate": _box(*b), "ishard": _one(0)} for n, b in rows],
        ["imname", "idlocate", "ishard"],
    )
    train = train or [
        [("s10.jpg", (40, 2, 30, 60)), ("s2.jpg", (5, 5, 20, 40))],
        [("s1.jpg", (10, 10, 20, 40))],
    ]  # person 2: in one image only
    people = [
        struct(
            [{"idname": f"p{j}", "nAppear": _one(len(r)), "scene": scene(r)}],
            ["idname", "nAppear", "scene"],
        )
        for j, r in enumerate(train)
    ]
    savemat(anno / "test/train_test/Train.mat", {"Train": cell(people)})
    query = struct(
        [{"imname": "s4.jpg", "idlocate": _box(*query_box), "ishard": _one(0), "idname": "p9"}],
        ["imname", "idlocate", "ishard", "idname"],
    )
    empty = np.zeros((1, 0))
    gallery = struct(
        [
            {"imname": "s3.jpg", "idlocate": _box(7, 7, 20, 40), "ishard": _one(0)},
            {"imname": "s1.jpg", "idlocate": empty, "ishard": empty},
        ],
        ["imname", "idlocate", "ishard"],
    )
    savemat(
        anno / "test/train_test/TestG50.mat",
        {"TestG50": struct([{"Query": query, "Gallery": gallery}], ["Query", "Gallery"])},
    )
    return root


def test_cuhk_train_order_labels_and_single_image_identity(tmp_path, caplog):
    root = _cuhk(tmp_path)
    with caplog.at_level(logging.INFO):
        train = load_split("CUHK-SYSU", root, "train")
    assert [r["img_name"] for r in train] == ["s1.jpg", "s10.jpg", "s2.jpg"]  # string order
    assert "dropped 1 zero-size boxes" in caplog.text
    s1, s10, s2 = train
    np.testing.assert_array_equal(s1["boxes"], [[10, 10, 30, 50]])  # xywh -> x1y1x2y2
    assert s1["pids"].tolist() == [2] and s1["labels"].tolist() == [1]
    assert s10["pids"].tolist() == [5555, 1] and s10["labels"].tolist() == [UNLABELED, 0]
    assert s2["pids"].tolist() == [1]
    assert "5 images" not in caplog.text and "CUHK-SYSU train" in caplog.text  # statistics line


def test_cuhk_gallery_and_query(tmp_path):
    root = _cuhk(tmp_path)
    gallery = load_split("CUHK-SYSU", root, "gallery")
    assert [r["img_name"] for r in gallery] == POOL  # pool order
    assert gallery[0]["pids"].tolist() == [1, 5555] and gallery[1]["pids"].tolist() == [1]
    (query,) = load_split("CUHK-SYSU", root, "query")
    assert query["pids"].tolist() == [-100] and query["boxes"].tolist() == [[8, 8, 30, 52]]
    (proto,) = load_cuhk_protocol(root, 50)
    assert proto["query"]["pid"] == 1 and proto["gallery"][1]["box"] is None
    assert proto["gallery"][0]["box"].tolist() == [7, 7, 27, 47]


def test_cuhk_protocol_box_matching_no_image_box(tmp_path):
    root = _cuhk(tmp_path, query_box=(9, 9, 22, 44))
    with pytest.raises(SeqNetError, match=r"TestG50.mat: box \[9, 9, 22, 44\] of id 1 in s4.jpg"):
        load_split("CUHK-SYSU", root, "gallery")


def test_cuhk_train_box_matching_no_image_box(tmp_path):
    root = _cuhk(tmp_path, train=[[("s2.jpg", (6, 5, 20, 40))]])
    with pytest.raises(SeqNetError, match="Train.mat: box .* matches no box"):
        load_split("CUHK-SYSU", root, "train")


def test_cuhk_missing_root_and_files(tmp_path):
    with pytest.raises(SeqNetError, match="root folder not found"):
        load_split("CUHK-SYSU", tmp_path / "nope", "train")
    root = _cuhk(tmp_path)
    (root / "annotation/pool.mat").unlink()
    with pytest.raises(SeqNetError, match=r"pool.mat: .*not found"):
        load_split("CUHK-SYSU", root, "gallery")
    with pytest.raises(SeqNetError, match=r"TestG100.mat: .*not found"):
        load_cuhk_protocol(root, 100)
    with pytest.raises(SeqNetError, match="gallery size 77"):
        load_cuhk_protocol(root, 77)


def test_cuhk_unexpected_mat_structure(tmp_path):
    root = _cuhk(tmp_path)
    savemat(root / "annotation/Images.mat", {"Img": np.zeros((3, 3))})
    with pytest.raises(SeqNetError, match=r"Images.mat: expected 'Img' to be a struct"):
        load_split("CUHK-SYSU", root, "train")
    savemat(root / "annotation/Images.mat", {"Images": np.zeros((3, 3))})
    with pytest.raises(
        SeqNetError, match=r"Images.mat: expected a variable Img, found \['Images'\]"
    ):
        load_split("CUHK-SYSU", root, "train")
    savemat(root / "annotation/test/train_test/TestG50.mat", {"TestG50": np.zeros(3)})
    with pytest.raises(SeqNetError, match=r"TestG50.mat: expected 'TestG50' to be a struct"):
        load_cuhk_protocol(root, 50)
    bad = struct([{"Query": np.zeros((1, 4)), "Gallery": np.zeros(2)}], ["Query", "Gallery"])
    savemat(root / "annotation/test/train_test/TestG50.mat", {"TestG50": bad})
    with pytest.raises(SeqNetError, match=r"TestG50.mat: unexpected structure"):
        load_cuhk_protocol(root, 50)
    (root / "annotation/test/train_test/TestG50.mat").write_bytes(b"not a mat file")
    with pytest.raises(SeqNetError, match=r"TestG50.mat: expected a little-endian MAT v5 file"):
        load_cuhk_protocol(root, 50)


# --------------------------------------------------------------------- PRW --- #
def _prw(root, query_text):
    files = {  # frame -> {key: rows [id, x, y, w, h]}
        "c1s1_000100": {
            "box_new": [[1, 10.6, 20.2, 30.5, 60.9], [-2, -5.5, 3.0, 20.0, 40.0]],
            "anno_previous": [[7, 0, 0, 5, 5]],
        },  # stale: box_new wins
        "c2s1_000200": {"anno_file": [[932, 1, 1, 10, 20]]},
        "c3s2_000300": {"anno_previous": [[480, 4, 4, 10, 20], [3, 7, 7, -8, 20]]},  # degenerate
        "c6s1_000400": {"box_new": [[932, 2, 2, 12, 22]]},
    }
    for name, variables in files.items():
        savemat(
            root / "annotations" / f"{name}.jpg.mat",
            {k: np.array(v, dtype=np.float64) for k, v in variables.items()},
        )
    savemat(root / "frame_train.mat", {"img_index_train": cell(list(files)[:3])})
    savemat(root / "frame_test.mat", {"img_index_test": cell(list(files)[3:])})
    (root / "query_info.txt").write_bytes(query_text)
    return root


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_prw_keys_clipping_ids_and_line_endings(tmp_path, caplog, ending):
    text = ending.join(
        [b"932 -41.78 228.0 234.0 539.0 c6s1_000400", b"5 2.5 3.9 10.2 20.7 c1s1_000100"]
    )
    root = _prw(tmp_path, text)  # no final newline
    with caplog.at_level(logging.INFO):
        train = load_split("PRW", root, "train")
    a, b, c = train
    assert [r["cam_id"] for r in train] == [1, 2, 3]
    # gallery/train: clip x, y, w, h at 0, then x2 = x + w, truncate
    assert a["boxes"].tolist() == [[10, 20, 41, 81], [0, 3, 20, 43]]
    assert a["pids"].tolist() == [1, 5555]
    assert b["pids"].tolist() == [932] and c["pids"].tolist() == [480]
    assert "dropped 1 degenerate boxes" in caplog.text
    # non-contiguous identities get a contiguous training index
    assert [r["labels"].tolist() for r in train] == [[0, UNLABELED], [2], [1]]
    q1, q2 = load_split("PRW", root, "query")
    # query: x2 = x + w, truncate, then clip: -41.78 -> -41 -> 0, x2 = 192.22 -> 192
    assert q1["boxes"].tolist() == [[0, 228, 192, 767]] and q1["pids"].tolist() == [932]
    assert q1["img_name"] == "c6s1_000400.jpg" and q1["cam_id"] == 6
    assert q2["boxes"].tolist() == [[2, 3, 12, 24]]


def test_prw_bad_inputs(tmp_path):
    root = _prw(tmp_path, b"1 2 3 4 5 c1s1_000100\r\nnot a line\r\n")
    with pytest.raises(SeqNetError, match=r"query_info.txt:2: expected 'pid x y w h frame'"):
        load_split("PRW", root, "query")
    savemat(root / "annotations/c1s1_000100.jpg.mat", {"boxes": np.zeros((1, 5))})
    with pytest.raises(SeqNetError, match=r"c1s1_000100.jpg.mat: expected a variable box_new or"):
        load_split("PRW", root, "train")
    savemat(root / "annotations/c1s1_000100.jpg.mat", {"box_new": np.zeros((1, 4))})
    with pytest.raises(SeqNetError, match=r"expected rows \[id x y w h\] \(n x 5\)"):
        load_split("PRW", root, "train")
    (root / "annotations/c2s1_000200.jpg.mat").unlink()
    with pytest.raises(SeqNetError, match=r"c2s1_000200.jpg.mat: PRW frame annotation not found"):
        load_split("PRW", root, "train")
    (root / "frame_test.mat").unlink()
    with pytest.raises(SeqNetError, match=r"frame_test.mat: PRW frame list .* not found"):
        load_split("PRW", root, "gallery")


# ------------------------------------------------------------ shared checks --- #
def test_missing_and_unreadable_images_listed_up_front(tmp_path):
    records = [{"img_path": str(tmp_path / f"m{i}.jpg")} for i in range(12)]
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    records += [{"img_path": str(tmp_path / "ok.jpg")}, {"img_path": str(tmp_path / "broken.jpg")}]
    with pytest.raises(SeqNetError) as e:
        check_images(records)
    msg = str(e.value)
    assert msg.startswith("13 of 14 images missing or unreadable") and "and 3 more" in msg
    assert msg.count("(missing)") == 10 and "\n" not in msg
    check_images(records[12:13])  # a readable image passes


def test_lut_size_too_small(tmp_path):
    train = load_split("CUHK-SYSU", _cuhk(tmp_path), "train")
    check_lut_size(2, train)
    with pytest.raises(SeqNetError, match="LUT_SIZE is 1 but the training split has 2 labelled"):
        check_lut_size(1, train)


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(SeqNetError, match="unknown INPUT.DATASET"):
        load_split("Market", tmp_path, "train")
    with pytest.raises(SeqNetError, match="unknown split"):
        load_split("PRW", tmp_path, "val")


def test_cuhk_occlusion_and_resolution_subsets(tmp_path):
    root = _cuhk(tmp_path)
    protocol = root / "annotation/test/train_test/TestG50.mat"
    for rel, var in (("Occlusion.mat", "Occlusion1"), ("Resolution.mat", "Test_Size")):
        rows = scipy.io.loadmat(protocol)["TestG50"]
        savemat(root / "annotation/test/subset" / rel, {var: rows})
    (occ,) = load_subset(root, "occlusion")
    (res,) = load_subset(root, "resolution")
    assert occ["query"]["img_name"] == res["query"]["img_name"] == "s4.jpg"
    assert [g["img_name"] for g in occ["gallery"]] == ["s3.jpg", "s1.jpg"]
    with pytest.raises(SeqNetError, match="unknown CUHK-SYSU subset"):
        load_subset(root, "night")
