"""Loading COCO-format instance annotations into detectron2 dicts, with bad annotations skipped.

This mirrors :func:`detectron2.data.datasets.load_coco_json` (same record fields, same
category-id mapping, same polygon rule) with these differences, all for bad input:

* an empty dataset, a missing or corrupt JSON, a JSON without ``images`` or ``categories``,
  an image id listed twice, or an annotation naming an unknown category is a clear error that
  names the file;
* an image listed in the JSON but missing on disk is an error when the dataset is loaded
  (count and first missing path), not a crash in a data-loader worker much later;
* a box with zero or negative width or height (or a non-finite coordinate) is dropped, and
  the drop is counted and logged with the annotation ids: detectron2 keeps it, training
  filters it out later, but COCOEvaluator scores against it;
* invalid polygons (fewer than 3 points, an odd number of coordinates, zero area) are
  dropped from their annotation, and an annotation left with no usable mask (or with
  ``"segmentation": []``, or an empty RLE) is dropped; both are counted and logged. detectron2
  drops short polygons silently in training only, while pycocotools, reading the same JSON
  for evaluation, fails on them after the whole inference has run. Datasets loaded here
  are therefore evaluated from the cleaned dicts (see :func:`load_coco_instances`'s
  ``report`` and :mod:`.coco_lowlight`);
* the category mapping and the file-name resolution can be given (e.g. LIS names onto
  COCO's 80 classes, LIS's ``./JPEGImages/`` prefixes).

Datasets without any segmentation (boxes only) are loaded as boxes, no mask required.
"""

import json
import logging
import math
import os

import pycocotools.mask as mask_util
from detectron2.structures import BoxMode

from .paths import require_dir, require_file, require_images

__all__ = [
    "read_coco_json",
    "load_coco_instances",
    "clean_segmentation",
    "polygon_area",
    "sorted_id_mapper",
    "valid_box",
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
        ValueError: the file is not valid JSON, is not a COCO dict, lacks ``images`` or
            ``categories``, or lists no images.
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
    missing = [k for k in ("images", "categories") if k not in data]
    if missing:
        raise ValueError(
            f"{what} {json_file} lacks the key(s) {missing}; expected a COCO-format object with "
            "'images', 'annotations' and 'categories'."
        )
    for key in ("images", "categories", "annotations"):
        if key in data and not isinstance(data[key], list):
            raise ValueError(
                f"{what} {json_file}: '{key}' is a {type(data[key]).__name__}; expected a list "
                "(COCO format)."
            )
    if len(data["images"]) == 0:
        raise ValueError(f"{what} {json_file} lists no images (empty dataset).")
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise ValueError(
                f"{what} {json_file}: category entry {c!r} lacks 'id' or 'name'; expected "
                "{'id': <int>, 'name': <str>, ...}."
            )
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


def valid_box(bbox):
    """Whether an XYWH box has finite coordinates and a positive width and height.

    Args:
        bbox (list[float]): ``[x, y, w, h]``.

    Returns:
        bool
    """
    return all(math.isfinite(v) for v in bbox) and bbox[2] > 0 and bbox[3] > 0


def _log_ids(message, ids):
    shown = ", ".join(str(i) for i in ids[:_MAX_IDS_LOGGED])
    more = " ..." if len(ids) > _MAX_IDS_LOGGED else ""
    logger.warning(f"{message}. Annotation ids: {shown}{more}")


def _check_unique_image_ids(images, json_file):
    """Raise ValueError when two image entries share an id.

    Annotations name their image by id: with a repeated id, an object would be drawn on (and
    scored against) another image. The YOLO export and ``prepare`` refuse such a file too.
    """
    seen, repeated = set(), []
    for img in images:
        image_id = img.get("id") if isinstance(img, dict) else None
        if image_id is None:
            continue  # reported with the entry's other missing fields
        if not isinstance(image_id, (int, float, str)):
            image_id = repr(image_id)  # a list or dict id: compared by its text
        if image_id in seen and image_id not in repeated:
            repeated.append(image_id)
        seen.add(image_id)
    if repeated:
        shown = ", ".join(repr(i) for i in repeated[:_MAX_IDS_LOGGED]) + (" ..." if len(repeated) > _MAX_IDS_LOGGED else "")
        raise ValueError(
            f"{json_file}: {len(repeated)} image ids are listed more than once ({shown}); each image "
            "needs its own id (annotations name their image by it)."
        )


def load_coco_instances(
    json_file,
    image_root,
    category_mapper=None,
    what="COCO annotation file",
    file_name_fn=None,
    check_images=True,
    report=None,
):
    """Load a COCO-format instances JSON into detectron2's standard dataset dicts.

    Args:
        json_file (str): path of the COCO JSON.
        image_root (str): folder that the images' ``file_name`` are relative to.
        category_mapper (callable or None): ``f(categories, json_file) -> {dataset category
            id: contiguous class index}``; default :func:`sorted_id_mapper`. Annotations of
            a category the mapping leaves out are an error.
        what (str): what the JSON is, for error messages.
        file_name_fn (callable or None): ``f(file_name) -> path relative to image_root``
            (e.g. LIS's ``./JPEGImages/4.JPG``); default: the name as it is.
        check_images (bool): check that every image exists (one listing per folder).
        report (dict or None): if given, filled with what was dropped: ``"bad_boxes"``,
            ``"bad_polygons"`` (polygons removed from annotations that kept a mask),
            ``"no_mask"`` (annotations dropped for want of a usable mask). A dataset whose
            report is all zeros can be evaluated against ``json_file`` itself; otherwise
            the evaluator must see the cleaned dicts.

    Returns:
        list[dict]: one record per image (sorted by image id) with ``file_name``,
        ``height``, ``width``, ``image_id`` and ``annotations`` (``bbox`` XYWH_ABS,
        ``bbox_mode``, ``category_id`` contiguous, ``iscrowd``, ``segmentation`` if the
        dataset has masks).

    Raises:
        FileNotFoundError: the JSON, the image folder or an image does not exist.
        ValueError: the JSON is corrupt, empty or not COCO, an image entry lacks a field,
            image ids or annotation ids repeat, a bbox is not 4 numbers, or an annotation names an
            unknown category.
    """
    data = read_coco_json(json_file, what)
    _check_unique_image_ids(data["images"], json_file)
    require_dir(image_root, f"Image folder of {os.path.basename(json_file)}")
    id_map = (category_mapper or sorted_id_mapper)(data["categories"], json_file)
    annotations = data.get("annotations") or []

    anns_per_image = {}
    seen_ids = set()
    for ann in annotations:
        if not isinstance(ann, dict):
            raise ValueError(f"{json_file}: annotation entry {ann!r} is not an object; expected COCO format.")
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
    bad_boxes, no_mask, trimmed = [], [], []
    bad_polygons = 0
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
            if (
                not isinstance(bbox, list)
                or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
            ):
                raise ValueError(
                    f"{json_file}: annotation {ann.get('id')} has bbox {bbox!r}; expected [x, y, w, h]."
                )
            cat = ann.get("category_id")
            if cat not in id_map:
                raise ValueError(
                    f"{json_file}: annotation {ann.get('id')} has category_id {cat!r}, which is not "
                    f"among the mapped categories {sorted(id_map)}."
                )
            bbox = [float(v) for v in bbox]
            # Dropped, not kept: training would filter it, but the evaluator would score
            # predictions against a box that covers nothing.
            if not valid_box(bbox):
                bad_boxes.append(ann.get("id"))
                continue
            obj = {
                "iscrowd": int(ann.get("iscrowd", 0)),
                "bbox": bbox,
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[cat],
            }
            if has_masks:
                raw = ann.get("segmentation")
                segm = clean_segmentation(raw)
                if segm is None:
                    no_mask.append(ann.get("id"))
                    continue
                if isinstance(raw, list) and len(segm) < len(raw):
                    bad_polygons += len(raw) - len(segm)
                    trimmed.append(ann.get("id"))
                obj["segmentation"] = segm
            objs.append(obj)
        name = img["file_name"]
        if file_name_fn is not None:
            name = file_name_fn(name)
        dataset_dicts.append(
            {
                "file_name": os.path.join(image_root, name),
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
    if bad_boxes:
        _log_ids(
            f"{json_file}: dropped {len(bad_boxes)} of {len(annotations)} annotations whose box "
            "has zero or negative width or height (or a non-finite coordinate)",
            bad_boxes,
        )
    if no_mask:
        _log_ids(
            f"{json_file}: skipped {len(no_mask)} of {len(annotations)} annotations whose "
            "segmentation is empty or degenerate (polygons with fewer than 3 points or zero "
            "area, or an empty mask)",
            no_mask,
        )
    if trimmed:
        _log_ids(
            f"{json_file}: dropped {bad_polygons} invalid polygons (fewer than 3 points, an odd "
            f"number of coordinates or zero area) from {len(trimmed)} annotations, which keep "
            "their other polygons",
            trimmed,
        )
    if report is not None:
        report.update(bad_boxes=len(bad_boxes), bad_polygons=bad_polygons, no_mask=len(no_mask))
    if check_images:
        require_images(dataset_dicts, f"Images of {json_file} (under {image_root})")
    logger.info(f"Loaded {len(dataset_dicts)} images from {json_file}")
    return dataset_dicts
