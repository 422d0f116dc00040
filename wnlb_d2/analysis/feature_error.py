"""The normalised feature error (NFE) and the non-local share of a block.

For a dark image and its clean counterpart, ``F`` the same model's feature map at one place
(a stage's output, a block's output, an FPN level):

    NFE = sum ||F(dark) - F(clean)||^2 / sum ||F(clean) - mean(F(clean))||^2

sums over positions and channels of one image; ``mean`` is each channel's mean over positions,
so the denominator is the clean feature map's own variation within the image. NFE 0: the dark
image's features are the clean ones; NFE 1: they are as far from them as the clean features
vary across the image. A block that denoises makes the NFE after it smaller than before it.

The non-local share of a block on an image tells how much of its output is the non-local term:
``||w W_z(y)|| / ||(1 - w) x||`` for the weighted fusion, ``||W_z(y)|| / ||x||`` for the
residual one (Frobenius norms over channels and positions). A block whose non-local path never
learned has a share of 0: it only rescales its input by (1 - w).
"""

import math

import numpy as np
import torch

__all__ = ["normalised_feature_error", "paired_maps", "clean_spread", "nonlocal_share", "summarise_per_image"]


def paired_maps(name, dark, clean):
    """``dark`` and ``clean`` as float64, after checking they are two ``(C, H, W)`` maps of one shape.

    Raises:
        ValueError: naming ``name`` and both shapes.
    """
    if dark.shape != clean.shape or dark.dim() != 3:
        raise ValueError(f"{name}: expected two (C, H, W) maps of one shape, got {tuple(dark.shape)} and "
                         f"{tuple(clean.shape)}")
    return dark.double(), clean.double()


def clean_spread(clean):
    """The NFE's denominator: ``sum ||F(clean) - mean(F(clean))||^2``, each channel's mean over positions.

    Args:
        clean (Tensor): ``(C, H, W)``, float64.

    Returns:
        Tensor: a float64 scalar.
    """
    return (clean - clean.mean(dim=(1, 2), keepdim=True)).square().sum()


def normalised_feature_error(dark, clean):
    """NFE of one image's feature map.

    Args:
        dark (Tensor): ``(C, H, W)`` features of the dark image.
        clean (Tensor): ``(C, H, W)`` features of its clean counterpart (same model, same place).

    Returns:
        float: the NFE (NaN when the clean map is constant: nothing to normalise by).

    Raises:
        ValueError: the shapes differ.
    """
    dark, clean = paired_maps("normalised_feature_error", dark, clean)
    error = (dark - clean).square().sum()
    spread = clean_spread(clean)
    return float(error / spread) if spread > 0 else math.nan


def nonlocal_share(x, wz_y, fusion, w=None):
    """How large the non-local term of a block's output is against the term it keeps of its input.

    Args:
        x (Tensor): the block's input ``(C, H, W)`` (or any shape, with ``wz_y`` of the same).
        wz_y (Tensor): ``W_z(y)``, the block's non-local term before fusion, same shape.
        fusion (str): "weighted" (``z = w W_z(y) + (1 - w) x``) or "residual" (``z = x + W_z(y)``).
        w (float): the weighted fusion's w.

    Returns:
        float: ``||w W_z(y)|| / ||(1 - w) x||`` or ``||W_z(y)|| / ||x||`` (inf when the kept term is 0).
    """
    nz, nx = float(wz_y.double().norm()), float(x.double().norm())
    if fusion == "weighted":
        nz, nx = abs(w) * nz, abs(1.0 - w) * nx
    elif fusion != "residual":
        raise ValueError(f"nonlocal_share: fusion must be 'weighted' or 'residual', got {fusion!r}")
    return nz / nx if nx > 0 else (math.inf if nz > 0 else 0.0)


def summarise_per_image(values, bootstrap_samples=1000, seed=0, confidence=0.95):
    """Mean over images with an image-level bootstrap interval.

    Args:
        values (Sequence[float]): one value per image (NaN entries are left out).
        bootstrap_samples (int): resamples of the images (0: no interval).
        seed (int): the resampling generator's seed (the interval is the same in every run).
        confidence (float): the interval's level.

    Returns:
        dict: ``{"mean", "ci95": [lo, hi], "n"}`` (n images; NaN interval for n < 2 or no samples).
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    out = {"mean": float(v.mean()) if v.size else math.nan, "ci95": [math.nan, math.nan], "n": int(v.size)}
    if v.size >= 2 and bootstrap_samples:
        rng = np.random.default_rng(seed)
        means = v[rng.integers(0, v.size, size=(bootstrap_samples, v.size))].mean(axis=1)
        tail = (1.0 - confidence) / 2
        out["ci95"] = [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]
    return out
