"""Training EnlightenGAN on unpaired low-light and normal-light images, small and fast on a CPU.

The recipe is the authors' (``scripts/script.py --train`` with ``models/single_model.py``,
github.com/VITA-Group/EnlightenGAN, BSD licence, Copyright (c) 2019 Yifan Jiang and Zhangyang
Wang): the generator :class:`~wnlb_d2.enhance.enlightengan.UnetResizeConv` against

- a global discriminator (``NoNormDiscriminator``, 5 layers) with the relativistic LSGAN loss
  (``--use_ragan``): ``D`` learns ``(D(real) - E D(fake) - 1)^2 + (D(fake) - E D(real))^2``, the
  generator the same with the targets swapped;
- a local discriminator (``NoNormDiscriminator``, 4 layers) on ``1 + patchD_3 = 6`` random
  ``patchSize`` patches per batch (one offset per patch, shared by the batch and by the real and
  fake images) with the plain LSGAN loss (``--hybrid_loss``), averaged over the patches;
- the authors' data augmentation (``--vary 1``): with probability 1/2 the generator's input is
  darkened by a factor drawn from [2, 4], and the attention map is taken from that input;
  random flips; Adam with betas (0.5, 0.999); initial weights N(0, 0.02) (BatchNorm N(1, 0.02)).

Documented differences:

- the self feature preserving loss (VGG-16 ``relu5_1`` features of the input and the output, on
  the whole image and on the patches, ``--vgg 1 --patch_vgg``) is left out: it needs pre-trained
  VGG-16 weights, which cannot be downloaded here. The generator's objective is therefore the
  adversarial part alone (the authors' ``loss_G_A``);
- a constant learning rate (the authors use 1e-4 for 100 epochs, then a linear decay over 100
  more, on 320 px crops in batches of 32); a higher one (3e-4 by default) with 64 px crops gets
  a visible brightening in a few hundred CPU steps;
- the image pool (``fake_B_pool``) is not used; neither is it by the authors, whose
  ``backward_D_A`` overwrites the pooled image with the current one;
- flips are drawn per image (the authors flip each unaligned pair together, and again each
  image horizontally), and the dark and normal-light batches are drawn independently with
  replacement (the authors' unaligned loader pairs shuffled indices);
- the defaults are sized for a 2-core CPU: half the authors' widths (generator 16, discriminators
  32), 16 px patches on 64 px crops, batches of 8 (see :func:`train_enlightengan`).
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .enlightengan import UnetResizeConv, attention_map, enlightengan_state_dict
from .training_steps import TrainingProgress, check_finite, random_batch, seeded
from .weights_io import save_torch_file

__all__ = ["NoNormDiscriminator", "weights_init", "lsgan_loss", "relativistic_lsgan_loss", "crop_patches",
           "generator_adversarial_loss", "discriminator_losses", "train_enlightengan", "save_enlightengan_weights"]

logger = logging.getLogger(__name__)


class NoNormDiscriminator(nn.Module):
    """The authors' PatchGAN discriminator without normalisation (``no_norm_4``; their key layout).

    ``n_layers`` stride-2 4x4 convolutions (``ndf * min(2**i, 8)`` channels), a stride-1 one, and a
    stride-1 4x4 convolution to one channel, each but the last followed by LeakyReLU(0.2).

    Args:
        input_nc (int): input channels (3).
        ndf (int): channels of the first layer (64).
        n_layers (int): stride-2 layers (5 for the global, 4 for the local discriminator).

    Shapes: ``(B, input_nc, H, W)`` -> ``(B, 1, H', W')`` scores (H' about H / 2**n_layers + 2).
    """

    def __init__(self, input_nc=3, ndf=64, n_layers=3):
        super().__init__()
        kw, padw = 4, 2  # the authors' int(np.ceil((kw - 1) / 2))
        sequence = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
            sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw),
                         nn.LeakyReLU(0.2, True)]
        nf_mult_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw),
                     nn.LeakyReLU(0.2, True),
                     nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*sequence)

    def forward(self, x):
        return self.model(x)


def weights_init(m):
    """The authors' initialisation (apply with ``net.apply``): conv weights N(0, 0.02), BatchNorm
    weights N(1, 0.02) and biases 0; conv biases keep PyTorch's default."""
    if isinstance(m, nn.Conv2d):
        m.weight.data.normal_(0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)


def lsgan_loss(pred, target_is_real):
    """The authors' ``GANLoss`` with LSGAN: mean squared distance of ``pred`` to 1 (real) or 0 (fake)."""
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if target_is_real else 0.0))


def relativistic_lsgan_loss(pred_real, pred_fake, for_discriminator):
    """The relativistic average LSGAN loss of the authors' global discriminator (``use_ragan``).

    Args:
        pred_real, pred_fake (Tensor): discriminator scores of real and generated images.
        for_discriminator (bool): the discriminator's loss (real should score above the mean
            fake, fake below the mean real); False: the generator's, with the targets swapped.

    Returns:
        Tensor: scalar, ``(l(D(r) - E D(f), a) + l(D(f) - E D(r), 1 - a)) / 2`` with l the LSGAN
        loss and a = real for the discriminator, fake for the generator.
    """
    return (lsgan_loss(pred_real - pred_fake.mean(), for_discriminator)
            + lsgan_loss(pred_fake - pred_real.mean(), not for_discriminator)) / 2


def _check_images(name, images, crop, patch_size):
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        desc = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"train_enlightengan: {name} must be a (N, 3, S, S) tensor in [0, 1], got {desc}")
    if len(images) == 0:
        raise ValueError(f"train_enlightengan: no {name} images (N = 0)")
    side = min(images.shape[-2:])
    if crop and not patch_size <= crop <= side:
        raise ValueError(f"train_enlightengan: crop must be 0 or in [patch_size={patch_size}, {side}] for {name} "
                         f"of {tuple(images.shape[-2:])}, got {crop}")
    if not crop and side < patch_size:
        raise ValueError(f"train_enlightengan: {name} of {tuple(images.shape[-2:])} are smaller than patch_size "
                         f"{patch_size}")


def _draw(images, batch_size, crop, flip, gen):
    """Random images, random ``crop`` crops (0: whole), random flips; values mapped to [-1, 1]."""
    (batch,) = random_batch([images], batch_size, crop, gen)
    if flip:  # horizontal and vertical, one draw for both (not random_batch's horizontal flips)
        h, v = (torch.rand(2, batch_size, 1, 1, 1, generator=gen) < 0.5).unbind(0)
        batch = torch.where(h, batch.flip(-1), batch)
        batch = torch.where(v, batch.flip(-2), batch)
    return batch * 2 - 1


def _patch_offsets(h, w, size, n, gen):
    # The authors' random.randint(0, max(0, w - patchSize - 1)) (inclusive): never the last offset.
    ys = torch.randint(max(0, h - size - 1) + 1, (n,), generator=gen).tolist()
    xs = torch.randint(max(0, w - size - 1) + 1, (n,), generator=gen).tolist()
    return list(zip(ys, xs))


def crop_patches(x, offsets, size):
    """The local discriminator's patches of a batch, all in one batch.

    Args:
        x (Tensor): images ``(B, 3, H, W)``.
        offsets (list[tuple[int, int]]): (top, left) of each patch, shared by the batch.
        size (int): patch side.

    Returns:
        Tensor: ``(len(offsets) * B, 3, size, size)``, patch-major. The discriminators have no
        normalisation, so scoring this batch gives every patch the scores separate calls would,
        and the mean of the authors' per-patch mean squared errors (equal sizes) is the mean over it.
    """
    return torch.cat([x[:, :, y:y + size, x0:x0 + size] for y, x0 in offsets])


def generator_adversarial_loss(net_d, net_p, real_b, fake_b, offsets, patch_size):
    """The generator's losses (the authors' ``loss_G_A`` with ``use_ragan``, ``hybrid_loss``, ``patchD``).

    Args:
        net_d, net_p (NoNormDiscriminator): the global and local discriminators.
        real_b (Tensor): normal-light images ``(B, 3, H, W)`` in [-1, 1].
        fake_b (Tensor): generated images ``(B, 3, H, W)`` (gradients flow to the generator).
        offsets (list[tuple[int, int]]): the patches' (top, left) corners.
        patch_size (int): their side.

    Returns:
        tuple[Tensor, Tensor]: the global relativistic LSGAN term and the local LSGAN term (the
        mean over the patches); the authors' ``loss_G_A`` is their sum.
    """
    # Real and fake in one batch (no normalisation in the discriminator: the same scores).
    pred_real, pred_fake = net_d(torch.cat([real_b, fake_b])).split(len(real_b))
    g_global = relativistic_lsgan_loss(pred_real, pred_fake, for_discriminator=False)
    g_local = lsgan_loss(net_p(crop_patches(fake_b, offsets, patch_size)), True)
    return g_global, g_local


def discriminator_losses(net_d, net_p, real_b, fake_b, offsets, patch_size):
    """The discriminators' losses (the authors' ``loss_D_A`` and ``loss_D_P``) on detached fakes.

    Args: as :func:`generator_adversarial_loss`.

    Returns:
        tuple[Tensor, Tensor]: the global discriminator's relativistic LSGAN loss and the local
        one's plain LSGAN loss ``(l(D(real), 1) + l(D(fake), 0)) / 2`` over the patches.
    """
    fake_b = fake_b.detach()
    pred_real, pred_fake = net_d(torch.cat([real_b, fake_b])).split(len(real_b))
    loss_d = relativistic_lsgan_loss(pred_real, pred_fake, for_discriminator=True)
    real_p, fake_p = crop_patches(real_b, offsets, patch_size), crop_patches(fake_b, offsets, patch_size)
    pred_real, pred_fake = net_p(torch.cat([real_p, fake_p])).split(len(real_p))
    loss_p = (lsgan_loss(pred_real, True) + lsgan_loss(pred_fake, False)) * 0.5
    return loss_d, loss_p


def train_enlightengan(dark, normal, *, iters=300, batch_size=8, crop=64, lr=3e-4, seed=0, patch_size=16,
                       n_patches=6, vary=(2.0, 4.0), ndf=32, n_layers_d=5, n_layers_patch_d=4, betas=(0.5, 0.999),
                       flip=True, channels=16, log_period=50, progress=True, model=None):
    """Train EnlightenGAN's generator against its global and local discriminators (unpaired).

    Each step: draw a batch of dark and one of normal-light images (independently: they need
    not correspond), generate, update the generator on the adversarial losses, then both
    discriminators on the same generated batch, as the authors' ``optimize_parameters``.

    The defaults are sized for a 2-core CPU (0.45 CPU-seconds a step, measured single-threaded
    on 128 px images on 2026-12-05, so 300 steps in 1-3 minutes): half the authors' widths
    (generator 16, discriminators 32) and 16 px patches on 64 px crops; the authors' values are
    given with each argument.

    Args:
        dark (Tensor): low-light RGB images in [0, 1], ``(N, 3, S, S)``.
        normal (Tensor): normal-light RGB images in [0, 1], ``(M, 3, S', S')`` (any M, S').
        iters (int): optimisation steps.
        batch_size (int): images per step, of each set (drawn at random with replacement; the
            authors' 32).
        crop (int): side of the random crop from each drawn image (>= patch_size), or 0 for the
            whole images (then dark and normal images must have the same size).
        lr (float): Adam's learning rate, for the generator and both discriminators (the
            authors' 1e-4).
        seed (int): seed of the initialisation and of every random draw.
        patch_size (int): side of the local discriminator's patches (the authors' 32, on 320 px crops).
        n_patches (int): patches per step (the authors' 1 + ``patchD_3`` = 6).
        vary (tuple[float, float] or None): the range of the authors' extra darkening of the
            generator's input (applied to half the images); None: off.
        ndf (int): first-layer width of both discriminators (the authors' 64).
        n_layers_d, n_layers_patch_d (int): stride-2 layers of the global (5) and local (4)
            discriminators.
        betas (tuple[float, float]): Adam's (the authors' beta1 0.5).
        flip (bool): random horizontal and vertical flips.
        channels (int): generator width when ``model`` is None (the authors' 32).
        log_period (int): log the losses every this many steps.
        progress (bool): show a progress bar.
        model (UnetResizeConv or None): continue training this generator; None: a new one with
            the authors' initialisation.

    Returns:
        tuple[UnetResizeConv, list[dict]]: the generator (eval mode, CPU) and, for every step,
        floats: ``total`` (the generator's objective, the authors' ``loss_G`` without the VGG
        term), ``G_global``/``G_local`` (its two parts), ``D_A``/``D_P`` (the global and local
        discriminators' losses), and ``fake_mean``/``normal_mean``/``dark_mean`` (mean
        intensities in [0, 1] of the generated, normal-light and input batches).

    Raises:
        ValueError: bad images or arguments.
        FloatingPointError: a loss became non-finite.
    """
    if iters < 1 or batch_size < 1 or n_patches < 1 or patch_size < 8:
        raise ValueError(f"train_enlightengan: iters, batch_size and n_patches must be >= 1 and patch_size >= 8, "
                         f"got {iters}, {batch_size}, {n_patches}, {patch_size}")
    _check_images("dark", dark, crop, patch_size)
    _check_images("normal", normal, crop, patch_size)
    if not crop and dark.shape[-2:] != normal.shape[-2:]:
        raise ValueError(f"train_enlightengan: without crops, dark {tuple(dark.shape[-2:])} and normal "
                         f"{tuple(normal.shape[-2:])} images must have the same size")
    if vary is not None and not (len(vary) == 2 and 0 < vary[0] <= vary[1]):
        raise ValueError(f"train_enlightengan: vary must be None or (low, high) with 0 < low <= high, got {vary!r}")
    gen = torch.Generator().manual_seed(seed)
    with seeded(seed):
        if model is None:
            model = UnetResizeConv(channels=channels)
            model.apply(weights_init)
        net_d = NoNormDiscriminator(3, ndf, n_layers_d)
        net_d.apply(weights_init)
        net_p = NoNormDiscriminator(3, ndf, n_layers_patch_d)
        net_p.apply(weights_init)
    model.train()
    opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(net_d.parameters(), lr=lr, betas=betas)
    opt_p = torch.optim.Adam(net_p.parameters(), lr=lr, betas=betas)
    steps = TrainingProgress("EnlightenGAN", iters, log_period=log_period, progress=progress, logger=logger)
    for it in steps:
        real_a = _draw(dark, batch_size, crop, flip, gen)
        real_b = _draw(normal, batch_size, crop, flip, gen)
        input_img = real_a
        if vary is not None:
            # The authors' --vary: (A + 1) / 2 / times * 2 - 1 for half the images, times in [2, 4].
            times = vary[0] + (vary[1] - vary[0]) * torch.rand(batch_size, 1, 1, 1, generator=gen)
            darker = torch.rand(batch_size, 1, 1, 1, generator=gen) < 0.5
            input_img = torch.where(darker, (real_a + 1) / 2 / times * 2 - 1, real_a)
        fake_b, _ = model(input_img, attention_map(input_img))
        h, w = fake_b.shape[-2:]
        offsets = _patch_offsets(h, w, patch_size, n_patches, gen)

        # Generator step. The discriminators get no gradients here (the authors zero them before
        # their own step anyway); freezing them only saves the work.
        for p in (*net_d.parameters(), *net_p.parameters()):
            p.requires_grad_(False)
        g_global, g_local = generator_adversarial_loss(net_d, net_p, real_b, fake_b, offsets, patch_size)
        loss_g = g_global + g_local
        for p in (*net_d.parameters(), *net_p.parameters()):
            p.requires_grad_(True)
        check_finite("EnlightenGAN generator loss", it, loss_g)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

        # Discriminator steps on the same generated batch, as the authors'.
        loss_d, loss_p = discriminator_losses(net_d, net_p, real_b, fake_b, offsets, patch_size)
        check_finite("EnlightenGAN discriminator loss", it, loss_d, loss_p)
        opt_d.zero_grad()
        opt_p.zero_grad()
        (loss_d + loss_p).backward()
        opt_d.step()
        opt_p.step()

        fake = fake_b.detach()
        steps.record(it, {"total": loss_g, "G_global": g_global, "G_local": g_local, "D_A": loss_d, "D_P": loss_p,
                          "fake_mean": (fake.clamp(-1, 1).mean() + 1) / 2, "normal_mean": (real_b.mean() + 1) / 2,
                          "dark_mean": (input_img.mean() + 1) / 2},
                     postfix=lambda v: {"G": f"{v['total']:.3f}", "D": f"{v['D_A']:.3f}", "P": f"{v['D_P']:.3f}"})
    model.eval()
    return model, steps.history


def save_enlightengan_weights(model, path):
    """Write the generator as the authors release it (``200_net_G_A.pth``), atomically.

    The format is :func:`~wnlb_d2.enhance.enlightengan.enlightengan_state_dict`: the bare state
    dict with DataParallel's ``module.`` prefix, without ``num_batches_tracked``.
    """
    save_torch_file(enlightengan_state_dict(model), path)
    logger.info(f"Saved EnlightenGAN generator weights to {path}")
    return path
