"""Training-time transforms on (image, target) pairs; boxes move with the pixels."""

import torch


def hflip(image, target):
    """Mirror a C x H x W image and its x1y1x2y2 boxes left-right."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


class RandomHorizontalFlip:
    """Flip with probability ``p`` (0.5 in the original training).

    Draws from torch's global RNG, which DataLoader seeds differently in each worker.
    """

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, target):
        if torch.rand(1).item() < self.p:
            return hflip(image, target)
        return image, target
