"""LIS, "Instance Segmentation in the Dark" (Chen et al., IJCV 2023): real paired low-light images.

Layout under ``$DETECTRON2_DATASETS`` (as the dataset's own README)::

    LIS/
      RGB-dark/JPEGImages/     sRGB short-exposure images (even numbers: 2.JPG, 4.JPG, ...)
      RGB-normal/JPEGImages/   sRGB long-exposure images  (odd numbers: 1, 3, ...)
      RAW-dark/JPEGImages/     RAW images stored as PNG
      RAW-normal/JPEGImages/
      annotations/
        lis_coco_JPG_{train,test,traintest}+1.json   labels of the dark sRGB images
        lis_coco_JPG_{train,test,traintest}.json     labels of the normal sRGB images
        lis_coco_png_{train,test,traintest}+1.json   labels of the dark RAW images
        lis_coco_png_{train,test,traintest}.json     labels of the normal RAW images

``+1`` marks the dark images: a dark image is the normal one's file number plus one, and both
carry the same instances. LIS labels 8 classes under VOC-style names (``motorbike``,
``diningtable``, ``tvmonitor``); they are mapped by name onto COCO's 80 classes, so a
COCO-trained model is evaluated on LIS as it is (see :mod:`.coco_space`).
"""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco_instances import load_coco_instances
from .coco_space import coco_contiguous_id, coco_metadata

__all__ = ["LIS_CLASSES", "LIS_TO_COCO", "register_lis", "register_all_lis", "lis_category_mapper"]

logger = logging.getLogger(__name__)

#: LIS's 8 classes, by their COCO names.
LIS_CLASSES = ("bicycle", "car", "motorcycle", "bus", "bottle", "chair", "dining table", "tv")

#: LIS (VOC-style) class names -> COCO class names, for the names that differ.
LIS_TO_COCO = {
    "motorbike": "motorcycle",
    "diningtable": "dining table",
    "table": "dining table",
    "tvmonitor": "tv",
    "tv monitor": "tv",
}

# (image type, light) -> (image folder under LIS/, JSON tag, suffix of the JSON name)
_VARIANTS = {
    ("rgb", "dark"): ("RGB-dark/JPEGImages", "JPG", "+1"),
    ("rgb", "normal"): ("RGB-normal/JPEGImages", "JPG", ""),
    ("raw", "dark"): ("RAW-dark/JPEGImages", "png", "+1"),
    ("raw", "normal"): ("RAW-normal/JPEGImages", "png", ""),
}

SPLITS = ("train", "test", "traintest")


def lis_category_mapper(categories, json_file):
    """Map LIS category ids onto COCO's contiguous class indices through the class names.

    Args:
        categories (list[dict]): the JSON's ``categories`` (``id``, ``name``).
        json_file (str): the JSON's path, for error messages.

    Returns:
        dict[int, int]: LIS category id -> COCO contiguous index (0..79).

    Raises:
        ValueError: a category name has no COCO counterpart.
    """
    id_map = {}
    for c in categories:
        index = coco_contiguous_id(c["name"], LIS_TO_COCO)
        if index is None:
            raise ValueError(
                f"{json_file}: category {c['name']!r} (id {c['id']}) has no COCO counterpart; "
                f"expected one of LIS's classes {list(LIS_CLASSES)} (or their VOC names "
                f"{sorted(k for k in LIS_TO_COCO if ' ' not in k)})."
            )
        id_map[c["id"]] = index
    return id_map


def lis_paths(root, split, light, image_type="rgb"):
    """Image folder and annotation JSON of one LIS variant.

    Args:
        root (str): the datasets root (holds ``LIS/``).
        split (str): ``"train"``, ``"test"`` or ``"traintest"``.
        light (str): ``"dark"`` or ``"normal"``.
        image_type (str): ``"rgb"`` (sRGB JPG) or ``"raw"`` (RAW stored as PNG).

    Returns:
        tuple[str, str]: (image folder, JSON path).
    """
    if split not in SPLITS:
        raise ValueError(f"LIS split {split!r} is unknown; expected one of {SPLITS}.")
    if (image_type, light) not in _VARIANTS:
        raise ValueError(
            f"LIS variant ({image_type!r}, {light!r}) is unknown; expected image_type in "
            "('rgb', 'raw') and light in ('dark', 'normal')."
        )
    folder, tag, suffix = _VARIANTS[(image_type, light)]
    json_file = os.path.join(root, "LIS", "annotations", f"lis_coco_{tag}_{split}{suffix}.json")
    return os.path.join(root, "LIS", folder), json_file


def register_lis(name, root, split, light, image_type="rgb"):
    """Register one LIS variant in COCO's label space (lazily: nothing is read now).

    Args:
        name (str): dataset name to register.
        root (str): the datasets root (holds ``LIS/``).
        split, light, image_type: see :func:`lis_paths`.
    """
    image_root, json_file = lis_paths(root, split, light, image_type)
    what = f"LIS annotation file of {name!r}"
    DatasetCatalog.register(
        name, lambda: load_coco_instances(json_file, image_root, lis_category_mapper, what)
    )
    # No ``json_file`` on purpose: COCOEvaluator then writes the ground truth in COCO's ids
    # (convert_to_coco_json) into its output folder, which is what the 80-class predictions
    # are mapped back to. ``lis_json_file`` keeps the original for reference.
    MetadataCatalog.get(name).set(
        image_root=image_root,
        lis_json_file=json_file,
        evaluator_type="coco",
        low_light="real" if light == "dark" else "none",
        **coco_metadata(),
    )


def register_all_lis(root):
    """Register ``lis_{split}_{dark,normal}`` (sRGB) and ``lis_raw_{split}_{dark,normal}``.

    Args:
        root (str): the datasets root (holds ``LIS/``).
    """
    for split in SPLITS:
        for light in ("dark", "normal"):
            register_lis(f"lis_{split}_{light}", root, split, light, "rgb")
            register_lis(f"lis_raw_{split}_{light}", root, split, light, "raw")

