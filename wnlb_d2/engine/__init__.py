from .evaluation import build_coco_evaluator, has_compiled_detectron2
from .finetune import FINETUNE_POLICIES, apply_finetune_policy
from .hooks import WNLBWeightLogger, wnlb_weights
from .launch import launch
from .setup import check_config, setup_cfg
from .trainer import LowLightTrainer

__all__ = [
    "LowLightTrainer",
    "WNLBWeightLogger",
    "wnlb_weights",
    "apply_finetune_policy",
    "FINETUNE_POLICIES",
    "build_coco_evaluator",
    "has_compiled_detectron2",
    "launch",
    "setup_cfg",
    "check_config",
]
