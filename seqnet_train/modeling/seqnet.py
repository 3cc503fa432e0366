"""SeqNet (Li & Miao, AAAI 2021): detection and re-identification in one network.

Three named entry points instead of a return type that flips with ``self.training``:

- ``model(images, targets)`` in training mode: the dict of the seven weighted losses;
- ``model.predict(images)``: detections + embeddings per gallery image;
- ``model.embed_boxes(images, boxes)``: the query path, embeddings of given boxes.

At inference each image is resized, padded and run through backbone and RPN on its own (so
padding never depends on the other images of a batch); the RoI heads then run on the RoIs of
all images at once.
"""

import torch
from torch import nn


class SeqNet(nn.Module):
    def __init__(self, transform, backbone, rpn, roi_heads, loss_weights):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.loss_weights = dict(loss_weights)

    def forward(self, images, targets):
        """Weighted training losses.

        Args:
            images: list of (3, H, W) float RGB tensors in [0, 1].
            targets: per image ``{"boxes": (N, 4) x1y1x2y2 pixels, "labels": (N,) int64}``,
                labels being training identity indices or ``identities.UNLABELED``.
        """
        if not self.training:
            raise RuntimeError("SeqNet.forward computes losses: call predict() in eval mode")
        images, targets = self.transform(images, targets)
        feats = self.backbone(images.tensors)
        proposals, rpn_losses = self.rpn(images, {"feat_res4": feats}, targets)
        losses = self.roi_heads.losses(feats.split(1), proposals, images.image_sizes, targets)
        losses["loss_rpn_reg"] = rpn_losses["loss_rpn_box_reg"]
        losses["loss_rpn_cls"] = rpn_losses["loss_objectness"]
        return {k: v * self.loss_weights[k] for k, v in losses.items()}

    def _features(self, images, boxes=None):
        """Per image: transformed size, feature map, and ``boxes`` mapped to the transform."""
        sizes, feats, mapped = [], [], []
        for i, image in enumerate(images):
            target = None if boxes is None else [{"boxes": boxes[i].reshape(-1, 4).to(image)}]
            image_list, target = self.transform([image], target)
            sizes.append(image_list.image_sizes[0])
            feats.append((image_list, self.backbone(image_list.tensors)))
            mapped.append(None if target is None else target[0]["boxes"])
        return sizes, feats, mapped

    @torch.inference_mode()
    def predict(self, images, context_boxes=None):
        """Detect and embed everyone in each image.

        Args:
            images: list of (3, H, W) float RGB tensors in [0, 1], any sizes.
            context_boxes: optional list of one (1, 4) box per image (original pixels): the
                query-image-as-gallery mode used by CBGM (box forced first, no CWS).
        Returns:
            Per image ``{"boxes": (N, 4) x1y1x2y2 original pixels, "scores": (N,),
            "labels": (N,) float ones, "embeddings": (N, 256)}``.
        """
        self._require_eval()
        if not images:
            return []
        sizes, feats, context = self._features(images, context_boxes)
        proposals = [self.rpn(il, {"feat_res4": f})[0][0] for il, f in feats]
        dets = self.roi_heads.detect(
            [f for _, f in feats], proposals, sizes, None if context_boxes is None else context
        )
        original = [tuple(img.shape[-2:]) for img in images]
        return self.transform.postprocess(dets, sizes, original)

    @torch.inference_mode()
    def embed_boxes(self, images, boxes):
        """Query path: L2-normalised (k_i, 256) embeddings of the given (k_i, 4) boxes."""
        self._require_eval()
        if not images:
            return []
        _, feats, mapped = self._features(images, boxes)
        _, embeddings, _ = self.roi_heads.embed([f for _, f in feats], mapped)
        return list(embeddings.split([len(b) for b in mapped]))

    def _require_eval(self):
        if self.training:
            raise RuntimeError("call model.eval() before predict() / embed_boxes()")
