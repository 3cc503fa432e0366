"""Torch datasets over records, the detection collate and the inference DataLoader.

An item is ``(image, target)``: image float32 3 x H x W RGB in [0, 1]; target ``{"boxes":
float32 n x 4 x1y1x2y2, "labels": int64 n (training index or UNLABELED), "img_name": str}``.
Resizing and normalisation belong to the model (one place for training and inference). The
training loader, with its resumable order and flips, is ``seqnet_train.engine.data_order``.
"""

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from seqnet_train.data.records import check_images
from seqnet_train.identities import UNLABELED


def read_image(path):
    """RGB float tensor 3 x H x W in [0, 1] (PIL decode; one copy into torch)."""
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255)


class RecordDataset(Dataset):
    """Images and targets of a list of records."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        labels = r.get("labels", np.full(len(r["pids"]), UNLABELED, dtype=np.int64))
        target = {
            "boxes": torch.as_tensor(r["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "img_name": r["img_name"],
        }
        return read_image(r["img_path"]), target


def collate(batch):
    """Detection collate: (tuple of images, tuple of targets); sizes may differ."""
    return tuple(zip(*batch))


def aspect_groups(records):
    """0 for landscape (w >= h) images, 1 for portrait, from the JPEG headers."""
    groups = []
    for r in records:
        with Image.open(r["img_path"]) as im:
            w, h = im.size
        groups.append(0 if w >= h else 1)
    return np.array(groups)


def build_test_loader(cfg, records, sampler=None):
    """Inference DataLoader in record order: INPUT.BATCH_SIZE_TEST, INPUT.NUM_WORKERS_TEST."""
    check_images(records)
    dataset = RecordDataset(records)
    return DataLoader(
        dataset,
        batch_size=cfg.INPUT.BATCH_SIZE_TEST,
        collate_fn=collate,
        sampler=sampler if sampler is not None else SequentialSampler(dataset),
        num_workers=cfg.INPUT.NUM_WORKERS_TEST,
    )
