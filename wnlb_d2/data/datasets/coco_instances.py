"""Loading COCO-format instance annotations into detectron2 dicts, with bad annotations skipped.

This mirrors :func:`detectron2.data.datasets.load_coco_json` (same record fields, same
category-id mapping, same polygon rule) with three differences, all for bad input:

* an empty dataset, a missing or corrupt JSON, or an annotation naming an unknown category is
  a clear error that names the file;
* an annotation whose segmentation is empty or degenerate (every polygon has fewer than 3
  points or zero area, or an RLE mask is empty) is skipped, and the skip is counted and
  logged with the annotation ids. detectron2 drops polygons with fewer than 3 points without
  naming them, and keeps an annotation with ``"segmentation": []`` as a box without mask,
  which later fails in ``annotations_to_instances`` when other instances of the image have
  masks;
* the category mapping can be given (e.g. LIS names onto COCO's 80 classes).

Datasets without any segmentation (boxes only) are loaded as boxes, nothing skipped.
"""

import json
import logging
import os

import pycocotools.mask as mask_util
from detectron2.structures import BoxMode

from .paths import require_dir, require_file

__all__ = [
    "read_coco_json",
    "load_coco_instances",
    "clean_segmentation",
    "polygon_area",
    "sorted_id_mapper",
]

logger = logging.getLogger(__name__)

# Annotation ids listed in a warning; the count is always given in full.
_MAX_IDS_LOGGED = 20


def read_coco_json(json_file, what="COCO annotation file"):
    """Read and check a COCO-format JSON file.

    Args:
        json_file (str): path of the JSON file.
        what (str): what the file is, for error messages.

    Returns:
        dict: the parsed JSON, with a non-empty ``images`` list.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON, is not a COCO dict, or lists no images.
    """
    require_file(json_file, what)
    try:
        with open(json_file, "r") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {json_file} is not valid JSON ({e}); expected COCO format.") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {json_file} is not a UTF-8 text file ({e}); expected COCO JSON.") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{what} {json_file} holds a JSON {type(data).__name__}; expected a COCO-format "
            "object with 'images', 'annotations' and 'categories'."
        )
    images = data.get("images")
    if not isinstance(images, list):
        raise ValueError(f"{what} {json_file} has no 'images' list; expected COCO format.")
    if len(images) == 0:
        raise ValueError(f"{what} {json_file} lists no images (empty dataset).")
    return data


def polygon_area(poly):
    """Area of a polygon given as a flat ``[x0, y0, x1, y1, ...]`` list (shoelace formula).

    Args:
        poly (list[float]): 2N coordinates.

    Returns:
        float: the unsigned area in pixels^2.
    """
    xs, ys = poly[0::2], poly[1::2]
    s = 0.0
    for x0, y0, x1, y1 in zip(xs, ys, xs[1:] + xs[:1], ys[1:] + ys[:1]):
        s += x0 * y1 - x1 * y0
    return abs(s) / 2.0


def clean_segmentation(segm):
    """Drop the degenerate parts of a COCO segmentation.

    Args:
        segm: a list of polygons (each a flat coordinate list) or an RLE dict
            (``counts`` compressed or uncompressed, ``size`` [H, W]).

    Returns:
        The polygons with at least 3 points, an even number of coordinates and non-zero
        area, or the RLE in compressed form; None if nothing usable is left (empty list,
        all polygons degenerate, empty RLE mask, or an unknown type).
    """
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            return None
        rle = segm
        if isinstance(rle["counts"], list):
            rle = mask_util.frPyObjects(rle, *rle["size"])
        return rle if mask_util.area(rle) > 0 else None
    if not isinstance(segm, list):
        return None
    polys = [
        p
        for p in segm
        if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and polygon_area(p) > 1e-6
    ]
    return polys or None


def sorted_id_mapper(categories, json_file):
    """Default category mapping: dataset ids in increasing order -> 0..N-1 (as detectron2)."""
    return {c["id"]: i for i, c in enumerate(sorted(categories, key=lambda c: c["id"]))}


def load_coco_instances(json_file, image_root, category_mapper=None, what="COCO annotation file"):
    """Load a COCO-format instances JSON into detectron2's standard dataset dicts.

    Args:
        json_file (str): path of the COCO JSON.
        image_root (str): folder that the images' ``file_name`` are relative to.
        category_mapper (callable or None): ``f(categories, json_file) -> {dataset category
            id: contiguous class index}``; default :func:`sorted_id_mapper`. Annotations of
            a category the mapping leaves out are an error.
        what (str): what the JSON is, for error messages.

    Returns:
        list[dict]: one record per image (sorted by image id) with ``file_name``,
        ``height``, ``width``, ``image_id`` and ``annotations`` (``bbox`` XYWH_ABS,
        ``bbox_mode``, ``category_id`` contiguous, ``iscrowd``, ``segmentation`` if the
        dataset has masks).

    Raises:
        FileNotFoundError: the JSON or the image folder does not exist.
        ValueError: the JSON is corrupt or empty, an image entry lacks a field, annotation
            ids repeat, or an annotation names an unknown category.
    """
    data = read_coco_json(json_file, what)
    require_dir(image_root, f"Image folder of {os.path.basename(json_file)}")
    categories = data.get("categories") or []
    id_map = (category_mapper or sorted_id_mapper)(categories, json_file)
    annotations = data.get("annotations") or []

    anns_per_image = {}
    seen_ids = set()
    for ann in annotations:
        ann_id = ann.get("id")
        if ann_id is not None:
            if ann_id in seen_ids:
                raise ValueError(f"{json_file}: annotation id {ann_id} appears more than once.")
            seen_ids.add(ann_id)
        anns_per_image.setdefault(ann.get("image_id"), []).append(ann)

    # A dataset with masks anywhere is an instance-segmentation dataset: there an annotation
    # without a usable mask is skipped. A boxes-only dataset keeps every box.
    has_masks = any(ann.get("segmentation") for ann in annotations)

    dataset_dicts = []
    skipped_ids = []
    matched = 0
    for img in sorted(data["images"], key=lambda im: im.get("id", 0)):
        missing = [k for k in ("id", "file_name", "height", "width") if k not in img]
        if missing:
            raise ValueError(
                f"{json_file}: image entry {img!r} lacks {missing}; expected 'id', 'file_name', "
                "'height' and 'width'."
            )
        image_id = img["id"]
        objs = []
        for ann in anns_per_image.get(image_id, []):
            matched += 1
            if ann.get("ignore", 0):
                raise ValueError(f"{json_file}: annotation {ann.get('id')} has 'ignore', unsupported.")
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError(
                    f"{json_file}: annotation {ann.get('id')} has bbox {bbox!r}; expected [x, y, w, h]."
                )
            cat = ann.get("category_id")
            if cat not in id_map:
                raise ValueError(
                    f"{json_file}: annotation {ann.get('id')} has category_id {cat!r}, which is not "
                    f"among the mapped categories {sorted(id_map)}."
                )
            obj = {
                "iscrowd": int(ann.get("iscrowd", 0)),
                "bbox": [float(v) for v in bbox],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[cat],
            }
            if has_masks:
                segm = clean_segmentation(ann.get("segmentation"))
                if segm is None:
                    skipped_ids.append(ann.get("id"))
                    continue
                obj["segmentation"] = segm
            objs.append(obj)
        dataset_dicts.append(
            {
                "file_name": os.path.join(image_root, img["file_name"]),
                "height": int(img["height"]),
                "width": int(img["width"]),
                "image_id": image_id,
                "annotations": objs,
            }
        )

    if matched < len(annotations):
        logger.warning(
            f"{json_file} has {len(annotations)} annotations, but only {matched} belong to an "
            "image listed in the file; the others are ignored."
        )
    if skipped_ids:
        shown = ", ".join(str(i) for i in skipped_ids[:_MAX_IDS_LOGGED])
        more = " ..." if len(skipped_ids) > _MAX_IDS_LOGGED else ""
        logger.warning(
            f"{json_file}: skipped {len(skipped_ids)} of {len(annotations)} annotations whose "
            "segmentation is empty or degenerate (polygons with fewer than 3 points or zero "
            f"area, or an empty mask). Annotation ids: {shown}{more}"
        )
    logger.info(f"Loaded {len(dataset_dicts)} images from {json_file}")
    return dataset_dicts
