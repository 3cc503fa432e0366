"""A tiny, fast SeqNet configuration and random inputs for CPU tests."""

import torch

from seqnet_train.config import load_cfg
from seqnet_train.modeling import build_model

TINY_OPTS = [
    "DEVICE", "cpu",
    "MODEL.BACKBONE", "resnet18",
    "INPUT.MIN_SIZE", "128",
    "INPUT.MAX_SIZE", "192",
    "MODEL.RPN.PRE_NMS_TOPN_TRAIN", "300",
    "MODEL.RPN.POST_NMS_TOPN_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPN_TEST", "200",
    "MODEL.RPN.POST_NMS_TOPN_TEST", "50",
    "MODEL.ROI_HEAD.BATCH_SIZE_TRAIN", "32",
    "MODEL.ROI_HEAD.POOL_SIZE", "[6, 3]",  # tall RoIs: 4x cheaper RoI heads than 14x14 (CI time)
    "MODEL.LOSS.LUT_SIZE", "8",
    "MODEL.LOSS.CQ_SIZE", "16",
]  # fmt: skip


def tiny_model(*opts, seed=0):
    torch.manual_seed(seed)
    cfg = load_cfg(None, TINY_OPTS + list(opts))
    return build_model(cfg, load_imagenet=False)


def tiny_batch(seed=0, n_images=2):
    """Images with a few people each: labelled ids 0..3 and one unlabelled (-1)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for i in range(n_images):
        images.append(torch.rand(3, 120 + 8 * i, 160, generator=g))
        boxes = torch.tensor([[10.0, 10.0, 50.0, 100.0], [60.0, 20.0, 100.0, 110.0],
                              [110.0, 15.0, 150.0, 105.0]])  # fmt: skip
        targets.append({"boxes": boxes, "labels": torch.tensor([i, i + 2, -1])})
    return images, targets
