"""A registered detectron2 dataset in Ultralytics' segment layout, with the ids kept.

:func:`export_yolo_dataset` writes, for one registered COCO-format dataset (demo, low-light
COCO, LIS ...)::

    <root>/images/<split>/<image id><ext>    the images, linked (default) or copied
    <root>/labels/<split>/<image id>.txt     one polygon per object: ``class x1 y1 x2 y2 ...`` in [0, 1]
    <root>/<split>.wnlb.json                 the index: per image its detectron2 record (file, id,
                                             size) and the class -> dataset category id map

Files are named by the image id, so ``predictions.json`` (Ultralytics takes the file stem as
``image_id``) maps back to the COCO ground truth through the index. What Ultralytics' own
``convert_coco`` does differently, and why this does not use it: it needs the JSON and copies
nothing, renumbers images by file name, needs contiguous 1-based category ids; here the
detectron2 dicts (already loaded, cleaned, with contiguous classes) are the source.

As in detectron2 training, crowd annotations get no label (they remain in the ground truth,
where COCOeval ignores detections on them). An object of several polygons becomes one polygon
joined by zero-width seams (Ultralytics' ``merge_multi_segment``; rasterised it covers the
same pixels up to the seams); an RLE mask becomes its outer contours first.
"""

import hashlib
import json
import logging
import os
import re
import shutil

import cv2
import numpy as np
import pycocotools.mask as mask_util

from ..utils.io import atomic_write_json, atomic_write_text

__all__ = ["export_yolo_dataset", "read_index", "annotation_polygons", "dataset_fingerprint", "load_dataset",
           "LINK_MODES", "INDEX_VERSION"]

logger = logging.getLogger(__name__)

#: How images get into the layout: ``symlink`` (default), ``hardlink`` or ``copy``.
LINK_MODES = ("symlink", "hardlink", "copy")
#: Version of the ``<split>.wnlb.json`` index.
INDEX_VERSION = 1

_SAFE_STEM = re.compile(r"^[A-Za-z0-9_.-]+$")


def _polygons_from_rle(rle):
    mask = mask_util.decode(rle)
    contours = cv2.findContours(np.ascontiguousarray(mask), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def annotation_polygons(segmentation, height, width):
    """The polygons of one annotation's segmentation, in pixels.

    Args:
        segmentation: COCO polygons (list of flat lists) or an RLE dict (compressed or not).
        height, width (int): the image size (for RLE).

    Returns:
        list[list[float]]: polygons with at least 3 points; empty if there is no usable mask.
    """
    if isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_util.frPyObjects(rle, height, width)
        return _polygons_from_rle(rle)
    if isinstance(segmentation, list):
        return [[float(v) for v in p] for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
    return []


def _label_line(cls, polygons, height, width):
    from ultralytics.data.converter import merge_multi_segment

    if len(polygons) > 1:
        points = np.concatenate(merge_multi_segment(polygons), axis=0)
    else:
        points = np.asarray(polygons[0], dtype=float).reshape(-1, 2)
    points = np.clip(points / np.array([width, height], dtype=float), 0.0, 1.0)
    return " ".join([str(int(cls))] + [f"{v:.6f}" for v in points.reshape(-1)])


def _place(src, dst, link):
    if os.path.lexists(dst):
        os.remove(dst)
    if link == "symlink":
        os.symlink(os.path.abspath(src), dst)
    elif link == "hardlink":
        os.link(src, dst)
    else:
        shutil.copyfile(src, dst)


def _stem(image_id):
    stem = str(image_id)
    if not _SAFE_STEM.match(stem):
        raise ValueError(f"export_yolo_dataset: image id {image_id!r} cannot be a file name; "
                         "expected letters, digits, '_', '-' or '.'")
    return stem


def load_dataset(dataset):
    """``(name, dataset dicts, class names, dataset id -> class map)`` of a registered dataset.

    Raises:
        ValueError: the name is not registered.
    """
    if isinstance(dataset, str):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        if dataset not in DatasetCatalog.list():
            raise ValueError(f"export_yolo_dataset: dataset {dataset!r} is not registered "
                             "(import wnlb_d2 registers the project's datasets)")
        meta = MetadataCatalog.get(dataset)
        return dataset, DatasetCatalog.get(dataset), list(meta.thing_classes), getattr(
            meta, "thing_dataset_id_to_contiguous_id", None)
    raise ValueError(f"export_yolo_dataset: expected a registered dataset name, got {dataset!r}")


def dataset_fingerprint(dicts):
    """A hash of what an export depends on: images (id, file, size) and objects (class, crowd, box).

    Args:
        dicts (list[dict]): detectron2 dataset dicts.

    Returns:
        str: hex digest; an index whose fingerprint differs is stale.
    """
    h = hashlib.sha1()
    for d in dicts:
        objs = [(a.get("category_id"), a.get("iscrowd", 0), [round(float(v), 2) for v in a.get("bbox", [])])
                for a in d.get("annotations", [])]
        h.update(json.dumps([str(d["image_id"]), d["file_name"], d.get("height"), d.get("width"), objs]).encode())
    return h.hexdigest()


def export_yolo_dataset(dataset, root, split, link="symlink", loaded=None):
    """Write a registered detectron2 dataset into Ultralytics' segment layout under ``root``.

    Re-running replaces the split's files (labels are small; images are only links by default).

    Args:
        dataset (str): a name in detectron2's ``DatasetCatalog`` with instance masks.
        root (str): the Ultralytics dataset root (several splits may share it).
        split (str): the split's folder name, e.g. ``"train"`` or ``"val"``.
        link (str): one of :data:`LINK_MODES`.
        loaded (tuple or None): :func:`load_dataset`'s result for ``dataset``, if loaded already.

    Returns:
        dict: the index (also written to ``<root>/<split>.wnlb.json``): ``dataset``, ``split``,
        ``names`` (class index -> name), ``category_ids`` (class index -> dataset category id),
        ``images`` (per image ``yolo_file`` relative to ``root``, ``file_name``, ``image_id``,
        ``height``, ``width``, ``objects``), ``skipped`` (counts of what got no label),
        ``fingerprint`` (:func:`dataset_fingerprint`).

    Raises:
        ValueError: unknown dataset, bad split name or link mode, a dataset without masks,
            image ids that cannot be file names, or two images with one id.
    """
    if link not in LINK_MODES:
        raise ValueError(f"export_yolo_dataset: link must be one of {LINK_MODES}, got {link!r}")
    if not isinstance(split, str) or not _SAFE_STEM.match(split):
        raise ValueError(f"export_yolo_dataset: split must be a plain folder name, got {split!r}")
    name, dicts, classes, id_map = loaded or load_dataset(dataset)
    if not any("segmentation" in a for d in dicts for a in d.get("annotations", [])):
        raise ValueError(f"export_yolo_dataset: {name} has no instance masks; the YOLO segment task needs them")
    contiguous_to_id = ({v: k for k, v in id_map.items()} if id_map else {i: i + 1 for i in range(len(classes))})

    image_dir = os.path.join(root, "images", split)
    label_dir = os.path.join(root, "labels", split)
    for d in (image_dir, label_dir):
        if os.path.isdir(d):
            shutil.rmtree(d)  # a previous export may have had other images
        os.makedirs(d)
    cache = os.path.join(root, "labels", f"{split}.cache")  # Ultralytics' label cache of the old files
    if os.path.exists(cache):
        os.remove(cache)

    images, seen, skipped = [], set(), {"crowd": 0, "no_mask": 0}
    for d in dicts:
        stem = _stem(d["image_id"])
        if stem in seen:
            raise ValueError(f"export_yolo_dataset: {name} has two images with id {d['image_id']!r}")
        seen.add(stem)
        ext = os.path.splitext(d["file_name"])[1].lower()
        rel = os.path.join("images", split, stem + ext)
        _place(d["file_name"], os.path.join(root, rel), link)
        h, w = int(d["height"]), int(d["width"])
        lines = []
        for ann in d.get("annotations", []):
            if ann.get("iscrowd", 0):
                skipped["crowd"] += 1
                continue
            polygons = annotation_polygons(ann.get("segmentation"), h, w)
            if not polygons:
                skipped["no_mask"] += 1
                continue
            lines.append(_label_line(ann["category_id"], polygons, h, w))
        atomic_write_text(os.path.join(label_dir, stem + ".txt"), "".join(line + "\n" for line in lines))
        images.append({"yolo_file": rel, "file_name": d["file_name"], "image_id": d["image_id"],
                       "height": h, "width": w, "objects": len(lines)})

    index = {
        "version": INDEX_VERSION,
        "dataset": name,
        "split": split,
        "names": {i: c for i, c in enumerate(classes)},
        # Classes without a dataset id (none in the registered datasets) cannot be scored.
        "category_ids": {i: int(contiguous_to_id[i]) for i in range(len(classes)) if i in contiguous_to_id},
        "images": images,
        "skipped": skipped,
        "fingerprint": dataset_fingerprint(dicts),
    }
    atomic_write_json(os.path.join(root, f"{split}.wnlb.json"), index)
    logger.info(f"Exported {name} to {root} ({split}): {len(images)} images ({link}), "
                f"{sum(i['objects'] for i in images)} objects; no label for {skipped['crowd']} crowd and "
                f"{skipped['no_mask']} mask-less annotations")
    return index


def read_index(root, split):
    """The index written by :func:`export_yolo_dataset` (keys of ``names``/``category_ids`` as ints).

    Raises:
        FileNotFoundError: no export of ``split`` under ``root``.
    """
    path = os.path.join(root, f"{split}.wnlb.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No YOLO export index {path}; run export_yolo_dataset first")
    with open(path) as f:
        index = json.load(f)
    for key in ("names", "category_ids"):
        index[key] = {int(k): v for k, v in index[key].items()}
    return index
