"""Dataset registration: importing this package registers every wnlb_d2 dataset by name.

See :mod:`.builtin` for the names and datasets/README.md for the layout on disk.
"""

from . import builtin  # noqa: F401  (registers the datasets)
from .coco_instances import load_coco_instances, read_coco_json
from .coco_lowlight import register_coco_lowlight
from .demo import register_demo
from .exdark import load_exdark, register_exdark
from .lis import register_lis

__all__ = [
    "load_coco_instances",
    "read_coco_json",
    "register_coco_lowlight",
    "register_lis",
    "register_exdark",
    "load_exdark",
    "register_demo",
]
