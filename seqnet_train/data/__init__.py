"""Datasets: CUHK-SYSU, PRW and our JSON format as records, query protocols, and loaders.

Records and the identity convention: ``seqnet_train.data.records`` and ``seqnet_train.identities``.
"""

from seqnet_train.data import cuhk_sysu, json_format, prw
from seqnet_train.data.loader import build_test_loader
from seqnet_train.data.records import check_images, check_lut_size, describe
from seqnet_train.errors import SeqNetError

DATASETS = {"CUHK-SYSU": cuhk_sysu, "PRW": prw, "JSON": json_format}
SPLITS = ("train", "gallery", "query")

__all__ = [
    "DATASETS", "build_test_loader", "check_images", "check_lut_size", "describe",
    "load_cuhk_protocol", "load_queries", "load_split",
]  # fmt: skip


def _module(dataset):
    if dataset not in DATASETS:
        raise SeqNetError(f"unknown INPUT.DATASET {dataset!r}; expected one of {list(DATASETS)}")
    return DATASETS[dataset]


def load_split(dataset, root, split):
    """Records of ``split`` (train, gallery or query), logged as a line of the statistics table.

    Record: ``img_name``, ``img_path``, ``boxes`` (float32 n x 4 x1y1x2y2), ``pids`` (int64 raw
    identities), ``cam_id`` (-1 when none); train records also ``labels`` (seqnet_train.identities).
    """
    if split not in SPLITS:
        raise SeqNetError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    records = _module(dataset).load_split(root, split)
    if not records:
        raise SeqNetError(f"{root}: the {dataset} {split} split is empty")
    describe(records, f"{dataset} {split}")
    return records


def load_cuhk_protocol(root, gallery_size):
    """CUHK-SYSU TestG<gallery_size> (50..4000; -1: TestG50's lists), one dict per query:
    ``{"query": {img_name, box (4,) x1y1x2y2, pid q+1}, "gallery": [{img_name, box | None}]}``."""
    return cuhk_sysu.load_protocol(root, gallery_size)


def load_queries(dataset, root):
    """The queries of a dataset in the ``load_cuhk_protocol`` shape (CUHK-SYSU: TestG50).

    PRW, and JSON queries without a fixed gallery, have ``"gallery": None`` (implicit gallery)
    and ``cam_id`` in the query dict.
    """
    if dataset == "CUHK-SYSU":
        return cuhk_sysu.load_protocol(root, 50)
    return _module(dataset).load_queries(root)
