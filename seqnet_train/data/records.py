"""The record every loader returns, and the checks and statistics shared by all datasets.

A record: ``img_name`` (str), ``img_path`` (str), ``boxes`` (float32 n x 4, x1y1x2y2),
``pids`` (int64 n, identities as in the files, ``RAW_UNLABELED`` for unlabelled people),
``cam_id`` (int, -1 when the dataset has none); training records add ``labels`` (int64 n:
contiguous index 0..K-1 of the labelled identity, or ``UNLABELED``).
"""

import logging

import numpy as np

from seqnet_runtime.images import check_images as check_image_files
from seqnet_train.errors import SeqNetError
from seqnet_train.identities import RAW_QUERY_DUMMY, RAW_UNLABELED, UNLABELED

log = logging.getLogger(__name__)


def make_record(img_name, img_path, boxes, pids, cam_id=-1):
    """A record with the canonical dtypes (boxes float32 n x 4 x1y1x2y2, pids int64)."""
    return {
        "img_name": img_name,
        "img_path": str(img_path),
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "pids": np.asarray(pids, dtype=np.int64).reshape(-1),
        "cam_id": int(cam_id),
    }


def drop_degenerate(records, source):
    """Drop boxes with no area (x2 <= x1 or y2 <= y1) in place, logging how many went."""
    dropped = 0
    for r in records:
        b = r["boxes"]
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        if not keep.all():
            dropped += int((~keep).sum())
            for key in ("boxes", "pids", "labels"):
                if key in r:
                    r[key] = r[key][keep]
    if dropped:
        log.info("%s: dropped %d degenerate boxes (zero width or height)", source, dropped)
    return records


def is_labelled(pids):
    """Boolean mask of raw pids that name a person (not unlabelled, not the query dummy)."""
    pids = np.asarray(pids)
    return (pids != RAW_UNLABELED) & (pids != RAW_QUERY_DUMMY)


def add_train_labels(records):
    """Give each training record ``labels``: labelled pids in sorted order -> 0..K-1.

    Raw identities need not be contiguous (PRW: 1..478, 480..483, 932); the index is.
    """
    all_pids = np.concatenate([r["pids"] for r in records]) if records else np.zeros(0, np.int64)
    ids = np.unique(all_pids[is_labelled(all_pids)])
    for r in records:
        labels = np.full(len(r["pids"]), UNLABELED, dtype=np.int64)
        mask = is_labelled(r["pids"])
        labels[mask] = np.searchsorted(ids, r["pids"][mask])
        r["labels"] = labels
    return records


def statistics(records):
    """Counts for the statistics table: images, boxes, labelled identities, unlabelled boxes."""
    pids = np.concatenate([r["pids"] for r in records]) if records else np.zeros(0, np.int64)
    return {
        "images": len(records),
        "boxes": int(len(pids)),
        "identities": int(len(np.unique(pids[is_labelled(pids)]))),
        "unlabelled": int((pids == RAW_UNLABELED).sum()),
    }


def describe(records, name):
    """Log one line of the statistics table for the split ``name``; return its counts."""
    s = statistics(records)
    log.info(
        "%-22s %7d images %8d boxes %6d labelled identities %7d unlabelled boxes",
        name,
        s["images"],
        s["boxes"],
        s["identities"],
        s["unlabelled"],
    )
    return s


def check_lut_size(lut_size, records):
    """SeqNetError when the OIM lookup table has fewer rows than labelled training identities."""
    n = statistics(records)["identities"]
    if lut_size < n:
        raise SeqNetError(
            f"MODEL.LOSS.LUT_SIZE is {lut_size} but the training split has {n} labelled "
            f"identities; set MODEL.LOSS.LUT_SIZE {n} or more"
        )


def check_images(records, limit=10):
    """SeqNetError listing (up to ``limit``) images that are missing or not readable images."""
    check_image_files([r["img_path"] for r in records], limit)
