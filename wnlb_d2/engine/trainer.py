"""The trainer of train_net.py: low-light data, COCO evaluation, fine-tuning policies, CPU DDP."""

import logging
import weakref

import torch
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import WNLBCheckpointer, remove_stale_temporaries
from ..data.device_path import attach_device_degradation
from ..data.synthesis import build_pipeline_from_config
from ..naming import FUSION_WEIGHT
from ..utils.optim import scale_block_lrs
from .evaluation import build_coco_evaluator
from .finetune import apply_finetune_policy
from .hooks import LogFileWatch, WNLBWeightLogger
from .image_stages import build_low_light_mapper
from .write_errors import FileNamingWriter, OneLineWriteErrors, TrainingCheckpointer, quiet_tensorboard_writer_threads

__all__ = ["LowLightTrainer", "training_dataset_dicts"]


def _why_no_training_data(cfg, names):
    # Only on the failure path: load the datasets again and say what is wrong with them.
    for name in names:
        dicts = DatasetCatalog.get(name)
        if len(dicts) == 0:
            return f"DATASETS.TRAIN: dataset {name!r} has no images"
        missing = [d.get("file_name", "?") for d in dicts if "annotations" not in d]
        if missing:
            return (f"DATASETS.TRAIN: {len(missing)}/{len(dicts)} images of {name!r} have no 'annotations' "
                    f"(e.g. {missing[0]}): training needs annotated images (an image without objects "
                    "has 'annotations': [])")
    return (f"DATASETS.TRAIN {list(names)}: no image has an annotated (non-crowd) object, and "
            "DATALOADER.FILTER_EMPTY_ANNOTATIONS True drops the images without one: nothing is left "
            "to train on")


def training_dataset_dicts(cfg):
    """The training images of ``DATASETS.TRAIN``, as detectron2's train loader reads them.

    detectron2 checks the data with bare asserts (an empty dataset, every image filtered out by
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``) or not at all (images without ``annotations`` reach
    the model, which asserts "RPN requires gt_instances"); this says what is wrong instead.

    Raises:
        ValueError: a dataset is empty, has images without ``annotations``, or no image is left
            after the filtering.
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty; training needs at least one registered dataset")
    try:
        dicts = get_detection_dataset_dicts(
            names,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    except (AssertionError, KeyError) as e:
        raise ValueError(_why_no_training_data(cfg, names)) from e
    if isinstance(dicts, list) and any("annotations" not in d for d in dicts):
        raise ValueError(_why_no_training_data(cfg, names))
    return dicts


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


def optimizer_param_groups(cfg, model, wnlb_lr_factor=1.0, wnlb_weight_lr_factor=1.0, wnlb_weight_decay=None):
    """detectron2's parameter groups, with the non-local blocks' learning rate scaled.

    Args:
        cfg (CfgNode): ``SOLVER.BASE_LR``, ``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR`` and
            ``WEIGHT_DECAY_BIAS`` are read.
        model (nn.Module): parameters with ``requires_grad=False`` are left out.
        wnlb_lr_factor (float): multiplies the ``lr`` of every parameter of a non-local block.
        wnlb_weight_lr_factor (float): multiplies, on top, the ``lr`` of the blocks' fusion
            weights w alone.
        wnlb_weight_decay (float or None): weight decay of w; None: the optimizer's
            (``SOLVER.WEIGHT_DECAY``).

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
        overrides=None if wnlb_weight_decay is None else {FUSION_WEIGHT: {"weight_decay": float(wnlb_weight_decay)}},
    )
    return scale_block_lrs(groups, model, wnlb_lr_factor, wnlb_weight_lr_factor, base_lr=cfg.SOLVER.BASE_LR)


class LowLightTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` for low-light instance segmentation.

    Differences from the stock trainer, each for a reason:

    * train and test loaders use :class:`~wnlb_d2.data.mapper.LowLightDatasetMapper` with the
      image stages of :func:`~wnlb_d2.engine.image_stages.build_image_stages` (``INPUT.LOW_LIGHT``, ``INPUT.ENHANCER``);
    * evaluation is :class:`COCOEvaluator` (bbox + segm), with pycocotools when detectron2 has
      no compiled extension;
    * ``SOLVER.FINETUNE_POLICY`` freezes what should not learn before the optimizer is built;
    * :class:`WNLBCheckpointer`: atomic saves, no NaN weights saved, a clear error when
      ``MODEL.WEIGHTS`` does not fit the backbone;
    * the weights w of the blocks go to metrics.json / TensorBoard every logging period;
    * checkpoints hold the optimizer state, so ``--resume`` restores momentum too;
    * DistributedDataParallel without ``device_ids`` on CPU (``torchrun`` + gloo);
    * a failed write (checkpoint, metrics.json, TensorBoard, log.txt: disk full, permission)
      ends training with an :class:`OSError` naming the file, without a traceback, and a failed
      training starts no final evaluation (:meth:`after_train`).
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
        self.checkpointer = TrainingCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), strict_backbone=True
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """:meth:`DefaultTrainer.resume_or_load`, after removing the half-written checkpoints that
        killed runs left in ``OUTPUT_DIR`` (see :func:`remove_stale_temporaries`)."""
        if comm.is_main_process():
            remove_stale_temporaries(self.cfg.OUTPUT_DIR)
        return super().resume_or_load(resume=resume)

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
        groups, with the non-local blocks' learning rate scaled by ``SOLVER.WNLB_LR_FACTOR`` (w's by
        ``WNLB_WEIGHT_LR_FACTOR`` on top) and w's weight decay ``SOLVER.WNLB_WEIGHT_DECAY``.
        """
        name = cfg.SOLVER.get("OPTIMIZER", "SGD")
        if name.upper() not in ("SGD", "ADAMW"):
            raise ValueError(f"SOLVER.OPTIMIZER = {name!r} is invalid; expected 'SGD' or 'AdamW'")
        factor = float(cfg.SOLVER.get("WNLB_LR_FACTOR", 1.0))
        w_factor = float(cfg.SOLVER.get("WNLB_WEIGHT_LR_FACTOR", 1.0))
        w_decay = cfg.SOLVER.get("WNLB_WEIGHT_DECAY", None)
        if name.upper() == "SGD" and factor == 1.0 and w_factor == 1.0 and w_decay is None:
            return super().build_optimizer(cfg, model)  # exactly detectron2's
        params = optimizer_param_groups(cfg, model, factor, w_factor, w_decay)
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
        node = cfg.INPUT.LOW_LIGHT
        if node.ENABLED and node.TRAIN and node.get("ON_DEVICE", False):
            # The training mapper ships undegraded images with their draws (device_path.py).
            attach_device_degradation(model, build_pipeline_from_config(cfg), cfg.INPUT.FORMAT)
        return model

    def build_hooks(self):
        ret = super().build_hooks()
        ret.insert(0, WNLBWeightLogger())  # before the writers read the storage
        ret.append(LogFileWatch())  # last: it checks the log writes of every other hook
        return ret

    def build_writers(self):
        quiet_tensorboard_writer_threads()
        return [FileNamingWriter(w) for w in super().build_writers()]

    def train(self):
        """:meth:`DefaultTrainer.train`, with a failed write logged in one line, not a traceback."""
        for h in self._hooks:
            if isinstance(h, LogFileWatch):
                h.start()  # from the loop's first line ("Starting training from iteration ...")
        train_loop = logging.getLogger("detectron2.engine.train_loop")
        one_line = OneLineWriteErrors()
        train_loop.addFilter(one_line)
        try:
            return super().train()
        finally:
            train_loop.removeFilter(one_line)

    def after_train(self):
        """The hooks' ``after_train``, or after a failed training only those that start no work.

        detectron2's evaluation and precise-BN hooks take ``iter + 1 >= max_iter`` for a finished
        training, which also holds when the last step failed (e.g. saving ``model_final`` on a
        full disk): the final evaluation then started on a run that is ending with an error, and
        wrote into a full disk. The training loop sets ``iter = max_iter`` only once every step
        is done; that is the test here. A hook that fails after a failed training is logged, so
        the error that ended the training is the one reported.
        """
        watch = next((h for h in self._hooks if isinstance(h, LogFileWatch)), None)
        completed = self.iter >= self.max_iter  # else an exception is on its way out
        if completed and (watch is None or watch.error is None):
            return super().after_train()
        self.storage.iter = self.iter
        for h in self._hooks:
            if isinstance(h, (hooks.EvalHook, hooks.PreciseBN, hooks.BestCheckpointer)):
                continue
            if isinstance(h, LogFileWatch):
                h.stop()
                continue
            try:
                h.after_train()
            except Exception as e:
                logging.getLogger(__name__).warning(
                    f"{type(h).__name__} after the failed training: {type(e).__name__}: {e}"
                )
        if completed:
            watch.check()  # every step ran, but a log write had failed: that is the error

    @classmethod
    def build_train_loader(cls, cfg):
        # Degradation, then enhancement, as INPUT.LOW_LIGHT and INPUT.ENHANCER say.
        return build_detection_train_loader(
            cfg, mapper=build_low_light_mapper(cfg, is_train=True), dataset=training_dataset_dicts(cfg)
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
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
