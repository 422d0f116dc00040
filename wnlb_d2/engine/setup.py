"""Config set-up and up-front checks for train_net.py and the tools."""

import copy
import logging
import os

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import default_setup

from ..config import add_wnlb_config, merge_from_file, resolve_config_path
from .finetune import FINETUNE_POLICIES

__all__ = ["setup_cfg", "check_config"]

logger = logging.getLogger(__name__)


def check_config(cfg):
    """Fail early, with the key named, on what would otherwise fail late or unclearly.

    Raises:
        KeyError: a dataset name in DATASETS.TRAIN / DATASETS.TEST is not registered.
        ValueError: SOLVER.FINETUNE_POLICY is not one of the allowed values.
        PermissionError: OUTPUT_DIR cannot be created or written.
    """
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                raise KeyError(
                    f"DATASETS.{key} names {name!r}, which is not a registered dataset. Registered: "
                    + ", ".join(sorted(n for n in registered if not n.startswith(("keypoints_", "cityscapes_", "lvis_")))[:40])
                    + " ... (see datasets/README.md)"
                )
    factor = cfg.SOLVER.get("WNLB_LR_FACTOR", 1.0)
    if not (isinstance(factor, (int, float)) and factor > 0):
        raise ValueError(f"SOLVER.WNLB_LR_FACTOR = {factor!r} is invalid; expected a positive number")
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
    """get_cfg -> add_wnlb_config -> merge file (model_zoo:// bases) -> opts -> checks -> freeze.

    Args:
        config_file (str): YAML path or ``model_zoo://NAME``.
        opts (list[str]): ``KEY VALUE`` pairs, as on detectron2's command lines.
        args: parsed command line; when given, detectron2's ``default_setup`` runs too
            (logging, environment info, config saved to OUTPUT_DIR).
    """
    cfg = get_cfg()
    add_wnlb_config(cfg)
    merge_from_file(cfg, config_file)
    try:
        cfg.merge_from_list(list(opts))
    except AssertionError as e:  # yacs reports bad overrides with bare asserts
        msg = str(e).replace("Non-existent key", "Non-existent config key")
        raise (KeyError if "Non-existent" in msg else ValueError)(f"{msg} (in the command-line overrides)") from e
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE = {cfg.MODEL.DEVICE!r} but CUDA is not available: using 'cpu'.")
        cfg.MODEL.DEVICE = "cpu"
    check_config(cfg)
    cfg.freeze()
    if args is not None:
        # default_setup reads args.config_file itself: give it the resolved file.
        args = copy.copy(args)
        args.config_file = resolve_config_path(config_file)
        default_setup(cfg, args)
    return cfg
