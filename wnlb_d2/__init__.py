"""wnlb_d2: weighted non-local blocks (wNLB) for low-light instance segmentation in Detectron2.

Importing the package registers its backbones in detectron2's ``BACKBONE_REGISTRY``.
"""

from .config import MODEL_ZOO_PREFIX, add_lowlight_config, add_wnlb_config, merge_from_file
from . import data  # noqa: F401  (registers the datasets)
from . import modeling  # noqa: F401  (registers the backbones)
from .checkpoint import WNLBCheckpointer

__all__ = ["add_lowlight_config", "add_wnlb_config", "merge_from_file", "MODEL_ZOO_PREFIX", "WNLBCheckpointer"]
