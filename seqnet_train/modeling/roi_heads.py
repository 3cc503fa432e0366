"""SeqNet's two sequential RoI stages, composed from torchvision's detection parts.

Stage 1 (Faster R-CNN head) refines RPN proposals into person boxes; stage 2 (baseline head)
re-pools those boxes, refines them again and embeds them (NAE). Features come as one map per
image, so the heads run on the RoIs of all images at once while each image keeps its own
feature map and size: results never depend on how images were batched.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import boxes as box_ops

from custom_ops import batched_nms
from seqnet_train.identities import UNLABELED


class SeqRoIHeads(nn.Module):
    def __init__(
        self,
        *,
        box_roi_pool,
        box_head,
        reid_head,
        faster_rcnn_predictor,
        box_predictor,
        embedding_head,
        reid_loss,
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=128,
        positive_fraction=0.5,
        score_thresh=0.5,
        nms_thresh=0.4,
        nms_thresh_refined=0.5,
        detections_per_img=300,
    ):
        super().__init__()
        self.box_roi_pool = box_roi_pool
        self.box_head = box_head
        self.reid_head = reid_head
        self.faster_rcnn_predictor = faster_rcnn_predictor
        self.box_predictor = box_predictor
        self.embedding_head = embedding_head
        self.reid_loss = reid_loss
        self.proposal_matcher = det_utils.Matcher(fg_iou_thresh, bg_iou_thresh, False)
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction
        )
        self.box_coder = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        # Refined boxes overlap more than proposals, hence a higher NMS threshold (paper, 3.3).
        self.nms_thresh_refined = nms_thresh_refined
        self.detections_per_img = detections_per_img

    # ------------------------------------------------------------------ shared pieces ---- #
    def pool(self, features, boxes):
        """RoIAlign each image's boxes on its own (1, C, H, W) map; (sum N_i, C, *POOL_SIZE)."""
        return self.box_roi_pool(features, boxes)

    def embed(self, features, boxes):
        """Stage-2 features of given boxes: (reid-head features, embeddings, person logits)."""
        feats = self.reid_head(self.pool(features, boxes))
        embeddings, logits = _fp32(self.embedding_head, feats)
        return feats, embeddings, logits

    def _decode_person(self, deltas, boxes, image_shapes):
        """Class-1 (person) boxes from (N, 8) deltas, clipped to each image; one tensor each."""
        counts = [len(b) for b in boxes]
        decoded = self.box_coder.decode(deltas, boxes).reshape(-1, 2, 4)[:, 1]
        return [
            box_ops.clip_boxes_to_image(b, s) for b, s in zip(decoded.split(counts), image_shapes)
        ]

    # ------------------------------------------------------------------ inference ------- #
    def detect(self, features, proposals, image_shapes, context=None):
        """Detections per image: dicts ``boxes`` (transformed-image coords), ``scores``,
        ``labels``, ``embeddings``.

        ``context`` (one (1, 4) box per image, transformed coords) switches to the
        query-image-as-gallery mode: the box is appended with score 1 and its own embedding
        before the final NMS, and the confidence weighting (CWS) is off.
        """
        counts = [len(p) for p in proposals]
        stage1 = self.box_head(self.pool(features, proposals))
        class_logits, deltas = _fp32(self.faster_rcnn_predictor, stage1["feat_res5"])
        scores = F.softmax(class_logits, -1)[:, 1].split(counts)
        boxes = self._decode_person(deltas, proposals, image_shapes)
        firsts = [self._filter(b, s) for b, s in zip(boxes, scores)]
        boxes = [boxes[i][k] for i, k in enumerate(firsts)]
        fcs = [scores[i][k] for i, k in enumerate(firsts)]  # first classification scores

        n_det = [len(b) for b in boxes]
        rois = boxes if context is None else [torch.cat([b, c]) for b, c in zip(boxes, context)]
        if sum(len(r) for r in rois):
            feats, embeddings, _ = self.embed(features, rois)
            refined = _fp32(self.box_predictor, feats["feat_res5"])
        else:
            embeddings = features[0].new_zeros(0, self.embedding_head.dim)
            refined = features[0].new_zeros(0, 8)
        rois_per_image = [len(r) for r in rois]
        embeddings = embeddings.split(rois_per_image)
        refined = refined.split(rois_per_image)

        results = []
        for i, n in enumerate(n_det):
            box = self._decode_person(refined[i][:n], [boxes[i]], [image_shapes[i]])[0]
            score, emb = fcs[i], embeddings[i][:n]
            if context is None:
                emb = emb * score[:, None]  # confidence-weighted similarity (CWS)
            keep = score > self.score_thresh
            box, score, emb = box[keep], score[keep], emb[keep]
            keep = box_ops.remove_small_boxes(box, min_size=1e-2)
            box, score, emb = box[keep], score[keep], emb[keep]
            if context is not None:
                box = torch.cat([box, context[i]])
                score = torch.cat([score, score.new_ones(1)])
                emb = torch.cat([emb, embeddings[i][n:]])
            keep = batched_nms(box, score, torch.ones_like(score), self.nms_thresh_refined)
            keep = keep[: self.detections_per_img]
            results.append(
                dict(
                    boxes=box[keep],
                    scores=score[keep],
                    labels=torch.ones_like(score[keep]),
                    embeddings=emb[keep],
                )
            )
        return results

    def _filter(self, boxes, scores):
        """Indices kept by score > threshold, min size, NMS and the per-image cap (as
        torchvision's ``RoIHeads.postprocess_detections``)."""
        keep = torch.where(scores > self.score_thresh)[0]
        keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
        labels = torch.ones_like(scores[keep])
        keep = keep[batched_nms(boxes[keep], scores[keep], labels, self.nms_thresh)]
        return keep[: self.detections_per_img]

    # ------------------------------------------------------------------ training -------- #
    def sample(self, proposals, targets):
        """Sample RoIs per image (+ GT boxes) as torchvision's RoIHeads does.

        Returns the sampled boxes, their person mask, identity indices (``UNLABELED`` for
        unlabelled people; meaningless where the mask is false) and regression targets,
        each concatenated over images.
        """
        rois, fg, ids, reg_targets = [], [], [], []
        for props, t in zip(proposals, targets):
            gt_boxes = t["boxes"].to(props.dtype)
            props = torch.cat([props, gt_boxes])
            if gt_boxes.numel():
                matched = self.proposal_matcher(box_ops.box_iou(gt_boxes, props))
            else:
                matched = torch.full((len(props),), -1, dtype=torch.long, device=props.device)
            labels = (matched >= 0).long()
            labels[matched == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1
            pos, neg = self.fg_bg_sampler([labels])
            idx = torch.where(pos[0] | neg[0])[0]
            match = matched[idx].clamp(min=0)
            gt = gt_boxes if gt_boxes.numel() else props.new_zeros(1, 4)
            person_ids = t["labels"] if len(t["labels"]) else match.new_full((1,), UNLABELED)
            rois.append(props[idx])
            fg.append(labels[idx] > 0)
            ids.append(person_ids[match])
            reg_targets.append(self.box_coder.encode_single(gt[match], props[idx]))
        return rois, torch.cat(fg), torch.cat(ids), torch.cat(reg_targets)

    def losses(self, features, proposals, image_shapes, targets):
        """The five RoI losses of SeqNet (SPEC: losses), unweighted."""
        rois, fg, _, reg_targets = self.sample(proposals, targets)
        stage1 = self.box_head(self.pool(features, rois))
        class_logits, deltas = _fp32(self.faster_rcnn_predictor, stage1["feat_res5"])
        boxes = [b.detach() for b in self._decode_person(deltas, rois, image_shapes)]

        boxes, box_fg, box_ids, box_reg_targets = self.sample(boxes, targets)
        feats, embeddings, logits = self.embed(features, boxes)
        box_deltas = _fp32(self.box_predictor, feats["feat_res5"])
        return {
            "loss_proposal_cls": F.cross_entropy(class_logits, fg.long()),
            "loss_proposal_reg": _person_box_loss(deltas, reg_targets, fg),
            "loss_box_cls": F.binary_cross_entropy_with_logits(logits, box_fg.float()),
            "loss_box_reg": _person_box_loss(box_deltas, box_reg_targets, box_fg),
            "loss_box_reid": self.reid_loss(embeddings[box_fg], box_ids[box_fg]),
        }


def _fp32(head, x):
    """Run a small head in fp32 even under autocast: box deltas decoded in bf16 are off by
    pixels, and the embedding's norm is the person logit."""
    if isinstance(x, dict):
        device = next(iter(x.values())).device.type
        x = {k: v.float() for k, v in x.items()}
    else:
        device, x = x.device.type, x.float()
    with torch.autocast(device, enabled=False):
        return head(x)


def _person_box_loss(deltas, targets, fg):
    """Smooth-L1 on the person deltas of foreground RoIs, summed, over all sampled RoIs."""
    person = deltas.reshape(len(deltas), -1, 4)[fg, 1]
    return F.smooth_l1_loss(person, targets[fg], beta=1.0, reduction="sum") / max(len(fg), 1)
