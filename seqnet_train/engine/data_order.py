"""Training data whose order and augmentation are pure functions of (seed, epoch, position).

That is what makes a resumed run see exactly the batches the uninterrupted run would have
seen: an epoch's permutation and each image's flip come from generators seeded by the epoch,
never from the global RNG or a worker's, and a resumed epoch starts at its next batch. The
epoch travels with each index, so the loader's workers can persist across epochs.
"""

import zlib

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from seqnet_train.data.loader import RecordDataset, aspect_groups, collate
from seqnet_train.data.records import check_images
from seqnet_train.data.transforms import hflip


def _generator(*keys):
    g = torch.Generator()
    g.manual_seed(zlib.crc32(repr(keys).encode()))  # not hash(): str hashes vary by process
    return g


class EpochBatches(Sampler):
    """Batches of ``(epoch, record index)`` for one epoch on one rank, from batch ``start`` on.

    What DistributedSampler + BatchSampler do, made resumable: one permutation per epoch
    seeded by (seed, epoch), padded so that every rank gets as many images, each rank taking
    every ``world_size``-th. With ``groups`` (a group per record, e.g. its aspect ratio) each
    batch holds a single group (less padding); ranks are evened out by repeating batches.
    """

    def __init__(self, n, batch_size, seed, rank=0, world_size=1, groups=None):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.groups = groups
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = epoch, start

    def _batches(self):
        order = torch.randperm(self.n, generator=_generator(self.seed, self.epoch)).tolist()
        per_rank = -(-self.n // self.world_size)  # pad so every rank takes as many steps
        order = (order * 2)[: per_rank * self.world_size]
        ranks = [self._group(order[r :: self.world_size]) for r in range(self.world_size)]
        mine = ranks[self.rank]
        mine = (mine * 2)[: max(map(len, ranks))]
        return [[(self.epoch, i) for i in batch] for batch in mine]

    def _group(self, order):
        if self.groups is None:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches, buckets = [], {}
        for i in order:
            bucket = buckets.setdefault(self.groups[i], [])
            bucket.append(i)
            if len(bucket) == self.batch_size:
                batches.append(bucket[:])
                bucket.clear()
        return batches + [b for b in buckets.values() if b]  # each group's remainder

    def __iter__(self):
        yield from self._batches()[self.start :]

    def __len__(self):
        return len(self._batches()) - self.start


class FlipByPosition(Dataset):
    """Horizontal flip with probability 0.5, decided by (seed, epoch, index)."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, i = key
        image, target = self.dataset[i]
        if torch.rand(1, generator=_generator(self.seed, epoch, i)).item() < 0.5:
            return hflip(image, target)
        return image, target


def build_loader(cfg, records, rank=0, world_size=1):
    """(DataLoader, its EpochBatches): INPUT.BATCH_SIZE_TRAIN per rank, INPUT.NUM_WORKERS_TRAIN,
    INPUT.ASPECT_RATIO_GROUPING; call ``set_epoch`` on the batches before each epoch.

    Images are checked up front: a missing or unreadable one fails before training starts.
    """
    check_images(records)
    groups = aspect_groups(records) if cfg.INPUT.ASPECT_RATIO_GROUPING else None
    batches = EpochBatches(
        len(records), cfg.INPUT.BATCH_SIZE_TRAIN, cfg.SEED, rank, world_size, groups
    )
    workers = cfg.INPUT.NUM_WORKERS_TRAIN
    loader = DataLoader(
        FlipByPosition(RecordDataset(records), cfg.SEED),
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,  # no worker start-up at every epoch
        generator=_generator(cfg.SEED, "workers"),  # never draws from the global RNG
    )
    return loader, batches
