"""COCO scores of YOLO predictions, comparable with detectron2's COCOEvaluator rows.

Ultralytics' own mask mAP is a different number: 101-point trapezoid integration of its own
precision-recall curve, greedy matching without crowd handling, masks compared at a quarter of
the input resolution during training validation. For a row beside the detectron2 rows, the
validator's ``predictions.json`` (COCO results, full-size RLE masks) is mapped back to the
dataset's image and category ids and scored by pycocotools' ``COCOeval`` against the same
ground truth detectron2 uses (the dataset's ``json_file``, else the registered dicts converted
as ``COCOEvaluator`` converts them), with the same metric names (AP, AP50, AP75, APs, APm,
APl, and AP-<class>).
"""

import contextlib
import copy
import io
import json
import logging
import os

import numpy as np

__all__ = ["COCO_METRICS", "coco_ground_truth", "results_to_dataset_ids", "score_coco"]

logger = logging.getLogger(__name__)

#: detectron2's names of COCOeval.stats[0:6].
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_ground_truth(dataset_name):
    """The COCO ground truth of a registered dataset, as detectron2's COCOEvaluator reads it.

    Args:
        dataset_name (str): a name in ``DatasetCatalog``.

    Returns:
        dict: COCO-format ``images``, ``annotations``, ``categories`` (dataset category ids).
    """
    from detectron2.data import MetadataCatalog
    from detectron2.data.datasets.coco import convert_to_coco_dict

    meta = MetadataCatalog.get(dataset_name)
    json_file = getattr(meta, "json_file", None)
    if json_file and os.path.isfile(json_file):
        with open(json_file) as f:
            return json.load(f)
    return convert_to_coco_dict(dataset_name)


def results_to_dataset_ids(results, index):
    """Map Ultralytics' results to the dataset's ids (image id from the file stem, category from the class).

    Args:
        results (list[dict]): ``predictions.json`` entries (``file_name`` and ``image_id`` from
            the file stem, ``category_id`` = class index + 1).
        index (dict): the export index (:func:`wnlb_d2.yolo.convert.read_index`).

    Returns:
        list[dict]: COCO results with ``image_id``, ``category_id``, ``bbox``, ``score`` and
        ``segmentation`` (if present).

    Raises:
        ValueError: a result names an image or class the index does not have.
    """
    by_stem = {os.path.splitext(os.path.basename(r["yolo_file"]))[0]: r["image_id"] for r in index["images"]}
    out = []
    for r in results:
        # The file name when Ultralytics gives it: its int(stem) turns an id "007" into 7.
        stem = os.path.splitext(r["file_name"])[0] if "file_name" in r else str(r["image_id"])
        cls = int(r["category_id"]) - 1
        if stem not in by_stem or cls not in index["category_ids"]:
            raise ValueError(f"results_to_dataset_ids: prediction for image {stem!r} class {cls} is not in the "
                             f"export index of {index['dataset']}")
        item = {"image_id": by_stem[stem], "category_id": index["category_ids"][cls], "bbox": r["bbox"],
                "score": r["score"]}
        if "segmentation" in r:
            item["segmentation"] = r["segmentation"]
        out.append(item)
    return out


def _class_aps(coco_eval, classes):
    """Per-class AP (``{"AP-<name>": value}``) of ``classes``, ``[(name, dataset category id), ...]``.

    As detectron2's ``COCOEvaluator._derive_coco_results``: area "all", maxDets 100, mean over IoU
    thresholds and recall points of the valid precisions. A class is found in COCOeval's
    precision array by its category id, not its position: the ground truth may list fewer
    categories than the metadata (a category of the metadata with no entry in the ground truth
    has no instance to score, like a listed category without instances: NaN).
    """
    precisions = coco_eval.eval["precision"]  # (iou, recall, category in params.catIds order, area, maxdet)
    position = {int(c): k for k, c in enumerate(coco_eval.params.catIds)}
    out = {}
    for name, cat_id in classes:
        k = position.get(int(cat_id))
        p = precisions[:, :, k, 0, -1] if k is not None else np.empty(0)
        p = p[p > -1]
        out[f"AP-{name}"] = float(np.mean(p) * 100) if p.size else float("nan")
    return out


def _named_classes(gt, class_names, class_ids):
    """``[(name, category id), ...]`` for the per-class APs (see :func:`score_coco`)."""
    cat_ids = sorted(gt.getCatIds())
    if class_names is None:
        return [(gt.cats[c]["name"], c) for c in cat_ids]
    if class_ids is None:
        if len(class_names) != len(cat_ids):
            raise ValueError(f"score_coco: {len(class_names)} class names {list(class_names)} for a ground truth of "
                             f"{len(cat_ids)} categories {cat_ids}; pass class_ids (each name's category id)")
        return list(zip(class_names, cat_ids))
    if len(class_ids) != len(class_names):
        raise ValueError(f"score_coco: {len(class_names)} class names but {len(class_ids)} class ids")
    unlisted = sorted(set(cat_ids) - {int(c) for c in class_ids})
    if unlisted:
        # Objects of these categories can never be predicted: scored as misses, and said so.
        logger.warning(f"score_coco: ground-truth categories {unlisted} are not among the model's classes; their "
                       "objects count as misses")
    missing = [(n, c) for n, c in zip(class_names, class_ids) if int(c) not in gt.cats]
    if missing:
        logger.info(f"score_coco: classes {missing} have no category in the ground truth (no instance): AP NaN")
    return list(zip(class_names, class_ids))


def score_coco(ground_truth, results, iou_types=("segm", "bbox"), class_names=None, class_ids=None,
               bootstrap_samples=0, bootstrap_seed=0):
    """pycocotools COCOeval of ``results`` against ``ground_truth``, in detectron2's format.

    Args:
        ground_truth (dict): COCO-format ground truth (see :func:`coco_ground_truth`).
        results (list[dict]): COCO results in the ground truth's ids.
        iou_types (sequence of str): ``"segm"`` and/or ``"bbox"``.
        class_names (list[str] or None): names for the per-class APs; default the ground truth's
            category names. Without ``class_ids``, one per ground-truth category, in the order of
            the sorted category ids.
        class_ids (list[int] or None): the dataset category id of each of ``class_names``. A
            category the ground truth does not list (a dataset may have categories without
            instances) gets AP NaN, as a listed category without instances does.
        bootstrap_samples (int): with >= 2, each task also gets ``"AP-ci95-lo"`` /
            ``"AP-ci95-hi"``: the image-level bootstrap interval of its AP, as
            :class:`wnlb_d2.engine.evaluation.BootstrapCOCOEvaluator` adds it (0: off).
        bootstrap_seed (int): seed of the resampling.

    Returns:
        dict: ``{"segm": {"AP": ..., "AP50": ..., ..., "AP-<class>": ...}, "bbox": {...}}``,
        in percent; NaN where COCOeval has no value (as detectron2).

    Raises:
        ValueError: a bad iou type or bootstrap count, or class names that do not fit the ground
            truth's categories.
    """
    if bootstrap_samples == 1 or bootstrap_samples < 0:
        raise ValueError(f"score_coco: bootstrap_samples must be 0 (off) or >= 2, got {bootstrap_samples}")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = copy.deepcopy(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    classes = _named_classes(gt, class_names, class_ids)
    out = {}
    for iou_type in iou_types:
        if iou_type not in ("segm", "bbox"):
            raise ValueError(f"score_coco: iou type must be 'segm' or 'bbox', got {iou_type!r}")
        dets = copy.deepcopy(results)
        if iou_type == "segm":
            # As detectron2: the box of a segm result is derived from its mask by loadRes.
            for d in dets:
                d.pop("bbox", None)
            dets = [d for d in dets if "segmentation" in d]
        else:
            dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
        if not dets:
            logger.warning(f"score_coco: no {iou_type} results; AP is 0")
            out[iou_type] = {m: 0.0 for m in COCO_METRICS}
            if bootstrap_samples >= 2:
                out[iou_type].update({"AP-ci95-lo": 0.0, "AP-ci95-hi": 0.0})  # every resample scores 0 too
            continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            dt = gt.loadRes(dets)
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        logger.info(f"COCOeval ({iou_type}):\n{buf.getvalue()}")
        metrics = {m: float(ev.stats[i] * 100) if ev.stats[i] >= 0 else float("nan")
                   for i, m in enumerate(COCO_METRICS)}
        metrics.update(_class_aps(ev, classes))
        if bootstrap_samples >= 2:
            from ..experiment.stats import bootstrap_ap

            boot = bootstrap_ap(ev, num_samples=int(bootstrap_samples), seed=int(bootstrap_seed))
            metrics["AP-ci95-lo"], metrics["AP-ci95-hi"] = boot["ci95"]
            logger.info(f"{iou_type} AP {metrics['AP']:.2f}, image-level bootstrap 95 % interval "
                        f"[{boot['ci95'][0]:.2f}, {boot['ci95'][1]:.2f}] ({bootstrap_samples} samples of "
                        f"{boot['num_images']} images)")
        out[iou_type] = metrics
    return out
