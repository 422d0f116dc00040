"""The trainer of train_net.py: low-light data, COCO evaluation, fine-tuning policies, CPU DDP."""

import logging
import weakref

import torch
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import WNLBCheckpointer, is_wnlb_key
from ..data.mapper import LowLightDatasetMapper
from .evaluation import build_coco_evaluator
from .finetune import apply_finetune_policy
from .hooks import WNLBWeightLogger

__all__ = ["LowLightTrainer"]


def _no_double_darkening(cfg, dataset_name):
    """cfg with test-time degradation off when ``dataset_name`` is low-light already.

    Real (LIS, ExDark) and offline synthetic (``*_lowlight``) test sets say so in their metadata
    (``low_light``: "real" / "synthetic"); degrading them again would silently measure
    something else.
    """
    kind = MetadataCatalog.get(dataset_name).get("low_light", "none")
    if kind == "none" or not (cfg.INPUT.LOW_LIGHT.ENABLED and cfg.INPUT.LOW_LIGHT.TEST):
        return cfg
    logging.getLogger(__name__).warning(
        f"{dataset_name} is {kind} low-light data: not degrading it again at test time "
        "(INPUT.LOW_LIGHT.TEST ignored for this dataset)."
    )
    cfg = cfg.clone()
    cfg.defrost()
    cfg.INPUT.LOW_LIGHT.TEST = False
    cfg.freeze()
    return cfg


def optimizer_param_groups(cfg, model, wnlb_lr_factor=1.0):
    """detectron2's parameter groups, with the non-local blocks' learning rate scaled.

    Args:
        cfg (CfgNode): ``SOLVER.BASE_LR``, ``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR`` and
            ``WEIGHT_DECAY_BIAS`` are read.
        model (nn.Module): parameters with ``requires_grad=False`` are left out.
        wnlb_lr_factor (float): multiplies the ``lr`` of every parameter of a non-local block.

    Returns:
        list[dict]: groups for a torch optimizer; each group's ``lr`` is its own, so detectron2's
        schedulers (which scale every group's initial lr) keep the factor.
    """
    groups = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    if wnlb_lr_factor == 1.0:
        return groups
    block_ids = {id(p) for n, p in model.named_parameters() if is_wnlb_key(n)}
    out = []
    for group in groups:
        blocks = [p for p in group["params"] if id(p) in block_ids]
        rest = [p for p in group["params"] if id(p) not in block_ids]
        if rest:
            out.append({**group, "params": rest})
        if blocks:
            out.append({**group, "params": blocks, "lr": group.get("lr", cfg.SOLVER.BASE_LR) * wnlb_lr_factor})
    return out


class LowLightTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` for low-light instance segmentation.

    Differences from the stock trainer, each for a reason:

    * train and test loaders use :class:`LowLightDatasetMapper` (``INPUT.LOW_LIGHT``);
    * evaluation is :class:`COCOEvaluator` (bbox + segm), with pycocotools when detectron2 has
      no compiled extension;
    * ``SOLVER.FINETUNE_POLICY`` freezes what should not learn before the optimizer is built;
    * :class:`WNLBCheckpointer`: atomic saves, no NaN weights saved, a clear error when
      ``MODEL.WEIGHTS`` does not fit the backbone;
    * the weights w of the blocks go to metrics.json / TensorBoard every logging period;
    * checkpoints hold the optimizer state, so ``--resume`` restores momentum too;
    * DistributedDataParallel without ``device_ids`` on CPU (``torchrun`` + gloo).
    """

    def __init__(self, cfg):
        # Same steps as DefaultTrainer.__init__, which hard-codes a GPU-only DDP wrapper.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = WNLBCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), strict_backbone=True
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def state_dict(self):
        # detectron2 v0.6's DefaultTrainer leaves the optimizer out of its checkpoints, so a
        # resumed run restarted SGD momentum from zero; later versions save it like this.
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

    @classmethod
    def build_optimizer(cls, cfg, model):
        """SGD as detectron2 builds it, or AdamW when ``SOLVER.OPTIMIZER`` says so.

        detectron2 v0.6 builds SGD only; AdamW is offered for training from scratch on small data
        (the demo), where it converges in far fewer iterations. Both use detectron2's parameter
        groups, with the non-local blocks' learning rate scaled by ``SOLVER.WNLB_LR_FACTOR``.
        """
        name = cfg.SOLVER.get("OPTIMIZER", "SGD")
        if name.upper() not in ("SGD", "ADAMW"):
            raise ValueError(f"SOLVER.OPTIMIZER = {name!r} is invalid; expected 'SGD' or 'AdamW'")
        factor = float(cfg.SOLVER.get("WNLB_LR_FACTOR", 1.0))
        if name.upper() == "SGD" and factor == 1.0:
            return super().build_optimizer(cfg, model)  # exactly detectron2's
        params = optimizer_param_groups(cfg, model, factor)
        if name.upper() == "SGD":
            return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
                params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                nesterov=cfg.SOLVER.NESTEROV, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            )
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
            params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        apply_finetune_policy(model, cfg.SOLVER.FINETUNE_POLICY)
        return model

    def build_hooks(self):
        hooks = super().build_hooks()
        hooks.insert(0, WNLBWeightLogger())  # before the writers read the storage
        return hooks

    @classmethod
    def build_train_loader(cls, cfg):
        # EnhancedDatasetMapper when INPUT.ENHANCER selects an enhancer, else LowLightDatasetMapper.
        from ..enhance.mapper import build_low_light_mapper

        return build_detection_train_loader(cfg, mapper=build_low_light_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        from ..enhance.mapper import build_low_light_mapper

        cfg = _no_double_darkening(cfg, dataset_name)
        return build_detection_test_loader(cfg, dataset_name, mapper=build_low_light_mapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_coco_evaluator(cfg, dataset_name, output_folder)

    @staticmethod
    def load_for_inference(cfg, model, resume=False):
        """Load ``MODEL.WEIGHTS`` (or the last checkpoint with ``resume``) for evaluation."""
        checkpointer = WNLBCheckpointer(model, save_dir=cfg.OUTPUT_DIR, strict_backbone=True)
        if not cfg.MODEL.WEIGHTS and not (resume and checkpointer.has_checkpoint()):
            raise ValueError(
                "Evaluation needs weights: set MODEL.WEIGHTS (a checkpoint file or model-zoo URL), "
                f"or --resume with a checkpoint in OUTPUT_DIR={cfg.OUTPUT_DIR!r}"
            )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        return model

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        with torch.no_grad():
            return super().test(cfg, model, evaluators)
