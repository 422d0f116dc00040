# SOLOv2 R50-FPN, 3x schedule (Wang et al., NeurIPS 2020): the LazyConfig twin of
# COCO-InstanceSegmentation/solov2_R_50_FPN_3x.yaml (the stock ResNet-FPN with P2-P6, the paper's
# heads, lr 0.01 at batch 16), built from detectron2's common data, optimizer and train pieces.
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from wnlb_d2.modeling.meta_arch import SOLOv2, SOLOv2InstanceHead, SOLOv2MaskHead

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
optimizer = model_zoo.get_config("common/optim.py").SGD
train = model_zoo.get_config("common/train.py").train

model = L(SOLOv2)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features="${.bottom_up.out_features}",
        out_channels=256,
        top_block=L(LastLevelMaxPool)(),
    ),
    # Instance branch on P2-P6 (P2 down-sampled to stride 8, P6 resized to P5's size).
    instance_head=L(SOLOv2InstanceHead)(
        in_channels="${..backbone.out_channels}",
        num_classes="${..num_classes}",
        num_grids=[40, 36, 24, 16, 12],
    ),
    # Mask-feature branch on the 4 levels of mask_in_features.
    mask_head=L(SOLOv2MaskHead)(in_channels="${..backbone.out_channels}", num_levels=4),
    in_features=["p2", "p3", "p4", "p5", "p6"],
    mask_in_features=["p2", "p3", "p4", "p5"],
    instance_strides=[8, 8, 16, 32, 32],
    scale_ranges=[[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]],
    sigma=0.2,
    num_classes=80,
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
)

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 270000
dataloader.train.total_batch_size = 16
optimizer.lr = 0.01

# Drops at 28 and 33 of 36 epochs; a 1000-iteration linear warm-up from 1% of the lr.
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[210000, 250000],
        num_updates=train.max_iter,
    ),
    warmup_length=1000 / train.max_iter,
    warmup_method="linear",
    warmup_factor=0.01,
)
