"""Registers every dataset of wnlb_d2 by name, like detectron2's ``data/datasets/builtin.py``.

Nothing is read at registration: each name maps to a loading function that runs the first
time ``DatasetCatalog.get(name)`` is called, and raises a clear ``FileNotFoundError`` naming
the expected path when the data is missing (an annotation file, a folder, or any image the
annotations list: their count and the first missing one). The datasets root is ``$DETECTRON2_DATASETS``
(default ``./datasets``), read once on import as in detectron2.

Registered names:

* ``coco_2017_{train,val}_lowlight``: offline low-light COCO (``datasets/prepare_lowlight_coco.py``);
* ``lis_{train,test,traintest}_{dark,normal}`` (sRGB) and
  ``lis_raw_{train,test,traintest}_{dark,normal}`` (RAW as PNG): LIS in the authors' layout and
  JSONs, in COCO's label space;
* ``exdark_{train,val,test,all}``: ExDark boxes, in COCO's label space;
* ``wnlb_demo_{train,val}`` and ``wnlb_demo_{train,val}_lowlight``: the embedded demo dataset.

Every dataset's metadata has ``low_light``: ``"real"`` (captured in the dark), ``"synthetic"``
(already degraded offline) or ``"none"`` (normal light), so a trainer can refuse to degrade
again on the fly what is dark already.
"""

from .coco_lowlight import register_all_coco_lowlight
from .demo import register_demo
from .exdark import register_all_exdark
from .lis import register_all_lis
from .paths import datasets_root

__all__ = ["register_all"]


def register_all(root):
    """Register every built-in name with data under ``root``.

    Args:
        root (str): the datasets root.
    """
    register_all_coco_lowlight(root)
    register_all_lis(root)
    register_all_exdark(root)
    register_demo()


register_all(datasets_root())
