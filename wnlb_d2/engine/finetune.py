"""Which parameters learn during fine-tuning (``SOLVER.FINETUNE_POLICY``)."""

import logging

from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from ..naming import is_wnlb_key

__all__ = ["FINETUNE_POLICIES", "apply_finetune_policy"]

logger = logging.getLogger(__name__)

#: "all": every parameter the model builds as trainable (MODEL.BACKBONE.FREEZE_AT still applies);
#: "backbone": only ``model.backbone`` (ResNet, FPN and wNLB blocks), the paper's choice;
#: "wnlb": only the non-local blocks.
FINETUNE_POLICIES = ("all", "backbone", "wnlb")


def _freeze_batchnorm(module):
    """Replace every BatchNorm whose parameters are all frozen by a FrozenBatchNorm2d.

    A frozen BatchNorm in train mode would still update its running statistics; the policy
    says "frozen", so its statistics must not move either.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in child.parameters()):
            setattr(module, name, FrozenBatchNorm2d.convert_frozen_batchnorm(child))
        else:
            _freeze_batchnorm(child)


def apply_finetune_policy(model, policy):
    """Freeze the parameters that ``policy`` does not train.

    Args:
        model (nn.Module): a detectron2 meta-architecture (with ``.backbone``), before the
            optimizer and DistributedDataParallel are built.
        policy (str): one of :data:`FINETUNE_POLICIES`.

    Returns:
        tuple[int, int]: trainable and total parameter counts (elements) afterwards.

    Raises:
        ValueError: unknown policy, or "wnlb" on a model without non-local blocks.
    """
    if policy not in FINETUNE_POLICIES:
        raise ValueError(f"SOLVER.FINETUNE_POLICY = {policy!r} is invalid; expected one of {FINETUNE_POLICIES}")
    if policy == "backbone":
        keep = {id(p) for p in model.backbone.parameters()}
        for p in model.parameters():
            if id(p) not in keep:
                p.requires_grad_(False)
    elif policy == "wnlb":
        names = [n for n, _ in model.named_parameters() if is_wnlb_key(n)]
        if not names:
            raise ValueError(
                "SOLVER.FINETUNE_POLICY = 'wnlb' but the model has no non-local blocks "
                f"(MODEL.BACKBONE.NAME = a wNLB backbone and non-empty MODEL.WNLB.STAGES needed)"
            )
        for n, p in model.named_parameters():
            if not is_wnlb_key(n):
                p.requires_grad_(False)
    _freeze_batchnorm(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(f"Fine-tuning policy {policy!r}: {trainable:,} of {total:,} parameters are trained")
    return trainable, total
