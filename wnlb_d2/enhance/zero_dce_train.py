"""Training Zero-DCE++ on low-light images alone (zero-reference losses), small and fast on a CPU."""

import logging
import os

import torch

from ..data.synthesis import eval_rng
from .training_pairs import readable_rgb_images, square_tensor
from .training_steps import TrainingProgress, check_finite, random_batch, seeded
from .weights_io import save_torch_file
from .zero_dce import ZeroDCEPP
from .zero_dce_losses import zero_reference_loss

__all__ = ["load_training_images", "train_zero_dce", "save_zero_dce_weights"]

logger = logging.getLogger(__name__)


def load_training_images(paths, size=128, pipeline=None, seed=0, progress=True):
    """Read images, optionally degrade them, and resize them to ``size x size``.

    Args:
        paths (list[str]): image files.
        size (int): side of the square training images (the authors resize to 512; 128 keeps
            CPU training fast). Resizing uses area interpolation, which averages the noise
            down as a low-resolution camera would.
        pipeline (LowLightPipeline or None): degrade each image first (for normal-light data),
            seeded with ``eval_rng(seed, basename)`` so a run is reproducible.
        seed (int): seed of that degradation.

    Returns:
        tuple[Tensor, list[str]]: RGB images in [0, 1] of shape ``(N, 3, size, size)``, and the
        files that could not be read (skipped with a warning).

    Raises:
        ValueError: no image could be read.
    """
    images, failed = [], []
    for path, rgb in readable_rgb_images(paths, failed, desc="reading images", progress=progress):
        if pipeline is not None:
            rgb, _ = pipeline(rgb, eval_rng(seed, os.path.basename(path)), "RGB")
        images.append(square_tensor(rgb, size))
    if not images:
        raise ValueError(f"None of the {len(paths)} training image(s) could be read")
    return torch.stack(images).float() / 255.0, failed


def train_zero_dce(images, *, iters=300, batch_size=8, crop=64, lr=1e-3, weight_decay=1e-4, grad_clip=0.1,
                   seed=0, flip=True, log_period=50, progress=True, model=None):
    """Train Zero-DCE++ with the zero-reference losses (Adam, gradient clipping as the authors).

    The authors train 100 epochs at lr 1e-4 on 2,422 images of 512 px; a higher lr (1e-3) on
    small images reaches a usable curve in a few hundred CPU iterations.

    Args:
        images (Tensor): low-light RGB images in [0, 1], ``(N, 3, S, S)`` with S >= 16.
        iters (int): optimisation steps.
        batch_size (int): images per step (drawn at random with replacement).
        crop (int): side of the random crop taken from each drawn image (>= 16), or 0 for the
            whole image. Crops keep the images' own resolution (and so their noise), and on a
            CPU a 64 px step is about 10x faster than a 128 px one.
        lr, weight_decay (float): Adam's.
        grad_clip (float): max gradient norm (the authors' 0.1).
        seed (int): seed of the initialisation and of the batch draws.
        flip (bool): random horizontal flips.
        log_period (int): log the losses every this many steps.
        model (ZeroDCEPP or None): continue training this network; None: a new one.

    Returns:
        tuple[ZeroDCEPP, list[dict]]: the network (eval mode, CPU) and the loss terms of every
        step (floats).
    """
    if images.dim() != 4 or images.shape[1] != 3 or min(images.shape[-2:]) < 16:
        raise ValueError(f"train_zero_dce: images must be (N, 3, S, S) with S >= 16, got {tuple(images.shape)}")
    if iters < 1 or batch_size < 1:
        raise ValueError(f"train_zero_dce: iters and batch_size must be >= 1, got {iters}, {batch_size}")
    side = min(images.shape[-2:])
    if crop and not 16 <= crop <= side:
        raise ValueError(f"train_zero_dce: crop must be 0 or in [16, {side}] for images of {tuple(images.shape[-2:])}, "
                         f"got {crop}")
    gen = torch.Generator().manual_seed(seed)
    if model is None:
        with seeded(seed):
            model = ZeroDCEPP()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = TrainingProgress("Zero-DCE++", iters, log_period=log_period, progress=progress, logger=logger)
    for it in steps:
        (batch,) = random_batch([images], batch_size, crop, gen, flip=flip)
        enhanced, alpha = model(batch)
        terms = zero_reference_loss(batch, enhanced, alpha)
        check_finite("Zero-DCE++ loss", it, terms["total"])
        optimizer.zero_grad()
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        steps.record(it, terms)
    model.eval()
    return model, steps.history


def save_zero_dce_weights(model, path):
    """Save the bare state dict (the authors' layout), atomically."""
    save_torch_file(model.state_dict(), path)
    logger.info(f"Saved Zero-DCE++ weights to {path}")
    return path
