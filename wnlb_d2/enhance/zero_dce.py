"""A zero-reference curve-estimation enhancer of the Zero-DCE++ family (Li et al., TPAMI 2021).

A tiny network of depthwise-separable convolutions predicts, per pixel and channel, the
parameter ``alpha`` in [-1, 1] of the light-enhancement (LE) curve, applied ``iterations``
times to the image ``x`` in [0, 1]::

    LE(x) = x + alpha * (x ** 2 - x)        (= x - alpha x (1 - x): alpha < 0 brightens)

It learns from low-light images alone (no reference images) with the four zero-reference
losses of :mod:`wnlb_d2.enhance.zero_dce_losses`.

The layout is the authors' (``Zero-DCE++/model.py``: seven ``CSDN_Tem`` blocks ``e_conv1`` ..
``e_conv7``, each a 3x3 depthwise ``depth_conv`` and a 1x1 ``point_conv``, 32 channels, skip
concatenations x3+x4, x2+x5, x1+x6, one 3-channel alpha shared by all 8 iterations), so their
published ``Epoch99.pth`` loads with :func:`load_zero_dce_weights`; files written by
``tools/train_zero_dce.py`` have the same keys and load into the authors' code too.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.params import ParameterError
from .base import Enhancer, frozen_network, run_rgb_network
from .classical import check_int
from .weights_io import listed, read_torch_file, state_dict_differences, state_dict_of_tensors

__all__ = ["ZeroDCEPP", "DepthwiseSeparableConv", "apply_le_curve", "load_zero_dce_weights",
           "ZeroDCEEnhancer", "ZeroDCEWeightsError", "ZERO_DCE_KEYS"]

logger = logging.getLogger(__name__)


class ZeroDCEWeightsError(ValueError):
    """A weights file that is missing or does not have the Zero-DCE++ layout; names the file."""


def apply_le_curve(x, alpha, iterations=8):
    """Apply the light-enhancement curve ``iterations`` times.

    Args:
        x (Tensor): images in [0, 1], shape ``(B, 3, H, W)``.
        alpha (Tensor): curve parameters in [-1, 1], shape ``(B, 3, H, W)`` (or broadcastable).
        iterations (int): how often the curve is applied (8 in Zero-DCE++).

    Returns:
        Tensor: enhanced images in [0, 1], shape ``(B, 3, H, W)``. The curve maps [0, 1] onto
        itself for any alpha in [-1, 1], so no clipping is needed.
    """
    for _ in range(iterations):
        x = x + alpha * (x * x - x)
    return x


class DepthwiseSeparableConv(nn.Module):
    """3x3 depthwise conv then 1x1 pointwise conv (the authors' ``CSDN_Tem``; same key names).

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.depth_conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels)
        self.point_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.point_conv(self.depth_conv(x))


#: The state-dict keys of Zero-DCE++ (weights and biases of e_conv1..7's two convs).
ZERO_DCE_KEYS = tuple(f"e_conv{i}.{conv}.{p}" for i in range(1, 8)
                      for conv in ("depth_conv", "point_conv") for p in ("weight", "bias"))


class ZeroDCEPP(nn.Module):
    """The Zero-DCE++ curve-estimation network.

    Args:
        channels (int): feature channels (32 in the published model).
        iterations (int): LE-curve iterations (8).
        scale_factor (int): the curve parameters are estimated on the image downscaled by this
            factor and upsampled back (the authors use 1 for training, 12 for 1200x900 tests);
            the image itself is enhanced at full resolution. Not stored in the weights.

    Shapes: input ``(B, 3, H, W)`` RGB in [0, 1]; outputs ``(B, 3, H, W)`` each.
    """

    def __init__(self, *, channels=32, iterations=8, scale_factor=1):
        super().__init__()
        self.iterations = check_int("iterations", iterations, 1)
        self.scale_factor = check_int("scale_factor", scale_factor, 1)
        c = check_int("channels", channels, 1)
        self.e_conv1 = DepthwiseSeparableConv(3, c)
        self.e_conv2 = DepthwiseSeparableConv(c, c)
        self.e_conv3 = DepthwiseSeparableConv(c, c)
        self.e_conv4 = DepthwiseSeparableConv(c, c)
        self.e_conv5 = DepthwiseSeparableConv(2 * c, c)
        self.e_conv6 = DepthwiseSeparableConv(2 * c, c)
        self.e_conv7 = DepthwiseSeparableConv(2 * c, 3)

    def curve_parameters(self, x):
        """alpha in [-1, 1] of shape ``(B, 3, H, W)`` for images ``x`` of shape ``(B, 3, H, W)``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ZeroDCEPP expects RGB images of shape (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        small = x
        if self.scale_factor > 1:
            size = (max(1, h // self.scale_factor), max(1, w // self.scale_factor))
            small = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x1 = F.relu(self.e_conv1(small))
        x2 = F.relu(self.e_conv2(x1))
        x3 = F.relu(self.e_conv3(x2))
        x4 = F.relu(self.e_conv4(x3))
        x5 = F.relu(self.e_conv5(torch.cat([x3, x4], 1)))
        x6 = F.relu(self.e_conv6(torch.cat([x2, x5], 1)))
        alpha = torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))
        if self.scale_factor > 1:
            # The authors upsample with UpsamplingBilinear2d (align_corners=True); to the exact
            # input size, so images need not be cropped to a multiple of the factor.
            alpha = F.interpolate(alpha, size=(h, w), mode="bilinear", align_corners=True)
        return alpha

    def forward(self, x):
        """
        Args:
            x (Tensor): RGB images in [0, 1], shape ``(B, 3, H, W)``.

        Returns:
            tuple[Tensor, Tensor]: the enhanced images and the curve parameters alpha, both
            ``(B, 3, H, W)`` (the order of the authors' ``enhance_net_nopool``).
        """
        alpha = self.curve_parameters(x)
        return apply_le_curve(x, alpha, self.iterations), alpha


def load_zero_dce_weights(model, path):
    """Load a Zero-DCE++ state dict (the authors' ``Epoch99.pth`` or ours) into ``model``.

    Args:
        model (ZeroDCEPP): the network; modified in place.
        path (str): the ``.pth`` file.

    Returns:
        ZeroDCEPP: ``model``.

    Raises:
        ZeroDCEWeightsError: the file is missing, not a state dict, or its keys or shapes are not
            those of Zero-DCE++ (the message lists the differences).
    """
    obj = read_torch_file(path, "Zero-DCE++", ZeroDCEWeightsError,
                          "train one with tools/train_zero_dce.py, or give the authors' Epoch99.pth")
    # The bare state dict (the authors' files), a {"model"/"state_dict": ...} wrapper, and
    # DataParallel's "module." prefix; an empty dict goes on to the key check, which names the keys.
    state = state_dict_of_tensors(obj, path, "Zero-DCE++", ZeroDCEWeightsError, allow_empty=True)
    missing, unexpected, wrong = state_dict_differences(model.state_dict(), state)
    if missing or unexpected or wrong:
        raise ZeroDCEWeightsError(
            f"Zero-DCE++ weights {path!r} do not fit the Zero-DCE++ layout (e_conv1..7 with depth_conv/"
            f"point_conv): missing {listed(missing, 6)}, unexpected {listed(unexpected, 6)}, wrong shapes {wrong[:4]}")
    model.load_state_dict(state)
    logger.info(f"Loaded Zero-DCE++ weights from {path} ({len(state)} tensors)")
    return model


class ZeroDCEEnhancer(Enhancer):
    """Zero-DCE++ as an image enhancer (CPU, no gradients).

    It runs on the CPU because enhancers run inside data-loader workers, which are forked
    processes where CUDA cannot be initialised.

    Args:
        weights (str): a Zero-DCE++ ``.pth`` state dict (required).
        scale_factor (int): downscaling of the curve estimation (see :class:`ZeroDCEPP`).
        iterations (int): LE-curve iterations; 8 for the published weights.
    """

    name = "zero_dce"

    def __init__(self, weights="", scale_factor=1, iterations=8):
        if not weights:
            raise ParameterError("weights", "no Zero-DCE++ weights given: train them on low-light images "
                                            "with tools/train_zero_dce.py, or give the authors' Epoch99.pth")
        self.weights = str(weights)
        self.net = frozen_network(lambda: load_zero_dce_weights(
            ZeroDCEPP(scale_factor=scale_factor, iterations=iterations), self.weights), ZeroDCEWeightsError)

    def _enhance(self, bgr):
        # RGB in [0, 1]; the enhanced image (not alpha), clipped and rounded to uint8.
        return run_rgb_network(bgr, lambda rgb: self.net(rgb)[0])

    def _params(self):
        return {"weights": self.weights, "scale_factor": self.net.scale_factor, "iterations": self.net.iterations}
