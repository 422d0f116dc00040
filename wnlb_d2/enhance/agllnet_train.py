"""Supervised training of AGLLNet on exact (dark, clean) pairs, small and fast on a CPU.

The losses follow what the authors publish and can be checked here. The AGLLNet paper supervises
the Attention-Net with a ground-truth ue-attention map computed from the pair, and the
Enhancement-Net and Reinforce-Net outputs with structure (SSIM), perceptual (VGG), regional and
brightness terms; the authors released no training code for AGLLNet, and the paper's loss
section (its exact formulas and weights) could not be read from this machine. The image terms
are therefore those of the first author's released training code for MBLLEN (Lv et al., BMVC
2018; github.com/Lvfeifan/MBLLEN, ``main/train.py: my_loss``, Apache-2.0), which the AGLLNet paper
builds on, with their weights (re-implemented here in torch):

* ``l1``: mean absolute error (weight 1);
* ``ssim``: ``3 - sum over R, G, B of SSIM`` (11x11 Gaussian window, sigma 1.5, 'valid', C1 =
  0.01^2, C2 = 0.03^2; MBLLEN's ``tf_ssim``; weight 1);
* ``region``: L1 with the darkest 40 % of the predicted image's pixels (grey = 0.39 R + 0.5 G +
  0.11 B) weighted 4 and the rest 1 (weight 1). MBLLEN's code compares the grey image with the
  *negated* 40th-percentile value (``top_k(-gray)``), which makes its mask almost always empty;
  this follows the definition in its paper (the darkest 40 % weighted 4) instead.
* MBLLEN's and AGLLNet's perceptual term (VGG-19 ``block3_conv4`` features, weight 1/3 in
  MBLLEN) needs ImageNet weights that cannot be downloaded here: **left out** (a documented
  difference).

They are applied to both the fused Enhancement-Net output (channels 0:3) and the Reinforce-Net
output (4:7, the enhanced image), against the clean image. (The paper trains the Reinforce-Net
towards a contrast-amplified version of the clean image; that recipe could not be read here, so
both outputs learn the clean image.) The Attention-Net is supervised as the paper defines its
ue-attention map, ``A = |max_c(clean) - max_c(dark)| / max_c(clean)`` (clipped to [0, 1], a small
epsilon in the denominator), with a mean squared error of weight 1: with that A the network's
attention-guided input ``dark / (1.00001 - A)`` has the clean image's brightness.
"""

import json
import logging

import numpy as np
import torch
import torch.nn.functional as F

from .agllnet import AGLLNet, CONFIG_ATTRIBUTE, keras_layer_map, split_outputs
from .training_steps import TrainingProgress, check_finite, random_batch, seeded
from .weights_io import weights_output

__all__ = ["CPU_CONFIG", "ue_attention_map", "ssim_per_channel", "region_loss", "image_loss", "agllnet_loss",
           "train_agllnet", "save_agllnet_weights"]

logger = logging.getLogger(__name__)

#: The network trained here by default: the released layout with a 6-level Attention-Net (so
#: 64 px crops pass: inputs are multiples of 2^6), narrower modules, dilations 2..16 and one
#: residual block -- about 5x cheaper per pixel than the released one (a 64 px, batch-4 step
#: took 0.6 s on one core of a busy 2-core machine).
CPU_CONFIG = {"att_widths": (8, 16, 32, 32, 32, 32), "fem_width": 8, "em_width": 4, "dilated_width": 8,
              "num_dilated": 4, "res_blocks": 1}


def ue_attention_map(dark, clean, eps=1e-4):
    """The paper's ground-truth ue-attention map of a pair.

    Args:
        dark, clean (Tensor): RGB images in [0, 1], ``(B, 3, H, W)``.
        eps (float): keeps black clean pixels finite.

    Returns:
        Tensor: ``|max_c(clean) - max_c(dark)| / (max_c(clean) + eps)`` clipped to [0, 1],
        ``(B, 1, H, W)``.
    """
    hi = clean.amax(1, keepdim=True)
    lo = dark.amax(1, keepdim=True)
    return ((hi - lo).abs() / (hi + eps)).clamp(0.0, 1.0)


def _gauss_window(size=11, sigma=1.5, dtype=torch.float32):
    # MBLLEN's _tf_fspecial_gauss: offsets -size//2+1 .. size//2.
    r = torch.arange(-size // 2 + 1, size // 2 + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    g = torch.exp(-(xx ** 2 + yy ** 2) / (2.0 * sigma ** 2))
    return (g / g.sum()).to(dtype)[None, None]


def ssim_per_channel(x, y, size=11, sigma=1.5):
    """SSIM of each colour channel, averaged over the 'valid' map and the batch (MBLLEN's ``tf_ssim``).

    Args:
        x, y (Tensor): images in [0, 1], ``(B, 3, H, W)`` with H, W >= ``size``.

    Returns:
        Tensor: ``(3,)``, one SSIM per channel.
    """
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    b, c, h, w = x.shape
    win = _gauss_window(size, sigma, x.dtype).to(x.device)
    xs, ys = x.reshape(b * c, 1, h, w), y.reshape(b * c, 1, h, w)

    def filt(t):
        return F.conv2d(t, win)

    mu1, mu2 = filt(xs), filt(ys)
    s11 = filt(xs * xs) - mu1 * mu1
    s22 = filt(ys * ys) - mu2 * mu2
    s12 = filt(xs * ys) - mu1 * mu2
    ssim = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s11 + s22 + c2))
    return ssim.reshape(b, c, -1).mean(dim=(0, 2))


def region_loss(pred, target, percent=0.4, dark_weight=4.0):
    """L1 with the darkest ``percent`` of the prediction's pixels weighted ``dark_weight``.

    Args:
        pred, target (Tensor): ``(B, 3, H, W)``.

    Returns:
        Tensor: scalar.
    """
    b, _, h, w = pred.shape
    with torch.no_grad():  # the mask is a constant (tf.to_float has no gradient in MBLLEN)
        grey = (0.39 * pred[:, 0] + 0.5 * pred[:, 1] + 0.11 * pred[:, 2]).reshape(b, -1)
        index = max(int(h * w * percent - 1), 0)
        threshold = grey.kthvalue(index + 1, dim=1).values
        mask = (grey <= threshold[:, None]).reshape(b, 1, h, w).to(pred.dtype)
    diff = (pred - target).abs()
    return (diff * (dark_weight * mask + (1.0 - mask))).mean()


def image_loss(pred, target):
    """MBLLEN's image terms without VGG: ``{"l1", "ssim", "region"}`` (scalars, weights 1)."""
    return {"l1": (pred - target).abs().mean(), "ssim": 3.0 - ssim_per_channel(pred, target).sum(),
            "region": region_loss(pred, target)}


def agllnet_loss(out, dark, clean):
    """All training terms for one batch.

    Args:
        out (Tensor): the network's ``(B, 10, H, W)`` output.
        dark, clean (Tensor): the pair, ``(B, 3, H, W)`` in [0, 1].

    Returns:
        dict[str, Tensor]: ``attention`` (MSE to :func:`ue_attention_map`), ``enhance_*`` and
        ``reinforce_*`` (:func:`image_loss` of the fused and the reinforced output) and ``total``
        (their sum).
    """
    parts = split_outputs(out)
    terms = {"attention": F.mse_loss(parts["attention"], ue_attention_map(dark, clean))}
    for key, pred in (("enhance", parts["fused"]), ("reinforce", parts["enhanced"])):
        terms.update({f"{key}_{k}": v for k, v in image_loss(pred, clean).items()})
    terms["total"] = sum(terms.values())
    return terms


def train_agllnet(pairs, *, iters=300, batch_size=8, crop=64, lr=1e-3, seed=0, flip=True, log_period=50,
                  progress=True, model=None, config=None):
    """Train AGLLNet on aligned (dark, clean) pairs with Adam.

    Args:
        pairs (tuple[Tensor, Tensor]): dark and clean RGB images in [0, 1], each ``(N, 3, S, S)``
            (e.g. from :func:`~wnlb_d2.enhance.training_pairs.load_training_pairs`).
        iters (int): optimisation steps.
        batch_size (int): pairs per step (drawn at random with replacement).
        crop (int): side of the random crop taken from each drawn pair (the same window in both),
            a multiple of the network's input multiple (2^L); 0 for the whole images.
        lr (float): Adam's learning rate (MBLLEN's 1e-3).
        seed (int): seed of the initialisation and of the batch draws.
        flip (bool): random horizontal flips (the same for both images of a pair).
        log_period (int): log the losses every this many steps.
        progress (bool): show a progress bar.
        model (AGLLNet or None): continue training this network; None: a new one of ``config``.
        config (dict or None): configuration of a new network (default :data:`CPU_CONFIG`).

    Returns:
        tuple[AGLLNet, list[dict]]: the network (eval mode, CPU) and the loss terms of every step
        (floats, key ``"total"`` among them).

    Raises:
        ValueError: bad pairs or sizes (the message names the argument).
        FloatingPointError: the loss became non-finite.
    """
    dark, clean = pairs
    if dark.dim() != 4 or dark.shape[1] != 3 or dark.shape != clean.shape:
        raise ValueError(f"train_agllnet: pairs must be two (N, 3, S, S) tensors of one shape, got "
                         f"{tuple(dark.shape)} and {tuple(clean.shape)}")
    if iters < 1 or batch_size < 1:
        raise ValueError(f"train_agllnet: iters and batch_size must be >= 1, got {iters}, {batch_size}")
    if model is None:
        with seeded(seed):
            model = AGLLNet(**(CPU_CONFIG if config is None else config))
    size = crop or min(dark.shape[-2:])
    if crop and crop > min(dark.shape[-2:]) or size % model.multiple or size < model.min_size:
        raise ValueError(f"train_agllnet: crop {crop} must be a multiple of {model.multiple} (the network's input "
                         f"multiple), >= {model.min_size} and <= the image side {min(dark.shape[-2:])} (0: whole images, "
                         f"which must then satisfy the same)")
    if not crop and (dark.shape[-2] % model.multiple or dark.shape[-1] % model.multiple):
        raise ValueError(f"train_agllnet: crop 0 needs images whose sides are multiples of {model.multiple}, "
                         f"got {tuple(dark.shape[-2:])}")
    gen = torch.Generator().manual_seed(seed)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = TrainingProgress("AGLLNet", iters, log_period=log_period, progress=progress, logger=logger)
    for it in steps:
        lo, hi = random_batch([dark, clean], batch_size, crop, gen, flip=flip)
        terms = agllnet_loss(model(lo), lo, hi)
        check_finite("AGLLNet loss", it, terms["total"])
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        steps.record(it, terms)
    model.eval()
    return model, steps.history


def save_agllnet_weights(model, path):
    """Write ``model`` as a Keras HDF5 weights file (``model.save_weights`` layout), atomically.

    One group per layer named by its Keras auto-name in the authors' creation order
    (:func:`~wnlb_d2.enhance.agllnet.keras_layer_map`), with ``weight_names`` and the datasets
    ``<layer>/kernel:0`` (Keras layout: Conv2D (kh, kw, in, out), Conv2DTranspose (kh, kw, out,
    in)) and ``<layer>/bias:0``; root attributes ``layer_names``, ``backend``, ``keras_version``
    and the network's configuration under :data:`~wnlb_d2.enhance.agllnet.CONFIG_ATTRIBUTE`.
    :func:`~wnlb_d2.enhance.agllnet.load_agllnet_weights` reads it, and so does Keras'
    ``load_weights(..., by_name=True)`` on the authors' model. It is not a ``load_model`` file:
    that needs Keras' architecture JSON, whose Lambda layers hold pickled Python bytecode.

    Returns:
        str: ``path``.
    """
    import h5py  # only here: reading and running the network does not need it

    names = keras_layer_map(model)
    modules = dict(model.named_modules())
    with weights_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["layer_names"] = np.array([n.encode("utf8") for n in names])
            f.attrs["backend"] = b"tensorflow"
            f.attrs["keras_version"] = b"2.2.0"
            f.attrs[CONFIG_ATTRIBUTE] = json.dumps(model.config)
            for kname, tname in names.items():
                m = modules[tname]
                g = f.create_group(kname)
                g.attrs["weight_names"] = np.array([f"{kname}/kernel:0".encode(), f"{kname}/bias:0".encode()])
                g.create_dataset(f"{kname}/kernel:0", data=m.weight.detach().cpu().numpy().transpose(2, 3, 1, 0))
                g.create_dataset(f"{kname}/bias:0", data=m.bias.detach().cpu().numpy())
    logger.info(f"Saved AGLLNet weights to {path}")
    return path
