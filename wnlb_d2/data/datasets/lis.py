"""LIS, "Instance Segmentation in the Dark" (Chen et al., IJCV 2023): real paired low-light images.

Layout under ``$DETECTRON2_DATASETS``, as the authors' README (github.com/Linwei-Chen/LIS)
gives it::

    LIS/
      RGB-normal/JPEGImages/   sRGB long-exposure images, PNG:  1.png, 3.png, ... (odd numbers)
      RGB-dark/JPEGImages/     sRGB short-exposure images, JPG: 2.JPG, 4.JPG, ... (even numbers)
      RAW-normal/JPEGImages/   RAW images stored as PNG (odd numbers)
      RAW-dark/JPEGImages/     RAW images stored as PNG (even numbers)
      annotations/
        lis_coco_JPG_{train,test,traintest}+1.json   dark sRGB   ("./JPEGImages/2.JPG")
        lis_coco_png_{train,test,traintest}+1.json   dark RAW    ("./JPEGImages/2.png")
        lis_coco_png_{train,test,traintest}.json     normal      ("./JPEGImages/1.png")

Those are the nine JSONs the authors ship. ``+1`` marks the dark images' labels (a dark image
is its normal twin's number plus one; both carry the same instances). There is no
``lis_coco_JPG_{split}.json``: the normal sRGB images are PNGs, so the normal PNG JSON serves
both normal variants (``RGB-normal`` and ``RAW-normal`` hold the same file names).

The JSONs' ``file_name`` is ``./JPEGImages/<n>.<ext>``, relative to the variant folder (the
authors' configs set ``img_prefix`` to the folder above ``JPEGImages``); bare names (``4.JPG``)
are accepted too and looked up in ``JPEGImages/``.

Category erratum (Linwei-Chen/LIS issue #23, confirmed by the author, who published revised
JSONs): in the original JSONs the category table names ids 1..8 bicycle, chair, diningtable,
bottle, motorbike, car, tvmonitor, bus, while the objects under those ids are bicycle, car,
motorbike, bus, bottle, chair, diningtable, tvmonitor (the order the authors' own COCO-to-LIS
test configs list as ``classes``). That table is recognised and remapped by position, with a
warning; any other table (the revised JSONs) is read by name as it is.

LIS labels 8 classes under VOC-style names (``motorbike``, ``diningtable``, ``tvmonitor``); they
are mapped by name onto COCO's 80 classes, so a COCO-trained model is evaluated on LIS as it is
(see :mod:`.coco_space`).
"""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco_instances import load_coco_instances
from .coco_space import coco_contiguous_id, coco_metadata, normalize_class_name
from .paths import require_images

__all__ = [
    "LIS_CLASSES",
    "LIS_TO_COCO",
    "LIS_ORIGINAL_TABLE",
    "LIS_TRUE_CLASSES",
    "register_lis",
    "register_all_lis",
    "lis_category_mapper",
    "lis_file_name",
    "lis_paths",
]

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

#: The category table of the original JSONs (issue #23): (id, name) as they are written.
LIS_ORIGINAL_TABLE = (
    (1, "bicycle"), (2, "chair"), (3, "diningtable"), (4, "bottle"),
    (5, "motorbike"), (6, "car"), (7, "tvmonitor"), (8, "bus"),
)  # fmt: skip

#: What the objects under ids 1..8 of the original JSONs really are (issue #23).
LIS_TRUE_CLASSES = ("bicycle", "car", "motorbike", "bus", "bottle", "chair", "diningtable", "tvmonitor")

# (image type, light) -> (variant folder under LIS/, JSON name without the split, image extension)
_VARIANTS = {
    ("rgb", "dark"): ("RGB-dark", "lis_coco_JPG_{split}+1.json", ".JPG"),
    ("rgb", "normal"): ("RGB-normal", "lis_coco_png_{split}.json", ".png"),
    ("raw", "dark"): ("RAW-dark", "lis_coco_png_{split}+1.json", ".png"),
    ("raw", "normal"): ("RAW-normal", "lis_coco_png_{split}.json", ".png"),
}

SPLITS = ("train", "test", "traintest")

ERRATUM_MODES = ("auto", "fix", "keep")


def _is_original_table(categories):
    try:
        table = tuple(sorted((c["id"], normalize_class_name(c["name"])) for c in categories))
    except TypeError:  # ids of mixed types: not the original table, whatever it is
        return False
    return table == LIS_ORIGINAL_TABLE


def lis_category_mapper(categories, json_file, erratum="auto"):
    """Map LIS category ids onto COCO's contiguous class indices through the class names.

    The original JSONs' table (:data:`LIS_ORIGINAL_TABLE`) names its ids wrongly (issue #23):
    it is recognised and its ids 1..8 mapped to :data:`LIS_TRUE_CLASSES` by position.

    Args:
        categories (list[dict]): the JSON's ``categories`` (``id``, ``name``).
        json_file (str): the JSON's path, for messages.
        erratum (str): ``"auto"`` (remap the original table only), ``"fix"`` (the table must
            be the original one) or ``"keep"`` (read the names as written).

    Returns:
        dict[int, int]: LIS category id -> COCO contiguous index (0..79).

    Raises:
        ValueError: a category name has no COCO counterpart, or ``"fix"`` was asked of a
            table that is not the original one.
    """
    if erratum not in ERRATUM_MODES:
        raise ValueError(f"LIS erratum mode {erratum!r} is unknown; expected one of {ERRATUM_MODES}.")
    original = _is_original_table(categories)
    if erratum == "fix" and not original:
        raise ValueError(
            f"{json_file}: erratum='fix' asked, but its category table "
            f"{sorted((c['id'], c['name']) for c in categories)} is not the original LIS table "
            f"{list(LIS_ORIGINAL_TABLE)}; expected the original JSONs."
        )
    if original and erratum != "keep":
        logger.warning(
            f"{json_file} has the original LIS category table, whose names do not match its "
            "objects (Linwei-Chen/LIS issue #23, confirmed by the author): ids 1..8 are read "
            f"as {list(LIS_TRUE_CLASSES)} instead of {[n for _, n in LIS_ORIGINAL_TABLE]}. The "
            "author's revised JSONs (linked in issue #23) need no remapping."
        )
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(LIS_TRUE_CLASSES)]
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


def lis_file_name(file_name):
    """Path of an LIS image relative to its variant folder (``RGB-dark/`` ...).

    Args:
        file_name (str): the JSON's ``file_name``: ``./JPEGImages/4.JPG`` (the authors'
            JSONs), ``JPEGImages/4.JPG`` or a bare ``4.JPG``.

    Returns:
        str: ``JPEGImages/4.JPG``.

    Raises:
        ValueError: the name is absolute or leaves the variant folder.
    """
    name = os.path.normpath(file_name.replace("\\", "/"))
    if os.path.isabs(name) or name == ".." or name.startswith(".." + os.sep):
        raise ValueError(
            f"LIS file_name {file_name!r} leaves the image folder; expected "
            "'./JPEGImages/<n>.<ext>' or a bare '<n>.<ext>'."
        )
    if os.path.dirname(name) == "":
        name = os.path.join("JPEGImages", name)
    return name


def lis_paths(root, split, light, image_type="rgb"):
    """Variant folder and annotation JSON of one LIS variant.

    Args:
        root (str): the datasets root (holds ``LIS/``).
        split (str): ``"train"``, ``"test"`` or ``"traintest"``.
        light (str): ``"dark"`` or ``"normal"``.
        image_type (str): ``"rgb"`` (sRGB: dark JPG, normal PNG) or ``"raw"`` (RAW stored as PNG).

    Returns:
        tuple[str, str]: (variant folder, the one above ``JPEGImages/``; JSON path).
    """
    if split not in SPLITS:
        raise ValueError(f"LIS split {split!r} is unknown; expected one of {SPLITS}.")
    if (image_type, light) not in _VARIANTS:
        raise ValueError(
            f"LIS variant ({image_type!r}, {light!r}) is unknown; expected image_type in "
            "('rgb', 'raw') and light in ('dark', 'normal')."
        )
    folder, json_name, _ = _VARIANTS[(image_type, light)]
    json_file = os.path.join(root, "LIS", "annotations", json_name.format(split=split))
    return os.path.join(root, "LIS", folder), json_file


def _load_lis(name, json_file, image_root, extension, erratum):
    dicts = load_coco_instances(
        json_file,
        image_root,
        lambda categories, path: lis_category_mapper(categories, path, erratum),
        what=f"LIS annotation file of {name!r}",
        file_name_fn=lis_file_name,
        check_images=False,
    )
    try:
        require_images(dicts, f"Images of {json_file} (LIS {name!r}, under {image_root})")
    except FileNotFoundError as e:
        # The usual cause is a JSON paired with the wrong variant folder: say what is expected.
        wrong = [d["file_name"] for d in dicts if not d["file_name"].endswith(extension)]
        if wrong:
            raise FileNotFoundError(
                f"{e} {len(wrong)} of its file names do not end in {extension!r} as the images "
                f"of {os.path.basename(image_root)}/ do (e.g. {wrong[0]}); check that "
                f"{os.path.basename(json_file)} is the authors' file for this variant."
            ) from None
        raise
    return dicts


def register_lis(name, root, split, light, image_type="rgb", erratum="auto", clean_counterpart=None):
    """Register one LIS variant in COCO's label space (lazily: nothing is read now).

    Args:
        name (str): dataset name to register.
        root (str): the datasets root (holds ``LIS/``).
        split, light, image_type: see :func:`lis_paths`.
        erratum (str): see :func:`lis_category_mapper`.
        clean_counterpart (str or None): for a dark variant, the registered normal variant of
            the same split (its images are the dark ones' long-exposure twins).
    """
    image_root, json_file = lis_paths(root, split, light, image_type)
    if erratum not in ERRATUM_MODES:
        raise ValueError(f"LIS erratum mode {erratum!r} is unknown; expected one of {ERRATUM_MODES}.")
    extension = _VARIANTS[(image_type, light)][2]
    DatasetCatalog.register(name, lambda: _load_lis(name, json_file, image_root, extension, erratum))
    # No ``json_file`` on purpose: COCOEvaluator then writes the ground truth in COCO's ids
    # (convert_to_coco_json) into its output folder, which is what the 80-class predictions
    # are mapped back to; it also never sees what the loader dropped. ``lis_json_file`` keeps
    # the original for reference.
    MetadataCatalog.get(name).set(
        image_root=image_root,
        lis_json_file=json_file,
        image_extension=extension,
        evaluator_type="coco",
        low_light="real" if light == "dark" else "none",
        **({"clean_counterpart": clean_counterpart, "clean_pairing": "lis"} if clean_counterpart else {}),
        **coco_metadata(),
    )


def register_all_lis(root):
    """Register ``lis_{split}_{dark,normal}`` (sRGB) and ``lis_raw_{split}_{dark,normal}``.

    Args:
        root (str): the datasets root (holds ``LIS/``).
    """
    for split in SPLITS:
        for light in ("dark", "normal"):
            twin = (lambda prefix: f"{prefix}_{split}_normal") if light == "dark" else (lambda prefix: None)
            register_lis(f"lis_{split}_{light}", root, split, light, "rgb", clean_counterpart=twin("lis"))
            register_lis(f"lis_raw_{split}_{light}", root, split, light, "raw", clean_counterpart=twin("lis_raw"))

