"""Meta-architectures added by wnlb_d2 (registered in detectron2's ``META_ARCH_REGISTRY`` on import)."""

from .config import add_solov2_config
from .matrix_nms import matrix_nms
from .solov2 import SOLOv2
from .solov2_heads import SOLOv2InstanceHead, SOLOv2MaskHead

__all__ = ["SOLOv2", "SOLOv2InstanceHead", "SOLOv2MaskHead", "add_solov2_config", "matrix_nms"]
