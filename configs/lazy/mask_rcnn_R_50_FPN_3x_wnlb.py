# Mask R-CNN R50-FPN, 3x schedule, ImageNet-initialised, with weighted non-local blocks after
# res3, res4, res5 (the paper's model): the LazyConfig twin of
# COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_wnlb.yaml, built from detectron2's common pieces
# (as detectron2's own COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py) plus the two lines
# marked wNLB.
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from wnlb_d2.lazy import with_wnlb_blocks, wnlb_param_groups

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
lr_multiplier = model_zoo.get_config("common/coco_schedule.py").lr_multiplier_3x
model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
optimizer = model_zoo.get_config("common/optim.py").SGD
train = model_zoo.get_config("common/train.py").train

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 270000
model.backbone.bottom_up.freeze_at = 2  # as MODEL.BACKBONE.FREEZE_AT of the yacs config

# wNLB: the blocks (MODEL.WNLB defaults).
model.backbone.bottom_up = with_wnlb_blocks(model.backbone.bottom_up, stages=["res3", "res4", "res5"])
# wNLB: w without weight decay (the blocks' learning-rate factors stay 1).
optimizer.params = L(wnlb_param_groups)(base_lr="${..lr}", weight_decay_norm=0.0)
