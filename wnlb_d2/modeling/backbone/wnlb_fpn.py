"""FPN backbones whose bottom-up ResNet has (weighted) non-local blocks."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from .wnlb_resnet import build_wnlb_bottom_up

__all__ = ["build_resnet_wnlb_fpn_backbone", "build_retinanet_resnet_wnlb_fpn_backbone"]


def _fpn(cfg, bottom_up, top_block):
    # The stock FPN module, unchanged, so fpn_lateral*/fpn_output* keys match stock checkpoints.
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_resnet_wnlb_fpn_backbone(cfg, input_shape: ShapeSpec):
    """Drop-in for ``build_resnet_fpn_backbone`` (Mask R-CNN / Faster R-CNN FPN).

    Returns:
        FPN: with a :class:`WNLBResNet` bottom-up.
    """
    return _fpn(cfg, build_wnlb_bottom_up(cfg, input_shape), LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_resnet_wnlb_fpn_backbone(cfg, input_shape: ShapeSpec):
    """Drop-in for ``build_retinanet_resnet_fpn_backbone`` (P6/P7 top block).

    Returns:
        FPN: with a :class:`WNLBResNet` bottom-up.
    """
    bottom_up = build_wnlb_bottom_up(cfg, input_shape)
    in_channels_p6p7 = bottom_up.output_shape()["res5"].channels
    return _fpn(cfg, bottom_up, LastLevelP6P7(in_channels_p6p7, cfg.MODEL.FPN.OUT_CHANNELS))
