"""Detector families built by detectron2: Mask R-CNN and SOLOv2 (any meta-architecture on a ResNet).

Each row is a detectron2 training run (:class:`~wnlb_d2.engine.LowLightTrainer`) in this
process; the NLB and wNLB rows are the same config with the one-key backbone swap
(:data:`wnlb_d2.naming.WNLB_BACKBONES`) and ``MODEL.WNLB.FUSION`` residual / weighted; every
row is evaluated by COCOEvaluator.
"""

import logging
import os
import re
import time

from ..config import set_config_value
from ..engine.hooks import wnlb_weights
from ..engine.setup import setup_cfg
from ..engine.trainer import LowLightTrainer
from ..naming import wnlb_backbone_name
from .family import DETECTOR_FAMILY_REGISTRY, DetectorFamily, TrainedRow, read_w_trajectory

__all__ = ["Detectron2Family", "MaskRCNNFamily", "SOLOv2Family"]

logger = logging.getLogger(__name__)


class Detectron2Family(DetectorFamily):
    """Rows of any detectron2 model whose config names a (stock) ResNet backbone.

    The spec's ``config_file`` is the detector with the stock backbone; ``opts`` apply to every
    run. Training runs are seeded (``SEED``, ``INPUT.LOW_LIGHT.TRAIN_SEED`` and the global RNGs),
    so the same seed repeats a run up to the non-determinism of the CPU/GPU kernels.
    """

    can_resume = True

    def _cfg(self, opts):
        return setup_cfg(self.spec.config_file, list(self.spec.opts) + list(opts))

    def validate(self):
        # Building the config checks the file, every override and MODEL.WNLB.
        base = self._cfg([])
        if self.spec.rows and any(r in ("nlb", "wnlb") for r in self.spec.rows):
            self._cfg(self._block_opts(base, "wnlb"))
        weights = self.spec.weights
        if weights and "://" not in weights:
            # Weights of another architecture (a SOLOv2 checkpoint for Mask R-CNN) are refused
            # by the checkpointer, which names both: load them once now, before anything is written.
            cfg = self._cfg(["MODEL.WEIGHTS", weights])
            LowLightTrainer.load_for_inference(cfg, LowLightTrainer.build_model(cfg))

    def low_light_config(self):
        return self._cfg([])

    def _low_light_opts(self):
        s = self.spec
        return ["INPUT.LOW_LIGHT.ENABLED", "True", "INPUT.LOW_LIGHT.TRAIN", str(s.low_light_train),
                "INPUT.LOW_LIGHT.TEST", str(s.low_light_test)]

    def _block_opts(self, base_cfg, row):
        if row not in ("nlb", "wnlb"):
            return []
        opts = ["MODEL.BACKBONE.NAME", wnlb_backbone_name(base_cfg.MODEL.BACKBONE.NAME),
                "MODEL.WNLB.FUSION", "residual" if row == "nlb" else "weighted"]
        if row == "wnlb" and self.spec.wnlb_weight_init:
            opts += ["MODEL.WNLB.WEIGHT_INIT", str(float(self.spec.wnlb_weight_init))]
        return opts + list(self.spec.block_opts)

    def _train(self, row, opts, output_dir, seed, resume=False):
        cfg = self._cfg(list(opts) + ["OUTPUT_DIR", output_dir, "SEED", str(seed),
                                      "INPUT.LOW_LIGHT.TRAIN_SEED", str(seed)])
        # A run longer than the checkpoint period keeps a checkpoint every quarter, so a killed
        # run resumes from there (checkpoints do not change the training); removed when it ends.
        added_checkpoints = cfg.SOLVER.CHECKPOINT_PERIOD >= cfg.SOLVER.MAX_ITER > 1
        if added_checkpoints:
            cfg.defrost()
            cfg.SOLVER.CHECKPOINT_PERIOD = max(1, cfg.SOLVER.MAX_ITER // 4)
            cfg.freeze()
        from detectron2.utils.env import seed_all_rng

        # default_setup (which seeds) runs only under train_net.py; seed here so data order and
        # the blocks' initialisation follow the seed.
        seed_all_rng(seed)
        logger.info(f"[{row}] seed {seed}: {'resuming' if resume else 'training'} {cfg.SOLVER.MAX_ITER} iterations "
                    f"on {cfg.DATASETS.TRAIN} -> {output_dir}")
        t0 = time.perf_counter()
        trainer = LowLightTrainer(cfg)
        trainer.resume_or_load(resume=resume)
        trainer.train()
        seconds = time.perf_counter() - t0
        if added_checkpoints:
            for name in os.listdir(output_dir):
                if re.fullmatch(r"model_\d+\.pth", name):
                    os.remove(os.path.join(output_dir, name))
        model = getattr(trainer.model, "module", trainer.model)
        return TrainedRow(row=row, seed=seed, weights=os.path.join(output_dir, "model_final.pth"),
                          output_dir=output_dir, seconds=seconds, handle=(cfg, model),
                          w_trajectory=read_w_trajectory(os.path.join(output_dir, "metrics.json")))

    def pretrain(self, output_dir, resume=False):
        s = self.spec
        steps = max(1, int(0.8 * s.pretrain_iters))  # one LR drop at 80 % of whatever length is asked for
        # DATASETS.TEST empty: the rows are evaluated afterwards, by the runner.
        opts = ["DATASETS.TRAIN", f"('{s.pretrain_data}',)", "DATASETS.TEST", "()",
                "SOLVER.MAX_ITER", str(s.pretrain_iters), "SOLVER.STEPS", f"({steps},)",
                "INPUT.LOW_LIGHT.ENABLED", "False"]
        return self._train("pretrained", opts, output_dir, seed=s.seeds[0], resume=resume)

    def load(self, weights, output_dir):
        cfg = self._cfg(["MODEL.WEIGHTS", weights, "OUTPUT_DIR", output_dir])
        model = LowLightTrainer.build_model(cfg)
        LowLightTrainer.load_for_inference(cfg, model)
        return TrainedRow(row="pretrained", seed=None, weights=weights, output_dir=output_dir, handle=(cfg, model))

    def finetune(self, row, pretrained, seed, output_dir, resume=False):
        s = self.spec
        base = self._cfg([])
        opts = ["DATASETS.TRAIN", f"('{s.finetune_data}',)", "DATASETS.TEST", "()",
                "SOLVER.MAX_ITER", str(s.finetune_iters), "SOLVER.BASE_LR", str(s.finetune_lr),
                "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", str(min(20, s.finetune_iters // 5)),
                "SOLVER.FINETUNE_POLICY", s.finetune_policy,
                "SOLVER.WNLB_LR_FACTOR", str(float(s.wnlb_lr_factor)),
                "SOLVER.WNLB_WEIGHT_LR_FACTOR", str(float(s.wnlb_weight_lr_factor)),
                "MODEL.WEIGHTS", pretrained.weights]
        if s.finetune_optimizer:
            opts += ["SOLVER.OPTIMIZER", s.finetune_optimizer]
        opts += self._low_light_opts() + self._block_opts(base, row)
        return self._train(row, opts, output_dir, seed, resume=resume)

    def evaluate(self, trained, dataset, *, low_light, output_dir, overrides=None):
        cfg, model = trained.handle
        cfg = cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TEST = (dataset,)
        cfg.INPUT.LOW_LIGHT.ENABLED = bool(low_light)
        cfg.INPUT.LOW_LIGHT.TEST = bool(low_light)
        cfg.TEST.BOOTSTRAP_SAMPLES = int(self.spec.bootstrap_samples)
        for key, value in (overrides or {}).items():
            set_config_value(cfg, key, value)
        cfg.OUTPUT_DIR = output_dir
        cfg.freeze()
        return dict(LowLightTrainer.test(cfg, model))

    def feature_errors(self, trained, dataset, *, low_light, num_images):
        from ..analysis.detectron2_features import detectron2_feature_errors

        cfg, model = trained.handle
        return detectron2_feature_errors(cfg, model, dataset, low_light=low_light, num_images=num_images)

    def reload(self, trained):
        # Inference needs the architecture of the row (the blocks and their fusion) and its weights.
        opts = self._block_opts(self._cfg([]), trained.row) if trained.row in ("nlb", "wnlb") else []
        cfg = self._cfg(opts + ["MODEL.WEIGHTS", trained.weights, "OUTPUT_DIR", trained.output_dir])
        model = LowLightTrainer.build_model(cfg)
        LowLightTrainer.load_for_inference(cfg, model)
        trained.handle = (cfg, model)

    def block_weights(self, trained):
        return wnlb_weights(trained.handle[1]) if trained.handle else {}

    def save_pictures(self, trained_rows, dataset, output_dir, *, num_images=3, low_light=False):
        from ..visualization import save_side_by_side

        models = {row: t.handle for row, t in trained_rows.items() if t.handle is not None}
        cfg_test = trained_rows["pretrained"].handle[0]
        return save_side_by_side(models, cfg_test, dataset, output_dir, num_images=num_images, low_light=low_light)


@DETECTOR_FAMILY_REGISTRY.register()
class MaskRCNNFamily(Detectron2Family):
    """Mask R-CNN (and any two-stage detectron2 model on a ResNet-FPN / C4 backbone)."""

    name = "maskrcnn"


@DETECTOR_FAMILY_REGISTRY.register()
class SOLOv2Family(Detectron2Family):
    """SOLOv2 (``MODEL.META_ARCHITECTURE: SOLOv2``, wnlb_d2.modeling.meta_arch) on a ResNet-FPN."""

    name = "solov2"

    def validate(self):
        super().validate()
        arch = self._cfg([]).MODEL.META_ARCHITECTURE
        if arch != "SOLOv2":
            raise ValueError(f"--detector solov2 with config {self.spec.config_file!r}, whose "
                             f"MODEL.META_ARCHITECTURE is {arch!r}; give a SOLOv2 config "
                             "(e.g. configs/demo/SOLOv2-Demo-R18-FPN.yaml)")
