"""torchvision's detection parts with their NMS on the toolkit's kernels.

``RegionProposalNetwork``: torchvision's, whose proposal filter (top-k per level, clip, small
and low-scoring boxes out, NMS, the best ``post_nms_top_n``) runs ``custom_ops.batched_nms``:
torchvision's proposals to the index, ties included, with any number of candidates (the
default 6000 before NMS at test time is above TensorRT's TopK and NMS limits). Same
parameters, same state dict; where the kernels are not built it is torchvision's RPN.
"""

import torch
from torchvision.models.detection import rpn
from torchvision.ops import boxes as box_ops

from custom_ops import batched_nms


class RegionProposalNetwork(rpn.RegionProposalNetwork):
    def filter_proposals(self, proposals, objectness, image_shapes, num_anchors_per_level):
        """As torchvision's ``filter_proposals``, the NMS step from custom_ops."""
        num_images = proposals.shape[0]
        objectness = objectness.detach().reshape(num_images, -1)
        levels = torch.cat(
            [
                torch.full((n,), i, dtype=torch.int64, device=proposals.device)
                for i, n in enumerate(num_anchors_per_level)
            ]
        )
        levels = levels.reshape(1, -1).expand_as(objectness)
        top = self._get_top_n_idx(objectness, num_anchors_per_level)  # per level, torch.topk
        rows = torch.arange(num_images, device=proposals.device)[:, None]
        objectness, levels, proposals = (
            objectness[rows, top],
            levels[rows, top],
            proposals[rows, top],
        )
        scores_all = torch.sigmoid(objectness)

        final_boxes, final_scores = [], []
        for boxes, scores, level, shape in zip(proposals, scores_all, levels, image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            keep = box_ops.remove_small_boxes(boxes, self.min_size)
            boxes, scores, level = boxes[keep], scores[keep], level[keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores, level = boxes[keep], scores[keep], level[keep]
            keep = batched_nms(boxes, scores, level, self.nms_thresh, self.post_nms_top_n())
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores
