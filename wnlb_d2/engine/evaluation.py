"""COCOEvaluator that works with and without detectron2's compiled extension."""

import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator

__all__ = ["has_compiled_detectron2", "build_coco_evaluator", "BootstrapCOCOEvaluator"]

logger = logging.getLogger(__name__)


def has_compiled_detectron2():
    """Whether ``detectron2._C`` is the real compiled extension (not the CPU stand-in)."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return not getattr(_C, "IS_STANDIN", False)


class BootstrapCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator that adds an image-level bootstrap interval to each task's AP.

    The interval comes from the matches COCOeval already computed
    (:func:`wnlb_d2.experiment.stats.bootstrap_ap`), so it costs no inference. It is reported as
    ``"AP-ci95-lo"`` / ``"AP-ci95-hi"`` (names with "-", like the per-class APs, so detectron2's
    ``copypaste`` summary lines stay as they are).

    Args:
        *args, **kwargs: those of :class:`COCOEvaluator`.
        bootstrap_samples (int): resamples of the test images (>= 2).
        bootstrap_seed (int): seed of the resampling (the same seed gives the same interval).
    """

    def __init__(self, *args, bootstrap_samples=1000, bootstrap_seed=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bootstrap_samples = int(bootstrap_samples)
        self.bootstrap_seed = int(bootstrap_seed)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if coco_eval is not None and self.bootstrap_samples >= 2:
            from ..experiment.stats import bootstrap_ap

            boot = bootstrap_ap(coco_eval, num_samples=self.bootstrap_samples, seed=self.bootstrap_seed)
            results["AP-ci95-lo"], results["AP-ci95-hi"] = boot["ci95"]
            self._logger.info(f"{iou_type} AP {results['AP']:.2f}, image-level bootstrap 95 % interval "
                              f"[{boot['ci95'][0]:.2f}, {boot['ci95'][1]:.2f}] ({self.bootstrap_samples} samples "
                              f"of {boot['num_images']} images)")
        return results


def build_coco_evaluator(cfg, dataset_name, output_folder=None):
    """A :class:`COCOEvaluator` for ``dataset_name`` (bbox, and segm when the model has masks).

    Uses detectron2's fast C++ COCOeval when it is compiled, else pycocotools (same numbers).
    With ``TEST.BOOTSTRAP_SAMPLES`` > 0 it is a :class:`BootstrapCOCOEvaluator`.
    A dataset's metadata ``evaluation_tasks`` (e.g. ExDark: boxes only) limits the tasks, so a
    Mask R-CNN is not scored on masks the dataset does not have.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    tasks = ["bbox", "segm"] if cfg.MODEL.MASK_ON else ["bbox"]
    allowed = MetadataCatalog.get(dataset_name).get("evaluation_tasks", None)
    if allowed is not None:
        tasks = [t for t in tasks if t in allowed]
    kwargs = dict(tasks=tuple(tasks), distributed=True, output_dir=output_folder,
                  use_fast_impl=has_compiled_detectron2())
    samples = cfg.TEST.get("BOOTSTRAP_SAMPLES", 0)
    if samples:
        return BootstrapCOCOEvaluator(dataset_name, bootstrap_samples=samples, **kwargs)
    return COCOEvaluator(dataset_name, **kwargs)
