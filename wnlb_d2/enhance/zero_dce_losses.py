"""The four zero-reference losses of Zero-DCE / Zero-DCE++ (Guo et al. CVPR 2020; Li et al. 2021).

None needs a reference image: they judge the enhanced image against the low-light input and
against generic properties of well-exposed images. Written as in the authors' ``Myloss.py``
(same pooling sizes, padding and normalisation), device-agnostic.
"""

import torch
import torch.nn.functional as F

__all__ = ["spatial_consistency_loss", "exposure_control_loss", "color_constancy_loss",
           "illumination_smoothness_loss", "zero_reference_loss", "DEFAULT_LOSS_WEIGHTS"]

#: Loss weights of Zero-DCE++'s training script (TV 1600, spatial 1, colour 5, exposure 10).
DEFAULT_LOSS_WEIGHTS = {"smoothness": 1600.0, "spatial": 1.0, "color": 5.0, "exposure": 10.0}


def spatial_consistency_loss(low, enhanced, region=4):
    """Keep the contrast between neighbouring regions of the input in the output.

    Both images are averaged over channels and over ``region x region`` patches; for each patch
    the differences to its left, right, upper and lower neighbour (zero-padded at the border)
    must be the same in both images.

    Args:
        low, enhanced (Tensor): ``(B, 3, H, W)`` in [0, 1], H and W >= ``region``.

    Returns:
        Tensor: scalar.
    """
    org = F.avg_pool2d(low.mean(1, keepdim=True), region)
    enh = F.avg_pool2d(enhanced.mean(1, keepdim=True), region)
    d = org - enh
    # The difference of neighbour differences is the neighbour difference of d (linearity).
    padded = F.pad(d, (1, 1, 1, 1))
    centre = padded[:, :, 1:-1, 1:-1]
    total = ((centre - padded[:, :, 1:-1, :-2]) ** 2 + (centre - padded[:, :, 1:-1, 2:]) ** 2
             + (centre - padded[:, :, :-2, 1:-1]) ** 2 + (centre - padded[:, :, 2:, 1:-1]) ** 2)
    return total.mean()


def exposure_control_loss(enhanced, level=0.6, patch=16):
    """Pull the mean intensity of every ``patch x patch`` region towards the exposure ``level``.

    Args:
        enhanced (Tensor): ``(B, 3, H, W)`` in [0, 1], H and W >= ``patch``.
        level (float): the well-exposedness level E (0.6 in the papers).

    Returns:
        Tensor: scalar.
    """
    mean = F.avg_pool2d(enhanced.mean(1, keepdim=True), patch)
    return ((mean - level) ** 2).mean()


def color_constancy_loss(enhanced):
    """Grey-world assumption: the channel means of the output should be equal.

    Returns:
        Tensor: scalar, the batch mean of ``sqrt(sum over channel pairs of ((m_p - m_q)^2)^2)``.
    """
    m = enhanced.mean((2, 3))  # (B, 3)
    mr, mg, mb = m[:, 0], m[:, 1], m[:, 2]
    # The 1e-12 keeps the gradient of sqrt finite when the three means are equal.
    k = torch.sqrt(((mr - mg) ** 2) ** 2 + ((mr - mb) ** 2) ** 2 + ((mb - mg) ** 2) ** 2 + 1e-12)
    return k.mean()


def illumination_smoothness_loss(alpha):
    """Total variation of the curve parameters: neighbouring pixels get similar curves.

    Args:
        alpha (Tensor): ``(B, 3, H, W)``.

    Returns:
        Tensor: scalar, ``2 (sum dh^2 / count_h + sum dw^2 / count_w) / B`` as the authors write it.
    """
    b, _, h, w = alpha.shape
    dh = ((alpha[:, :, 1:, :] - alpha[:, :, :-1, :]) ** 2).sum() / max(1, (h - 1) * w)
    dw = ((alpha[:, :, :, 1:] - alpha[:, :, :, :-1]) ** 2).sum() / max(1, h * (w - 1))
    return 2.0 * (dh + dw) / b


def zero_reference_loss(low, enhanced, alpha, weights=None, exposure_level=0.6):
    """The weighted sum of the four losses.

    Args:
        low (Tensor): the low-light inputs, ``(B, 3, H, W)`` in [0, 1].
        enhanced (Tensor): the network's outputs, same shape.
        alpha (Tensor): the curve parameters, same shape.
        weights (dict or None): keys of :data:`DEFAULT_LOSS_WEIGHTS`; missing keys keep the default.
        exposure_level (float): E of the exposure loss.

    Returns:
        dict[str, Tensor]: the four weighted terms and their sum ``"total"``.
    """
    wts = dict(DEFAULT_LOSS_WEIGHTS)
    if weights:
        unknown = sorted(set(weights) - set(wts))
        if unknown:
            raise ValueError(f"zero_reference_loss: unknown loss weight(s) {unknown}, expected some of {sorted(wts)}")
        wts.update(weights)
    terms = {
        "smoothness": wts["smoothness"] * illumination_smoothness_loss(alpha),
        "spatial": wts["spatial"] * spatial_consistency_loss(low, enhanced),
        "color": wts["color"] * color_constancy_loss(enhanced),
        "exposure": wts["exposure"] * exposure_control_loss(enhanced, exposure_level),
    }
    terms["total"] = sum(terms.values())
    return terms
