# Mask R-CNN R50-FPN, detectron2's new baseline (large-scale jitter, 100 epochs, from scratch,
# SyncBN), with weighted non-local blocks after res3, res4, res5: detectron2's
# new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py plus the two lines marked wNLB.
# Train with detectron2's tools/lazyconfig_train_net.py (one added hook line logs w: see
# wnlb_d2/lazy.py).
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from wnlb_d2.lazy import with_wnlb_blocks, wnlb_param_groups

_base = model_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
dataloader = _base.dataloader
lr_multiplier = _base.lr_multiplier
model = _base.model
optimizer = _base.optimizer
train = _base.train

# wNLB: the blocks, normalised like the rest of this recipe (SyncBN).
model.backbone.bottom_up = with_wnlb_blocks(model.backbone.bottom_up, stages=["res3", "res4", "res5"], norm="SyncBN")
# wNLB: w without weight decay (the blocks' learning-rate factors stay 1).
optimizer.params = L(wnlb_param_groups)(base_lr="${..lr}", weight_decay_norm=0.0)
