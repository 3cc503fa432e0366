"""ResNet trunk (stem + layer1..3, stride 16) and the layer4 head that both RoI stages copy.

Module and parameter names follow the released checkpoints (``backbone.conv1``, ``...layer4``).
"""

import logging
import os
from collections import OrderedDict
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from seqnet_train.errors import SeqNetError

log = logging.getLogger(__name__)

RESNETS = {  # name -> (torchvision constructor, its ImageNet weights or None)
    "resnet10": (partial(ResNet, BasicBlock, [1, 1, 1, 1]), None),  # one block per stage
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (
        torchvision.models.resnet101,
        torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
    ),
}


class Backbone(nn.Sequential):
    """conv1 .. layer3 of a ResNet: image batch -> ``feat_res4`` (stride 16)."""

    def __init__(self, resnet):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
        super().__init__(OrderedDict((n, getattr(resnet, n)) for n in names))
        self.out_channels = _out_channels(resnet.layer3)


class Res5Head(nn.Sequential):
    """ResNet layer4 on RoI features, returning the max-pooled input and output.

    Both are used downstream: ``feat_res4`` (C4 channels) and ``feat_res5`` (C5 channels),
    each of shape (N, C, 1, 1).
    """

    def __init__(self, layer4):
        super().__init__(OrderedDict(layer4=layer4))
        self.out_channels = [_out_channels_of_input(layer4), _out_channels(layer4)]

    def forward(self, x):
        feat = super().forward(x)
        return OrderedDict(
            feat_res4=F.adaptive_max_pool2d(x, 1), feat_res5=F.adaptive_max_pool2d(feat, 1)
        )


def _out_channels(layer):
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


def _out_channels_of_input(layer):
    return layer[0].conv1.in_channels


def _imagenet_state_dict(name, weights_path):
    """Local ImageNet weights: the given file, else torchvision's cache; never a download."""
    if weights_path:
        path = Path(weights_path)
        if not path.is_file():
            raise SeqNetError(f"MODEL.BACKBONE_WEIGHTS: no such file: {path}")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        return sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    weights = RESNETS[name][1]
    if weights is None:
        log.warning(
            "%s has no published ImageNet weights (MODEL.BACKBONE_WEIGHTS loads your own): "
            "the backbone starts from random init",
            name,
        )
        return None
    cached = Path(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    log.warning(
        "No ImageNet weights for %s (set MODEL.BACKBONE_WEIGHTS or put %s in place): the "
        "backbone starts from random init. Fine when a trained checkpoint is loaded next.",
        name,
        cached,
    )
    return None


def build_resnet(name="resnet50", weights_path="", load_imagenet=True, freeze_stem=True):
    """(Backbone, Res5Head) of a torchvision ResNet; by default the stem is frozen, as in the
    paper (its ImageNet filters are kept). From random init a frozen stem stays random."""
    if name not in RESNETS:
        raise SeqNetError(f"MODEL.BACKBONE {name!r} is not one of {', '.join(RESNETS)}")
    resnet = RESNETS[name][0]()  # random init; ImageNet weights are loaded below, locally
    if load_imagenet:
        sd = _imagenet_state_dict(name, weights_path)
        if sd is not None:
            try:
                resnet.load_state_dict(sd)
            except RuntimeError as e:
                raise SeqNetError(f"ImageNet weights do not fit {name}: {e}") from None
    if freeze_stem:  # the stem's conv and affine BN parameters do not train (as the release)
        for p in (resnet.conv1.weight, resnet.bn1.weight, resnet.bn1.bias):
            p.requires_grad_(False)
    return Backbone(resnet), Res5Head(resnet.layer4)
