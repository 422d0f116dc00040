"""Supervised training of Retinexformer on exact (dark, clean) pairs, small and fast on a CPU.

The recipe is the authors' (``Options/RetinexFormer_LOL_v1.yml`` and BasicSR's
``ImageCleanModel``): L1 loss (mean, weight 1), Adam with betas (0.9, 0.999), gradient norm
clipped to 0.01, random crops with one of the 8 flips/rotations (``random_augmentation``), and
mixup (Beta(1.2, 1.2), applied to half the batches: ``use_identity``). Differences, for a short
CPU run: lr 1e-3 (theirs 2e-4, then 3e-4 for 46k iterations and a cosine to 1e-6 over 104k)
with one cosine from ``lr`` to 1e-6 over ``iters``; 64 px crops and 4 per batch (theirs 128 px,
8 per batch). The pairs come from :func:`wnlb_d2.enhance.training_pairs.load_training_pairs`.
"""

import logging

import numpy as np
import torch

from .retinexformer import PAD_FACTOR, RetinexFormer
from .training_steps import TrainingProgress, check_finite, random_batch, seeded
from .weights_io import save_torch_file

__all__ = ["train_retinexformer", "save_retinexformer_weights", "dihedral"]

logger = logging.getLogger(__name__)


def dihedral(x, mode):
    """One of the 8 flips/rotations of the authors' ``data_augmentation`` (modes 0-7).

    Args:
        x (Tensor): ``(..., H, W)``.
        mode (int): ``k = mode // 2`` quarter turns counter-clockwise, then an up-down flip if
            ``mode`` is odd (their numbering: 0 none, 1 flip, 2 rot90, 3 rot90+flip, ...).

    Returns:
        Tensor: the transformed ``x`` (H and W swapped for odd ``k``).
    """
    out = torch.rot90(x, k=mode // 2, dims=(-2, -1)) if mode // 2 else x
    return out.flip(-2) if mode % 2 else out


def _check_pairs(pairs, crop):
    if not isinstance(pairs, (tuple, list)) or len(pairs) != 2 or \
            not all(isinstance(t, torch.Tensor) for t in pairs):
        raise ValueError("train_retinexformer: pairs must be (dark, clean), two tensors of shape (N, 3, S, S)")
    dark, clean = pairs
    if dark.dim() != 4 or dark.shape[1] != 3 or dark.shape != clean.shape or len(dark) == 0:
        raise ValueError(f"train_retinexformer: dark and clean must both be (N, 3, S, S) with N >= 1, got "
                         f"{tuple(dark.shape)} and {tuple(clean.shape)}")
    side = min(dark.shape[-2:])
    if crop:
        if not (8 <= crop <= side and crop % PAD_FACTOR == 0):
            raise ValueError(f"train_retinexformer: crop must be 0 or a multiple of {PAD_FACTOR} in [8, {side}] for "
                             f"images of {tuple(dark.shape[-2:])}, got {crop}")
    elif dark.shape[-2] % PAD_FACTOR or dark.shape[-1] % PAD_FACTOR or dark.shape[-2] != dark.shape[-1]:
        raise ValueError(f"train_retinexformer: with crop 0 the images must be squares with a side that is a multiple "
                         f"of {PAD_FACTOR}, got {tuple(dark.shape[-2:])}")
    return dark.float(), clean.float()


def train_retinexformer(pairs, *, iters=300, batch_size=4, crop=64, lr=1e-3, min_lr=1e-6, grad_clip=0.01, seed=0,
                        geometric=True, mixup=True, mixup_beta=1.2, log_period=50, progress=True, model=None):
    """Train Retinexformer with the L1 loss on aligned (dark, clean) pairs.

    Args:
        pairs (tuple[Tensor, Tensor]): dark and clean RGB images in [0, 1], both
            ``(N, 3, S, S)`` (``load_training_pairs``' first two results).
        iters (int): optimisation steps (about 0.4 s each on 2 cores for the released width,
            4 crops of 64 px).
        batch_size (int): pairs per step (drawn at random with replacement).
        crop (int): side of the random crop, the same for both images of a pair: 0 (whole
            images) or a multiple of 4 in [8, S] (the network halves the resolution twice).
        lr (float): Adam's initial learning rate, annealed by a cosine to ``min_lr``.
        min_lr (float): the last step's learning rate.
        grad_clip (float): max gradient norm (the authors' 0.01), 0 for none.
        seed (int): seed of the initialisation, the draws, crops, augmentations and mixup.
        geometric (bool): one of the 8 flips/rotations per pair (the authors' geometric_augs).
        mixup (bool): mix the batch with a permutation of itself (weight ~ Beta(mixup_beta,
            mixup_beta)) in half the steps, as the authors.
        mixup_beta (float): the Beta distribution's parameter (1.2).
        log_period (int): log the loss every this many steps (0: never).
        progress (bool): show a progress bar.
        model (RetinexFormer or None): continue training this network; None: a new one of the
            released configuration (n_feat 40, stage 1, num_blocks [1, 2, 2]).

    Returns:
        tuple[RetinexFormer, list[dict]]: the network (eval mode, CPU) and per step
        ``{"l1": float, "total": float}`` (the total is the L1 loss).

    Raises:
        ValueError: bad pairs or arguments.
        FloatingPointError: the loss became NaN or infinite.
    """
    dark, clean = _check_pairs(pairs, crop)
    if iters < 1 or batch_size < 1:
        raise ValueError(f"train_retinexformer: iters and batch_size must be >= 1, got {iters}, {batch_size}")
    if not lr > 0 or not 0 <= min_lr <= lr:
        raise ValueError(f"train_retinexformer: need lr > 0 and 0 <= min_lr <= lr, got lr {lr}, min_lr {min_lr}")
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)  # Beta draws for mixup (torch's Beta takes no generator)
    if model is None:
        with seeded(seed):
            model = RetinexFormer()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iters, eta_min=min_lr)
    steps = TrainingProgress("RetinexFormer", iters, log_period=log_period, progress=progress, logger=logger)
    for it in steps:
        lq, gt = random_batch([dark, clean], batch_size, crop, gen)
        if geometric:
            modes = torch.randint(8, (batch_size,), generator=gen).tolist()
            lq = torch.stack([dihedral(b, m) for b, m in zip(lq, modes)])
            gt = torch.stack([dihedral(b, m) for b, m in zip(gt, modes)])
        if mixup and torch.randint(2, (1,), generator=gen).item() == 0:
            lam = float(rng.beta(mixup_beta, mixup_beta))
            perm = torch.randperm(batch_size, generator=gen)
            gt = lam * gt + (1 - lam) * gt[perm]
            lq = lam * lq + (1 - lam) * lq[perm]
        loss = (model(lq) - gt).abs().mean()
        check_finite("RetinexFormer loss", it, loss)
        optimizer.zero_grad()
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        steps.record(it, {"l1": loss, "total": loss}, log_suffix=f", lr {scheduler.get_last_lr()[0]:.2e}")
    model.eval()
    return model, steps.history


def save_retinexformer_weights(model, path):
    """Save ``model`` as the authors' files are: a BasicSR checkpoint ``{"params": state_dict}``, atomically.

    As BasicSR's ``save_network``: CPU tensors, no "module." prefix.

    Args:
        model (RetinexFormer): the network (or a DataParallel wrapping one).
        path (str): the ``.pth`` to write; its folder is created.

    Returns:
        str: ``path``.
    """
    net = model.module if hasattr(model, "module") else model
    state = {(k[len("module."):] if k.startswith("module.") else k): v.detach().cpu()
             for k, v in net.state_dict().items()}
    save_torch_file({"params": state}, path)
    logger.info(f"Saved RetinexFormer weights to {path}")
    return path
