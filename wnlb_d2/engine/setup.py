"""Config set-up and up-front checks for train_net.py and the tools."""

import copy
import logging
import os

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import (add_lowlight_config, check_solov2_config, config_value, merge_from_file, merge_from_list,
                      resolve_config_path)
from ..layers import NONLOCAL_FUSIONS, NONLOCAL_IMPLS, NONLOCAL_MODES, NONLOCAL_NORMS, NONLOCAL_ZERO_INITS
from ..modeling.backbone.wnlb_resnet import _STAGE_NAMES, _choice, _weights_per_stage
from .finetune import FINETUNE_POLICIES

__all__ = ["setup_cfg", "check_config", "check_wnlb_config", "check_num_classes"]

logger = logging.getLogger(__name__)


def check_wnlb_config(cfg):
    """Check every ``MODEL.WNLB`` value, whatever ``MODEL.BACKBONE.NAME`` is.

    The wNLB backbones check these when they are built; a stock backbone never reads them, so
    without this check a typo (``STAGES ['res6']``, ``MODE foo``) would train a stock model with
    exit 0. Which stages a backbone computes (C4: up to res4) is still checked when it is built.

    Raises:
        ValueError: a value is not allowed; the message names the key, the value and the choices.
    """
    if "WNLB" not in cfg.MODEL:
        return
    w = cfg.MODEL.WNLB
    if not isinstance(w.STAGES, (list, tuple)):
        raise ValueError(f"MODEL.WNLB.STAGES = {w.STAGES!r} is invalid; expected a list of {_STAGE_NAMES}")
    stages = list(w.STAGES)
    for s in stages:
        _choice("STAGES entry", s, _STAGE_NAMES)
    if len(set(stages)) != len(stages):
        raise ValueError(f"MODEL.WNLB.STAGES lists a stage twice: {stages}")
    for key, allowed in (("MODE", NONLOCAL_MODES), ("FUSION", NONLOCAL_FUSIONS), ("NORM", NONLOCAL_NORMS),
                         ("IMPL", NONLOCAL_IMPLS), ("ZERO_INIT", NONLOCAL_ZERO_INITS)):
        _choice(key, w.get(key, "norm") if key == "ZERO_INIT" else w[key], allowed)
    ratio = w.INTER_CHANNELS_RATIO
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise ValueError(f"MODEL.WNLB.INTER_CHANNELS_RATIO = {ratio!r} is invalid; expected a positive number")
    _weights_per_stage(w.WEIGHT_INIT, stages)
    for key in ("LEARNABLE_WEIGHT", "SUB_SAMPLE"):
        if key in w and not isinstance(w[key], bool):
            raise ValueError(f"MODEL.WNLB.{key} = {w[key]!r} is invalid; expected True or False")
    from ..naming import WNLB_BACKBONES

    name = cfg.MODEL.BACKBONE.NAME
    if name in WNLB_BACKBONES:
        defaults = get_cfg()
        add_lowlight_config(defaults)
        changed = sorted(k for k in w if w[k] != defaults.MODEL.WNLB[k])
        if changed:
            # Valid, but unused: say so, since nothing else would.
            logger.info(
                f"MODEL.WNLB sets {', '.join(changed)}, but MODEL.BACKBONE.NAME = {name!r} builds no "
                f"non-local blocks (use {WNLB_BACKBONES[name]!r} for them)."
            )


#: Meta-architecture -> the config key of its class count.
NUM_CLASSES_KEYS = {
    "SOLOv2": "MODEL.SOLOV2.NUM_CLASSES",
    "GeneralizedRCNN": "MODEL.ROI_HEADS.NUM_CLASSES",
    "RetinaNet": "MODEL.RETINANET.NUM_CLASSES",
}


def check_num_classes(cfg):
    """The model must have a class for every class of the datasets it trains on or is scored on.

    A model with fewer classes than the data trains silently: SOLOv2 takes the objects of the
    classes it lacks for background, and the evaluator scores them as missed. Checked for the
    datasets whose classes are known before loading (``thing_classes`` in their metadata: every
    dataset this package registers, detectron2's builtin ones).

    Raises:
        ValueError: the class-count key of ``MODEL.META_ARCHITECTURE`` is below the class count
            of a dataset in ``DATASETS.TRAIN`` or ``DATASETS.TEST``; the message names both.
    """
    from detectron2.data import MetadataCatalog

    key = NUM_CLASSES_KEYS.get(cfg.MODEL.META_ARCHITECTURE)
    num_classes = config_value(cfg, key) if key else None
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        return
    for split in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[split]:
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            if classes is not None and num_classes < len(classes):
                raise ValueError(
                    f"{key} = {num_classes} is below the {len(classes)} classes of DATASETS.{split} "
                    f"{name!r}: set {key} {len(classes)} (objects of the other classes would be "
                    "learned as background and scored as missed)"
                )


def check_config(cfg):
    """Fail early, with the key named, on what would otherwise fail late or unclearly.

    Raises:
        KeyError: a dataset name in DATASETS.TRAIN / DATASETS.TEST is not registered.
        ValueError: SOLVER.FINETUNE_POLICY, a MODEL.WNLB or MODEL.SOLOV2 value is not one of the
            allowed ones, or the model has fewer classes than a dataset (:func:`check_num_classes`).
        PermissionError: OUTPUT_DIR cannot be created or written.
    """
    check_wnlb_config(cfg)
    check_solov2_config(cfg)
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                raise KeyError(
                    f"DATASETS.{key} names {name!r}, which is not a registered dataset. Registered: "
                    + ", ".join(sorted(n for n in registered if not n.startswith(("keypoints_", "cityscapes_", "lvis_")))[:40])
                    + " ... (see datasets/README.md)"
                )
    check_num_classes(cfg)
    for key in ("WNLB_LR_FACTOR", "WNLB_WEIGHT_LR_FACTOR"):
        factor = cfg.SOLVER.get(key, 1.0)
        if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 0):
            raise ValueError(f"SOLVER.{key} = {factor!r} is invalid; expected a positive number")
    decay = cfg.SOLVER.get("WNLB_WEIGHT_DECAY", None)
    if decay is not None and not (isinstance(decay, (int, float)) and not isinstance(decay, bool) and decay >= 0):
        raise ValueError(f"SOLVER.WNLB_WEIGHT_DECAY = {decay!r} is invalid; expected None (SOLVER.WEIGHT_DECAY) "
                         "or a number >= 0")
    samples = cfg.TEST.get("BOOTSTRAP_SAMPLES", 0)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0 or samples == 1:
        raise ValueError(f"TEST.BOOTSTRAP_SAMPLES = {samples!r} is invalid; expected 0 (off) or an integer >= 2")
    if cfg.SOLVER.FINETUNE_POLICY not in FINETUNE_POLICIES:
        raise ValueError(f"SOLVER.FINETUNE_POLICY = {cfg.SOLVER.FINETUNE_POLICY!r} is invalid; expected one of {FINETUNE_POLICIES}")
    out = cfg.OUTPUT_DIR
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write_test.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"OUTPUT_DIR {out!r} is not writable: {e.strerror or e}") from e


def setup_cfg(config_file, opts=(), args=None):
    """get_cfg -> add_lowlight_config -> merge file (model_zoo:// bases) -> opts -> checks -> freeze.

    Args:
        config_file (str): YAML path or ``model_zoo://NAME``.
        opts (list[str]): ``KEY VALUE`` pairs, as on detectron2's command lines.
        args: parsed command line; when given, detectron2's ``default_setup`` runs too
            (logging, environment info, config saved to OUTPUT_DIR).
    """
    if args is None:
        return _build_cfg(config_file, opts)
    # Until default_setup has made the log handlers, what the checks log would be lost: keep it
    # and hand it to the handlers afterwards.
    buffer = _Buffer()
    root = logging.getLogger("wnlb_d2")
    level = root.level
    if not root.handlers:  # else (set up before in this process) the records are shown already
        root.addHandler(buffer)
        root.setLevel(logging.INFO)
    try:
        cfg = _build_cfg(config_file, opts)
        # default_setup reads args.config_file itself: give it the resolved file.
        args = copy.copy(args)
        args.config_file = resolve_config_path(config_file)
        default_setup(cfg, args)
    finally:
        root.removeHandler(buffer)
        root.setLevel(level)
    # default_setup sets up the "detectron2" and "fvcore" loggers only: without this, every
    # wnlb_d2 line (the checkpoint summary, warnings) is missing from stdout and log.txt.
    # setup_logger is cached per arguments, so a second call adds no second handler.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="wnlb_d2")
    # setup_logger sets DEBUG, which would print a line per image read (data.image_io).
    root.setLevel(logging.INFO)
    for record in buffer.records:
        logging.getLogger(record.name).handle(record)
    return cfg


class _Buffer(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _build_cfg(config_file, opts):
    cfg = get_cfg()
    add_lowlight_config(cfg)
    merge_from_file(cfg, config_file)
    try:
        merge_from_list(cfg, list(opts))
    except AssertionError as e:  # yacs reports bad overrides with bare asserts
        msg = str(e).replace("Non-existent key", "Non-existent config key")
        raise (KeyError if "Non-existent" in msg else ValueError)(f"{msg} (in the command-line overrides)") from e
    except ValueError as e:  # yacs's type mismatch: say where it came from
        if "command-line" in str(e):
            raise
        raise ValueError(f"{e} (in the command-line overrides)") from e
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE = {cfg.MODEL.DEVICE!r} but CUDA is not available: using 'cpu'.")
        cfg.MODEL.DEVICE = "cpu"
    check_config(cfg)
    cfg.freeze()
    return cfg
