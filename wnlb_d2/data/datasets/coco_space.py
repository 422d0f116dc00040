"""COCO's 80 thing classes as the common label space of the low-light datasets.

LIS and ExDark label a subset of COCO's classes under their own names and ids. Registering them
in COCO's label space (80 ``thing_classes``, COCO's own ``thing_dataset_id_to_contiguous_id``)
lets a COCO-trained model be evaluated on them with no change: its class indices already mean
the right thing, and :class:`detectron2.evaluation.COCOEvaluator` maps predictions back to
COCO category ids, which is what the ground truth JSON it builds (``convert_to_coco_json``)
uses. Categories without ground truth (``person`` on LIS, ...) get no AP and are left out of
the mean by pycocotools, so AP is the mean over the dataset's own classes.
"""

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

__all__ = ["coco_metadata", "coco_contiguous_id", "normalize_class_name"]


def coco_metadata():
    """Metadata of COCO's 80 thing classes, as detectron2 registers for ``coco_2017_*``.

    Returns:
        dict: ``thing_classes`` (80 names), ``thing_dataset_id_to_contiguous_id``
        (COCO category id 1..90 -> 0..79) and ``thing_colors``.
    """
    things = [c for c in COCO_CATEGORIES if c["isthing"] == 1]
    return {
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
    }


def normalize_class_name(name):
    """Lower-case, trimmed, ``_``/``-`` as spaces: ``"Dining_Table"`` -> ``"dining table"``."""
    return " ".join(str(name).replace("_", " ").replace("-", " ").lower().split())


def coco_contiguous_id(name, aliases=None):
    """COCO contiguous class index (0..79) of a class name, through optional aliases.

    Args:
        name (str): the dataset's class name, e.g. ``"motorbike"``.
        aliases (dict[str, str] or None): normalised dataset name -> COCO class name,
            e.g. ``{"motorbike": "motorcycle"}``.

    Returns:
        int or None: the index into COCO's ``thing_classes``, or None if COCO has no such class.
    """
    key = normalize_class_name(name)
    if aliases:
        key = aliases.get(key, key)
    classes = coco_metadata()["thing_classes"]
    return classes.index(key) if key in classes else None
