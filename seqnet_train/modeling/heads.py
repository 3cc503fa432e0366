"""The small heads on pooled RoI features: norm-aware embedding and the BN-neck box regressor."""

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import init


def _linear_bn(in_features, out_features):
    """Linear + BatchNorm1d, weights ~ N(0, 0.01), biases 0 (as the release)."""
    block = nn.Sequential(nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features))
    for m in block:
        init.normal_(m.weight, std=0.01)
        init.constant_(m.bias, 0)
    return block


class NormAwareEmbedding(nn.Module):
    """NAE (Chen et al., CVPR 2020): split a 256-d embedding into its norm and its direction.

    Projects ``feat_res4`` and ``feat_res5`` to 128-d each (res4 part first), concatenates
    them, and returns (L2-normalised embeddings (N, 256), person logits (N,)), the logit being
    the embedding's norm through a BatchNorm1d(1) "rescaler".
    """

    def __init__(self, in_channels=(1024, 2048), dim=256):
        super().__init__()
        self.dim = dim
        part = dim // len(in_channels)
        self.projectors = nn.ModuleDict(
            OrderedDict(
                (name, _linear_bn(c, part))
                for name, c in zip(("feat_res4", "feat_res5"), in_channels)
            )
        )
        self.rescaler = nn.BatchNorm1d(1, affine=True)

    def forward(self, featmaps):
        parts = [proj(featmaps[name].flatten(1)) for name, proj in self.projectors.items()]
        embeddings = torch.cat(parts, dim=1)
        norms = embeddings.norm(2, 1, keepdim=True)
        embeddings = embeddings / norms.clamp(min=1e-12)
        logits = self.rescaler(norms).squeeze(1)
        return embeddings, logits


class BBoxRegressor(nn.Module):
    """Second-stage box deltas (N, 4 * num_classes), with the paper's BN neck by default."""

    def __init__(self, in_channels, num_classes=2, bn_neck=True):
        super().__init__()
        if bn_neck:
            self.bbox_pred = _linear_bn(in_channels, 4 * num_classes)
        else:
            self.bbox_pred = nn.Linear(in_channels, 4 * num_classes)
            init.normal_(self.bbox_pred.weight, std=0.01)
            init.constant_(self.bbox_pred.bias, 0)

    def forward(self, x):
        return self.bbox_pred(x.flatten(1))
