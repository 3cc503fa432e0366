"""Torch datasets and DataLoaders over records: detection collate, flips, aspect-ratio batches.

An item is ``(image, target)``: image float32 3 x H x W RGB in [0, 1]; target ``{"boxes":
float32 n x 4 x1y1x2y2, "labels": int64 n (training index or UNLABELED), "img_name": str}``.
Resizing and normalisation belong to the model (one place for training and inference).
"""

import numpy as np
import torch
from PIL import Image
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from seqnet.data.records import check_images
from seqnet.data.transforms import RandomHorizontalFlip
from seqnet.identities import UNLABELED


def read_image(path):
    """RGB float tensor 3 x H x W in [0, 1] (PIL decode; one copy into torch)."""
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255)


class RecordDataset(Dataset):
    """Images and targets of a list of records; ``transform(image, target)`` applied if given."""

    def __init__(self, records, transform=None):
        self.records, self.transform = records, transform

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
        image = read_image(r["img_path"])
        return self.transform(image, target) if self.transform else (image, target)


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


class GroupedBatchSampler(BatchSampler):
    """Batches drawn from ``sampler`` whose images share an aspect group (less padding).

    Leftovers of each group are yielded at the end, so every index appears once per epoch.
    """

    def __init__(self, sampler, groups, batch_size):
        super().__init__(sampler, batch_size, drop_last=False)
        self.groups = groups

    def __iter__(self):
        buckets = {}
        for i in self.sampler:
            bucket = buckets.setdefault(self.groups[i], [])
            bucket.append(i)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()
        yield from (b for b in buckets.values() if b)

    def __len__(self):
        counts = np.bincount(self.groups[list(self.sampler)]) if len(self.groups) else []
        return int(sum((c + self.batch_size - 1) // self.batch_size for c in counts))


def build_train_loader(cfg, records, sampler=None, generator=None):
    """Training DataLoader: flip 0.5, INPUT.BATCH_SIZE_TRAIN, INPUT.NUM_WORKERS_TRAIN.

    ``sampler``: e.g. a DistributedSampler (default: random); call its ``set_epoch`` yourself.
    Images are checked up front: a missing or unreadable one fails before training starts.
    """
    check_images(records)
    dataset = RecordDataset(records, RandomHorizontalFlip(0.5))
    sampler = sampler if sampler is not None else RandomSampler(dataset, generator=generator)
    batch = cfg.INPUT.BATCH_SIZE_TRAIN
    if cfg.INPUT.ASPECT_RATIO_GROUPING:
        batch_sampler = GroupedBatchSampler(sampler, aspect_groups(records), batch)
    else:
        batch_sampler = BatchSampler(sampler, batch, drop_last=False)
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate,
        num_workers=cfg.INPUT.NUM_WORKERS_TRAIN,
        generator=generator,
    )


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
