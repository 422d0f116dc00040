from .wnlb_fpn import build_resnet_wnlb_fpn_backbone, build_retinanet_resnet_wnlb_fpn_backbone
from .wnlb_resnet import WNLBResNet, build_resnet_wnlb_backbone, build_wnlb_bottom_up

__all__ = [
    "WNLBResNet",
    "build_resnet_wnlb_backbone",
    "build_resnet_wnlb_fpn_backbone",
    "build_retinanet_resnet_wnlb_fpn_backbone",
    "build_wnlb_bottom_up",
]
