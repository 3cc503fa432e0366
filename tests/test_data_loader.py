"""Flip, DataLoaders, aspect-ratio grouping and the MAT v5 protocol reader's edge cases."""

import io

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from seqnet_train.config import get_default_cfg
from seqnet_train.data import build_test_loader, mat5
from seqnet_train.data.loader import RecordDataset
from seqnet_train.data.records import make_record
from seqnet_train.data.synth_write import struct
from seqnet_train.data.transforms import hflip
from seqnet_train.engine.data_order import EpochBatches, build_loader
from seqnet_train.errors import SeqNetError


def _records(tmp_path, sizes):
    out = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (w, h), (255, 0, 0)).save(path)
        r = make_record(path.name, path, [[1, 2, 11, 22], [3, 3, 6, 9]], [7, 5555])
        r["labels"] = np.array([0, -1])
        out.append(r)
    return out


def test_hflip_moves_boxes_with_pixels():
    image = torch.zeros(3, 4, 10)
    image[:, :, 1] = 1  # column 1 lit
    target = {"boxes": torch.tensor([[1.0, 0.0, 3.0, 4.0]]), "labels": torch.tensor([2])}
    flipped, t = hflip(image, target)
    assert flipped[0, 0, 8] == 1 and flipped[0, 0, 1] == 0  # column 1 -> column 8
    assert t["boxes"].tolist() == [[7.0, 0.0, 9.0, 4.0]] and t["labels"].tolist() == [2]
    assert target["boxes"].tolist() == [[1.0, 0.0, 3.0, 4.0]]  # input untouched


def test_item_and_test_loader(tmp_path):
    records = _records(tmp_path, [(40, 30), (30, 40), (50, 20)])
    image, target = RecordDataset(records)[0]
    assert image.dtype == torch.float32 and image.shape == (3, 30, 40)
    assert 0.9 < image[0].mean() <= 1 and image[1].mean() < 0.1  # RGB order, [0, 1]
    assert target["boxes"].dtype == torch.float32 and target["labels"].tolist() == [0, -1]
    cfg = get_default_cfg()
    cfg.INPUT.NUM_WORKERS_TEST, cfg.INPUT.BATCH_SIZE_TEST = 0, 2
    batches = list(build_test_loader(cfg, records))
    assert [len(b[0]) for b in batches] == [2, 1]
    assert [t["img_name"] for b in batches for t in b[1]] == ["0.jpg", "1.jpg", "2.jpg"]


def _train_loader(records, batch, world_size=1, rank=0, grouping=False, workers=0):
    cfg = get_default_cfg()
    cfg.INPUT.NUM_WORKERS_TRAIN, cfg.INPUT.BATCH_SIZE_TRAIN = workers, batch
    cfg.INPUT.ASPECT_RATIO_GROUPING = grouping
    return build_loader(cfg, records, rank, world_size)


def test_train_loader_flips_half_by_epoch_and_position(tmp_path):
    records = _records(tmp_path, [(40, 30)] * 8)
    loader, batches = _train_loader(records, 4)

    def first_boxes(epoch):
        batches.set_epoch(epoch)
        return [t["boxes"][0, 0].item() for _, ts in loader for t in ts]

    x1 = [x for epoch in range(5) for x in first_boxes(epoch)]
    assert set(x1) == {1.0, 29.0} and 0.3 < x1.count(29.0) / len(x1) < 0.7
    assert first_boxes(3) == first_boxes(3) and first_boxes(3) != first_boxes(4)


def test_persistent_workers_see_each_epoch(tmp_path):
    records = _records(tmp_path, [(40, 30)] * 6)
    seen = {}
    for workers in (0, 1):
        loader, batches = _train_loader(records, 3, workers=workers)
        seen[workers] = []
        for epoch in range(3):
            batches.set_epoch(epoch)
            seen[workers] += [t["boxes"][0, 0].item() for _, ts in loader for t in ts]
    assert seen[0] == seen[1]


def test_train_batches_shard_like_a_distributed_sampler(tmp_path):
    records = _records(tmp_path, [(40, 30)] * 7)
    shards = []
    for rank in range(2):
        _, batches = _train_loader(records, 2, world_size=2, rank=rank)
        batches.set_epoch(1)
        shards.append([i for batch in batches for _, i in batch])
    assert len(shards[0]) == len(shards[1]) == 4  # 7 images padded to 8
    assert set(shards[0] + shards[1]) == set(range(7))
    batches.set_epoch(1, start=1)  # a resumed epoch starts at its next batch
    assert [i for batch in batches for _, i in batch] == shards[1][2:]


def test_aspect_ratio_grouping(tmp_path):
    records = _records(tmp_path, [(40, 30), (30, 40), (40, 30), (30, 40), (40, 30)])
    loader, batches = _train_loader(records, 2, grouping=True)
    shapes = [[im.shape[1] > im.shape[2] for im in images] for images, _ in loader]
    assert all(len(set(b)) == 1 for b in shapes) and sum(map(len, shapes)) == 5
    assert len(batches) == 3 == len(shapes)
    # Two ranks, three images each: {1, 2, 3} makes 3 batches of 2, {0, 0, 0} only 2.
    groups, uneven = np.array([0, 1, 2, 3, 0, 0]), 0
    for seed in range(40):
        ranks = [EpochBatches(6, 2, seed, rank, 2, groups) for rank in range(2)]
        assert len(ranks[0]) == len(ranks[1])  # as many steps on every rank (DDP would hang)
        own = [r._group([i for b in r._batches() for _, i in b][:3]) for r in ranks]
        uneven += len(own[0]) != len(own[1])
    assert uneven  # some epochs needed the repeated batches


def test_loader_checks_images_first(tmp_path):
    records = _records(tmp_path, [(40, 30)])
    records[0]["img_path"] = str(tmp_path / "gone.jpg")
    with pytest.raises(SeqNetError, match="1 of 1 images missing or unreadable: .*gone.jpg"):
        build_test_loader(get_default_cfg(), records)


def _protocol_bytes(compress):
    empty = np.zeros((1, 0))
    rows = []
    for q in range(3):
        gallery = [
            {
                "imname": f"s{q}{k}.jpg",
                "idlocate": np.array([[k, 2.5, 3, 4]]),
                "ishard": np.zeros((1, 1)),
            }
            for k in range(2)
        ]
        gallery += [{"imname": "s1.jpg", "idlocate": empty, "ishard": empty}] * 2
        query = struct(
            [{"imname": f"q{q}.jpg", "idlocate": np.array([[q, 1, 2, 3]])}], ["imname", "idlocate"]
        )
        rows.append({"Query": query, "Gallery": struct(gallery, ["imname", "idlocate", "ishard"])})
    buf = io.BytesIO()
    scipy.io.savemat(
        buf, {"other": np.ones(3), "P": struct(rows, ["Query", "Gallery"])}, do_compression=compress
    )
    return buf.getvalue()


@pytest.mark.parametrize("compress", [False, True])
def test_mat5_reads_struct_arrays_like_loadmat(tmp_path, compress):
    path = tmp_path / "p.mat"
    path.write_bytes(_protocol_bytes(compress))
    rows = list(mat5.iter_struct(path, "P"))
    assert len(rows) == 3
    for q, row in enumerate(rows):
        query, gallery = mat5.decode_struct(row["Query"]), mat5.decode_struct(row["Gallery"])
        assert query["imname"].strings().tolist() == [f"q{q}.jpg"]
        assert query["idlocate"].numbers(4).tolist() == [[q, 1, 2, 3]]
        assert gallery["imname"].strings().tolist() == [
            f"s{q}0.jpg",
            f"s{q}1.jpg",
            "s1.jpg",
            "s1.jpg",
        ]
        boxes = gallery["idlocate"].numbers(4)
        assert boxes[:2].tolist() == [[0, 2.5, 3, 4], [1, 2.5, 3, 4]] and np.isnan(boxes[2:]).all()
    with pytest.raises(SeqNetError, match="expected a variable 'Q'"):
        list(mat5.iter_struct(path, "Q"))
    path.write_bytes(_protocol_bytes(compress)[:-40])
    with pytest.raises(SeqNetError, match="unexpected MAT structure"):
        list(mat5.iter_struct(path, "P"))


def test_mat5_walks_the_chain_when_data_mimics_a_tag():
    # a double whose bytes look like [miMATRIX tag, flags tag] must not be taken for a field
    fake = np.frombuffer(np.array([14, 40, 6, 8], "<u4").tobytes(), "<f8")
    value = np.array([[fake[0], fake[1], 0.0, 0.0]])
    body = io.BytesIO()
    scipy.io.savemat(body, {"S": struct([{"a": value, "b": np.array(["x.jpg"])}] * 2, ["a", "b"])})
    data = body.getvalue()[128 + 8 :]
    cols = mat5.decode_struct(data)
    np.testing.assert_array_equal(cols["a"].numbers(4), np.vstack([value, value]))
    assert cols["b"].strings().tolist() == ["x.jpg", "x.jpg"]
    with pytest.raises(ValueError, match="do not chain"):
        mat5.decode_struct(data[: len(data) // 2])
