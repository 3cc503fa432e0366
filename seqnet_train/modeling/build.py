"""``build_model(cfg)``: the only place that reads the config for the network."""

import copy

from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from custom_ops.detection import RegionProposalNetwork
from seqnet_train.errors import SeqNetError
from seqnet_train.modeling.backbone import build_resnet
from seqnet_train.modeling.heads import BBoxRegressor, NormAwareEmbedding
from seqnet_train.modeling.oim import OIMLoss
from seqnet_train.modeling.roi_align import RoIAlign
from seqnet_train.modeling.roi_heads import SeqRoIHeads
from seqnet_train.modeling.seqnet import SeqNet

EMBEDDING_DIM = 256
FEATURE_STRIDE = 16  # of feat_res4 (ResNet layer3)


def build_model(cfg, load_imagenet=True):
    """SeqNet as configured. ``load_imagenet=False`` skips the backbone's ImageNet weights
    (and their warning) when a trained checkpoint is loaded next."""
    m = cfg.MODEL
    backbone, box_head = build_resnet(m.BACKBONE, m.BACKBONE_WEIGHTS, load_imagenet, m.FREEZE_STEM)
    reid_head = copy.deepcopy(box_head)  # same initialisation, trained separately

    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    rpn = RegionProposalNetwork(
        anchor_generator=anchors,
        head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=m.RPN.POS_THRESH_TRAIN,
        bg_iou_thresh=m.RPN.NEG_THRESH_TRAIN,
        batch_size_per_image=m.RPN.BATCH_SIZE_TRAIN,
        positive_fraction=m.RPN.POS_FRAC_TRAIN,
        pre_nms_top_n=dict(training=m.RPN.PRE_NMS_TOPN_TRAIN, testing=m.RPN.PRE_NMS_TOPN_TEST),
        post_nms_top_n=dict(training=m.RPN.POST_NMS_TOPN_TRAIN, testing=m.RPN.POST_NMS_TOPN_TEST),
        nms_thresh=m.RPN.NMS_THRESH,
    )
    res4_channels, res5_channels = box_head.out_channels
    pool = list(m.ROI_HEAD.POOL_SIZE)
    if len(pool) != 2 or not all(type(v) is int and v > 0 for v in pool):
        raise SeqNetError(f"MODEL.ROI_HEAD.POOL_SIZE {pool} is not N or [H, W], positive integers")
    roi_heads = SeqRoIHeads(
        box_roi_pool=RoIAlign(
            output_size=tuple(pool), spatial_scale=1 / FEATURE_STRIDE, sampling_ratio=2
        ),
        box_head=box_head,
        reid_head=reid_head,
        faster_rcnn_predictor=FastRCNNPredictor(res5_channels, 2),
        box_predictor=BBoxRegressor(res5_channels, num_classes=2, bn_neck=m.ROI_HEAD.BN_NECK),
        embedding_head=NormAwareEmbedding((res4_channels, res5_channels), EMBEDDING_DIM),
        reid_loss=OIMLoss(
            EMBEDDING_DIM,
            m.LOSS.LUT_SIZE,
            m.LOSS.CQ_SIZE,
            momentum=m.LOSS.OIM_MOMENTUM,
            scalar=m.LOSS.OIM_SCALAR,
        ),
        fg_iou_thresh=m.ROI_HEAD.POS_THRESH_TRAIN,
        bg_iou_thresh=m.ROI_HEAD.NEG_THRESH_TRAIN,
        batch_size_per_image=m.ROI_HEAD.BATCH_SIZE_TRAIN,
        positive_fraction=m.ROI_HEAD.POS_FRAC_TRAIN,
        score_thresh=m.ROI_HEAD.SCORE_THRESH_TEST,
        nms_thresh=m.ROI_HEAD.NMS_THRESH_TEST,
        detections_per_img=m.ROI_HEAD.DETECTIONS_PER_IMAGE_TEST,
    )
    transform = GeneralizedRCNNTransform(
        min_size=cfg.INPUT.MIN_SIZE,
        max_size=cfg.INPUT.MAX_SIZE,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    s = cfg.SOLVER
    weights = {
        "loss_rpn_reg": s.LW_RPN_REG,
        "loss_rpn_cls": s.LW_RPN_CLS,
        "loss_proposal_reg": s.LW_PROPOSAL_REG,
        "loss_proposal_cls": s.LW_PROPOSAL_CLS,
        "loss_box_reg": s.LW_BOX_REG,
        "loss_box_cls": s.LW_BOX_CLS,
        "loss_box_reid": s.LW_BOX_REID,
    }
    return SeqNet(transform, backbone, rpn, roi_heads, weights)
