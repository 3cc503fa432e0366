"""Training data whose order and augmentation are pure functions of (seed, epoch, position).

That is what makes a resumed run see exactly the batches the uninterrupted run would have
seen: an epoch's permutation and each image's flip come from generators seeded by the epoch,
never from the global RNG or a worker's, and a resumed epoch starts at its next batch.
"""

import zlib

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from seqnet.data.loader import RecordDataset, collate
from seqnet.data.records import check_images
from seqnet.data.transforms import hflip


def _generator(*keys):
    g = torch.Generator()
    g.manual_seed(zlib.crc32(repr(keys).encode()))  # not hash(): str hashes vary by process
    return g


class EpochBatches(Sampler):
    """Batches of record indices for one epoch on one rank, from batch ``start`` on."""

    def __init__(self, n, batch_size, seed, rank=0, world_size=1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = epoch, start

    def _batches(self):
        order = torch.randperm(self.n, generator=_generator(self.seed, self.epoch)).tolist()
        per_rank = -(-self.n // self.world_size)  # pad so every rank takes as many steps
        order = (order * 2)[: per_rank * self.world_size][self.rank :: self.world_size]
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __iter__(self):
        yield from self._batches()[self.start :]

    def __len__(self):
        return len(self._batches()) - self.start


class FlipByPosition(Dataset):
    """Horizontal flip with probability 0.5, decided by (seed, epoch, index)."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, target = self.dataset[i]
        if torch.rand(1, generator=_generator(self.seed, self.epoch, i)).item() < 0.5:
            return hflip(image, target)
        return image, target


def build_loader(cfg, records, rank=0, world_size=1):
    """(DataLoader, its EpochBatches, its FlipByPosition); call ``set_epoch`` on both."""
    check_images(records)
    dataset = FlipByPosition(RecordDataset(records), cfg.SEED)
    batches = EpochBatches(len(records), cfg.INPUT.BATCH_SIZE_TRAIN, cfg.SEED, rank, world_size)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=cfg.INPUT.NUM_WORKERS_TRAIN,
        generator=_generator(cfg.SEED, "workers"),  # never draws from the global RNG
    )
    return loader, batches, dataset
