"""Losses of SOLOv2: Dice loss for masks (the category branch uses fvcore's sigmoid focal loss)."""

import torch

__all__ = ["dice_loss"]


def dice_loss(pred, target, eps=1e-3):
    """Dice loss ``1 - 2 sum(p q) / (sum(p^2) + sum(q^2))`` per mask (SOLO, Eq. 3).

    Args:
        pred (Tensor): predicted mask probabilities (after the sigmoid), shape ``(P, H, W)``.
        target (Tensor): target masks in [0, 1], same shape.
        eps (float): added to each squared sum, so an empty target with an empty prediction
            costs 0 rather than 0 / 0, and the gradient stays finite.

    Returns:
        Tensor: ``(P,)`` loss of each mask, in [0, 1].

    Raises:
        ValueError: shapes differ.
    """
    if pred.shape != target.shape:
        raise ValueError(f"dice_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    p = pred.flatten(1)
    q = target.flatten(1).to(p.dtype)
    inter = (p * q).sum(dim=1)
    denom = (p * p).sum(dim=1) + eps + (q * q).sum(dim=1) + eps
    return 1 - 2 * inter / denom
