"""The YOLOv8-seg detector family of the study runner (``tools/run_experiment.py --detector yolov8``).

Rows as for the detectron2 families: ``pretrained`` trains the stock model YAML (e.g.
``yolov8n-seg.yaml``: no COCO weights offline) on the normal-light data, ``finetuned`` trains the
same model from those weights on low-light data, ``nlb`` / ``wnlb`` the model with blocks after
P3-P5 (residual / weighted fusion, identity at initialisation) loaded from the same weights.
Every row is scored by pycocotools on the same registered test sets, with the same evaluation
degradation bytes, as COCOEvaluator scores the detectron2 rows.

Lengths: the spec's iterations are converted to Ultralytics epochs (``iters * batch / images``,
at least 1). ``spec.opts`` are Ultralytics training arguments as ``KEY VALUE`` pairs
(``imgsz 128 batch 16 close_mosaic 3``). YOLO trains every parameter (``finetune_policy`` is
the detectron2 families'), and the two-stage rows (enhancers) are detectron2's.
"""

import json
import logging
import math
import os

import yaml

from ..config import set_config_value
from ..experiment.family import DETECTOR_FAMILY_REGISTRY, DetectorFamily, TrainedRow
from .api import evaluate_yolo, train_yolo_row
from .data import LowLightSpec
from .model_yaml import DEFAULT_STAGES, check_model_yaml, insert_nonlocal_blocks, model_yaml_name, write_model_yaml
from .pictures import save_yolo_side_by_side

__all__ = ["YOLOv8Family"]

logger = logging.getLogger(__name__)


@DETECTOR_FAMILY_REGISTRY.register()
class YOLOv8Family(DetectorFamily):
    """YOLOv8-seg rows through Ultralytics (see the module docstring)."""

    name = "yolov8"

    def __init__(self, spec):
        super().__init__(spec)
        opts = list(spec.opts)
        if len(opts) % 2:
            raise ValueError(f"--detector yolov8: the overrides must be KEY VALUE pairs of Ultralytics "
                             f"training arguments, got {opts}")
        self.train_args = {k: yaml.safe_load(str(v)) for k, v in zip(opts[::2], opts[1::2])}
        self.imgsz = int(self.train_args.pop("imgsz", 128))
        self.batch = int(self.train_args.pop("batch", 16))

    def validate(self):
        if self.spec.enhancers:
            raise ValueError("--detector yolov8: two-stage rows (--enhancers) are run by the detectron2 families only")
        if self.spec.block_opts:
            raise ValueError(f"--detector yolov8: block_opts {self.spec.block_opts} are detectron2 config keys; "
                             "the YOLO blocks take their options from the model YAML")
        # An unknown or malformed model YAML (and one whose model cannot be built) fails now, not
        # after training.
        check_model_yaml(self.spec.config_file)
        if self.spec.finetune_policy != "all":
            logger.info(f"--detector yolov8 trains every parameter (finetune_policy {self.spec.finetune_policy!r} "
                        "applies to the detectron2 families)")

    def low_light_config(self):
        from detectron2.config import get_cfg

        from ..config import add_lowlight_config

        cfg = get_cfg()
        add_lowlight_config(cfg)
        return cfg

    def _epochs(self, iters, dataset):
        from detectron2.data import DatasetCatalog

        images = max(1, len(DatasetCatalog.get(dataset)))
        return max(1, math.ceil(iters * self.batch / images))

    def _spec(self, degrade_train, degrade_val, seed=-1, overrides=None):
        cfg = self.low_light_config()
        cfg.INPUT.LOW_LIGHT.ENABLED = bool(degrade_train or degrade_val)
        cfg.INPUT.LOW_LIGHT.TRAIN = bool(degrade_train)
        cfg.INPUT.LOW_LIGHT.TEST = bool(degrade_val)
        cfg.INPUT.LOW_LIGHT.TRAIN_SEED = int(seed)
        for key, value in (overrides or {}).items():
            set_config_value(cfg, key, value)
        return LowLightSpec.from_config(cfg)

    def _row(self, row, model, train_data, output_dir, seed, iters, lr, low_light, plain_weights=None, factors=None):
        args = {**self.train_args, "seed": seed, "lr0": lr, **(factors or {})}
        if self.spec.finetune_optimizer and row != "pretrained":
            args["optimizer"] = self.spec.finetune_optimizer
        epochs = self._epochs(iters, train_data)
        logger.info(f"[{row}] seed {seed}: {epochs} epochs of {model} on {train_data} -> {output_dir}")
        val = self.spec.normal_test_data or self.spec.test_data
        train_yolo_row(model, train_data, val, output_dir, low_light=low_light, plain_weights=plain_weights,
                       epochs=epochs, imgsz=self.imgsz, batch=self.batch, **args)
        with open(os.path.join(output_dir, "row.json")) as f:
            info = json.load(f)
        trajectory = [{"iteration": int(p["iteration"]), **self._stage_names(p)} for p in info.get("w_trajectory", [])]
        return TrainedRow(row=row, seed=seed, weights=info["weights"], output_dir=output_dir,
                          seconds=info["train_seconds"], handle=info, w_trajectory=trajectory)

    @staticmethod
    def _stage_names(w):
        """``{layer index: w}`` (row.json) -> ``{"P3": w, ...}``: the blocks follow the stages
        :data:`DEFAULT_STAGES` in layer order, as ``finetune`` inserts them (the detectron2 rows
        name theirs res3, res4, ...)."""
        layers = sorted(int(k) for k in w if k != "iteration")
        if len(layers) != len(DEFAULT_STAGES):
            return {f"layer{k}": float(w[str(k)] if str(k) in w else w[k]) for k in layers}
        return {stage: float(w[str(k)] if str(k) in w else w[k]) for stage, k in zip(DEFAULT_STAGES, layers)}

    def train_identity(self):
        # Ultralytics validates at the end of training on this set; the weights it keeps follow.
        return {"val_data": self.spec.normal_test_data or self.spec.test_data,
                "low_light_test": bool(self.spec.low_light_test)}

    def pretrain(self, output_dir, resume=False):
        s = self.spec
        return self._row("pretrained", s.config_file, s.pretrain_data, output_dir, s.seeds[0], s.pretrain_iters,
                         2e-3, self._spec(False, False))

    def load(self, weights, output_dir):
        return TrainedRow(row="pretrained", seed=None, weights=weights, output_dir=output_dir, handle={})

    def finetune(self, row, pretrained, seed, output_dir, resume=False):
        s = self.spec
        model = s.config_file
        if row in ("nlb", "wnlb"):
            fusion = "residual" if row == "nlb" else "weighted"
            options = {"weight_init": float(s.wnlb_weight_init)} if row == "wnlb" and s.wnlb_weight_init else {}
            os.makedirs(output_dir, exist_ok=True)
            # The scale is read from the file name (yolov8n-seg-wnlb.yaml), so the name matters.
            model = os.path.join(output_dir, model_yaml_name(s.config_file, fusion))
            write_model_yaml(model, insert_nonlocal_blocks(s.config_file, fusion=fusion, **options))
        low_light = self._spec(s.low_light_train, s.low_light_test, seed=seed)
        # The blocks' learning-rate factors, as the detectron2 rows' SOLVER.WNLB_*_FACTOR.
        factors = {"wnlb_lr_factor": float(s.wnlb_lr_factor), "wnlb_weight_lr_factor": float(s.wnlb_weight_lr_factor)}
        return self._row(row, model, s.finetune_data, output_dir, seed, s.finetune_iters, s.finetune_lr, low_light,
                         plain_weights=pretrained.weights, factors=factors)

    def evaluate(self, trained, dataset, *, low_light, output_dir, overrides=None):
        if overrides and any(k.startswith("INPUT.ENHANCER") for k in overrides):
            raise ValueError("--detector yolov8 evaluates no enhancer rows")
        spec = self._spec(False, low_light, overrides=overrides)
        # The bootstrap interval of the rows' own test sets; the severity levels (the evaluations
        # with overrides) keep only their AP in results.json, so they skip its ~10 s per run.
        samples = 0 if overrides else int(self.spec.bootstrap_samples)
        return evaluate_yolo(trained.weights, dataset, output_dir, low_light=spec, imgsz=self.imgsz,
                             batch=max(self.batch, 32), bootstrap_samples=samples)

    def feature_errors(self, trained, dataset, *, low_light, num_images):
        from .features import yolo_feature_errors

        # The images the evaluation scores: its degradation (seeded per image) and size.
        return yolo_feature_errors(trained.weights, dataset, low_light_spec=self._spec(False, low_light),
                                   num_images=num_images, imgsz=self.imgsz)

    def reload(self, trained):
        path = os.path.join(trained.output_dir, "row.json")
        if os.path.isfile(path):
            with open(path) as f:
                trained.handle = json.load(f)
        else:
            trained.handle = {}  # loaded weights (the pretrained row from --weights)

    def block_weights(self, trained):
        return self._stage_names((trained.handle or {}).get("block_w", {}))

    def save_pictures(self, trained_rows, dataset, output_dir, *, num_images=3, low_light=False):
        weights = {row: t.weights for row, t in trained_rows.items() if t.weights}
        return save_yolo_side_by_side(weights, dataset, output_dir, low_light=self._spec(False, low_light),
                                      num_images=num_images, imgsz=self.imgsz)
