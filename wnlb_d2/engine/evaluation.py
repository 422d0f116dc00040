"""COCOEvaluator that works with and without detectron2's compiled extension."""

import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator

__all__ = ["has_compiled_detectron2", "build_coco_evaluator"]

logger = logging.getLogger(__name__)


def has_compiled_detectron2():
    """Whether ``detectron2._C`` is the real compiled extension (not the CPU stand-in)."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return not getattr(_C, "IS_STANDIN", False)


def build_coco_evaluator(cfg, dataset_name, output_folder=None):
    """A :class:`COCOEvaluator` for ``dataset_name`` (bbox, and segm when the model has masks).

    Uses detectron2's fast C++ COCOeval when it is compiled, else pycocotools (same numbers).
    A dataset's metadata ``evaluation_tasks`` (e.g. ExDark: boxes only) limits the tasks, so a
    Mask R-CNN is not scored on masks the dataset does not have.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    tasks = ["bbox", "segm"] if cfg.MODEL.MASK_ON else ["bbox"]
    allowed = MetadataCatalog.get(dataset_name).get("evaluation_tasks", None)
    if allowed is not None:
        tasks = [t for t in tasks if t in allowed]
    return COCOEvaluator(
        dataset_name,
        tasks=tuple(tasks),
        distributed=True,
        output_dir=output_folder,
        use_fast_impl=has_compiled_detectron2(),
    )
