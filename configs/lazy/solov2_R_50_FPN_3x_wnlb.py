# SOLOv2 R50-FPN with weighted non-local blocks after res3, res4, res5: solov2_R_50_FPN_3x.py plus
# the two lines marked wNLB (the LazyConfig twin of solov2_R_50_FPN_3x_wnlb.yaml).
from detectron2.config import LazyCall as L

from wnlb_d2.lazy import with_wnlb_blocks, wnlb_param_groups

from .solov2_R_50_FPN_3x import dataloader, lr_multiplier, model, optimizer, train

# wNLB: the blocks (MODEL.WNLB defaults).
model.backbone.bottom_up = with_wnlb_blocks(model.backbone.bottom_up, stages=["res3", "res4", "res5"])
# wNLB: w without weight decay (the blocks' learning-rate factors stay 1).
optimizer.params = L(wnlb_param_groups)(base_lr="${..lr}", weight_decay_norm=0.0)
