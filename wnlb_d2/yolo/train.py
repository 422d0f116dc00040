"""Ultralytics' segmentation trainer and validator with low-light data and plain-weight loading.

* :class:`LowLightSegmentationTrainer` builds its datasets with
  :func:`~wnlb_d2.yolo.data.build_lowlight_dataset`, builds the model from its YAML (blocks
  included) and, with ``plain_weights``, loads a plain YOLO model's weights through the layer
  map (:func:`~wnlb_d2.yolo.weights.load_plain_weights`): Ultralytics' ``Model.train()``
  rebuilds a YAML model from scratch and matches weights by name, which the inserted layers
  break. The blocks' scalar weights ``w`` go into the optimizer's group without weight decay
  (Ultralytics would decay every non-norm weight, pulling w back to 0, i.e. to the identity),
  and the blocks' parameters can get their own learning-rate factors, as
  ``SOLVER.WNLB_LR_FACTOR`` / ``SOLVER.WNLB_WEIGHT_LR_FACTOR`` give them in detectron2.
* :class:`LowLightSegmentationValidator` validates on the same low-light images; Ultralytics'
  COCO step is skipped (:mod:`wnlb_d2.yolo.evaluate` scores ``predictions.json`` with
  pycocotools against the detectron2 ground truth).
"""

import logging
import math
from copy import copy

from ultralytics.models.yolo.segment import SegmentationTrainer, SegmentationValidator
from ultralytics.nn.tasks import SegmentationModel
from ultralytics.utils import DEFAULT_CFG, RANK, ops
from ultralytics.utils.torch_utils import unwrap_model

from ..utils.optim import group_by_lr_factor
from ..utils.params import is_number
from .data import build_lowlight_dataset
from .modules import YOLONonLocalBlock2d
from .weights import load_plain_weights

__all__ = ["LowLightSegmentationTrainer", "LowLightSegmentationValidator", "block_weights"]

logger = logging.getLogger(__name__)


def block_weights(model):
    """``{layer index: w}`` of every weighted-fusion block of a YOLO model (floats; residual blocks have no w)."""
    model = unwrap_model(model)
    return {i: m.fusion_weight.item() for i, m in enumerate(model.model)
            if isinstance(m, YOLONonLocalBlock2d) and m.fusion == "weighted"}


class LowLightSegmentationValidator(SegmentationValidator):
    """``SegmentationValidator`` on low-light images (see :mod:`wnlb_d2.yolo.data`)."""

    def build_dataset(self, img_path, mode="val", batch=None):
        """The validation dataset, degraded deterministically when the data YAML says so."""
        return build_lowlight_dataset(self.args, img_path, batch, self.data, mode=mode, stride=self.stride)

    def init_metrics(self, model):
        """As Ultralytics, without its faster-coco-eval requirement check (pycocotools scores here)."""
        save_json = self.args.save_json
        self.args.save_json = False
        try:
            super().init_metrics(model)
        finally:
            self.args.save_json = save_json
        # Full-resolution masks whenever predictions are saved (what Ultralytics does too).
        self.process = ops.process_mask_native if save_json or self.args.save_txt else ops.process_mask
        # Class index + 1, mapped to the dataset's category ids by wnlb_d2.yolo.evaluate.
        self.class_map = list(range(1, len(model.names) + 1))

    def eval_json(self, stats):
        """Skip Ultralytics' COCO evaluation (it needs faster-coco-eval and its own annotation path)."""
        return stats


def _check_factor(name, value):
    # is_number: a bool is refused, as SOLVER.WNLB_*_FACTOR are in detectron2's setup.
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class LowLightSegmentationTrainer(SegmentationTrainer):
    """``SegmentationTrainer`` with low-light data, plain-weight loading and no decay on w.

    Args:
        cfg, overrides, _callbacks: as ``SegmentationTrainer`` (``overrides["model"]`` a model
            YAML, ``overrides["data"]`` a data YAML from :func:`~wnlb_d2.yolo.data.write_data_yaml`).
        plain_weights: optional weights of the plain model (a ``.pt`` path, model or state
            dict) loaded into the model with blocks before training.
        wnlb_lr_factor (float): multiplies the learning rate of every parameter of a non-local
            block (1.0: one learning rate for all, Ultralytics' own).
        wnlb_weight_lr_factor (float): multiplies, on top, the learning rate of the blocks'
            fusion weights w alone (the study runner's presets use 100 for the detectron2
            rows: w moves off its initial value in a short fine-tuning).
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None, plain_weights=None,
                 wnlb_lr_factor=1.0, wnlb_weight_lr_factor=1.0):
        self.plain_weights = plain_weights
        self.wnlb_lr_factor = _check_factor("wnlb_lr_factor", wnlb_lr_factor)
        self.wnlb_weight_lr_factor = _check_factor("wnlb_weight_lr_factor", wnlb_weight_lr_factor)
        super().__init__(cfg, overrides, _callbacks)

    def build_dataset(self, img_path, mode="train", batch=None):
        """Training (fresh degradations) or validation (seeded per image) dataset."""
        gs = max(int(unwrap_model(self.model).stride.max()), 32)
        return build_lowlight_dataset(self.args, img_path, batch, self.data, mode=mode, rect=mode == "val", stride=gs)

    def get_model(self, cfg=None, weights=None, verbose=True):
        """The model of ``cfg`` (with blocks), with ``weights`` (same model) or the plain weights."""
        model = self.set_model_names_for_load(
            SegmentationModel(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1)
        )
        if weights:
            model.load(weights)
        elif self.plain_weights is not None:
            load_plain_weights(model, self.plain_weights)
        return model

    def get_validator(self):
        """A :class:`LowLightSegmentationValidator` on the trainer's validation loader."""
        return LowLightSegmentationValidator(
            self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
        )

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """Ultralytics' optimizer, with the blocks' w moved to the group without weight decay.

        With learning-rate factors, each group's block parameters move to a copy of that
        group whose ``lr`` is multiplied by their factor. Ultralytics' warm-up and its
        ``LambdaLR`` scale every group from its own initial ``lr``, so the factor holds for
        the whole run.
        """
        optimizer = super().build_optimizer(model, name, lr, momentum, decay, iterations)
        blocks = [m for m in unwrap_model(model).modules() if isinstance(m, YOLONonLocalBlock2d)]
        ws = {id(m.fusion_weight) for m in blocks if m.fusion_weight.requires_grad}
        no_decay = next((g for g in optimizer.param_groups if g.get("weight_decay", 0) == 0), None)
        moved = 0
        for group in optimizer.param_groups:
            if group is no_decay or not group.get("weight_decay"):
                continue
            keep = [p for p in group["params"] if id(p) not in ws]
            moved += len(group["params"]) - len(keep)
            no_decay["params"].extend(p for p in group["params"] if id(p) in ws)
            group["params"] = keep
        if moved:
            logger.info(f"{moved} non-local block weight(s) w without weight decay")
        factors = {id(p): self.wnlb_lr_factor for m in blocks for p in m.parameters()}
        factors.update({i: self.wnlb_lr_factor * self.wnlb_weight_lr_factor for i in ws})
        self._scale_block_lrs(optimizer, factors)
        return optimizer

    @staticmethod
    def _scale_block_lrs(optimizer, factors):
        """Move the parameters with a factor != 1 (``{id(param): factor}``) into groups of their own lr.

        A group left with no parameters stays (empty): Ultralytics' callbacks read groups by place.
        """
        added = []
        for group in optimizer.param_groups:
            by_factor = group_by_lr_factor(group["params"], factors)
            group["params"] = by_factor.pop(1.0, [])
            for factor, params in by_factor.items():
                added.append({**group, "params": params, "lr": group["lr"] * factor})
        for group in added:  # appended: Ultralytics' own groups keep their places
            optimizer.add_param_group(group)
            logger.info(f"{len(group['params'])} non-local block parameter(s) at lr {group['lr']:g} "
                        f"({group.get('param_group', 'group')}, weight decay {group.get('weight_decay', 0):g})")
