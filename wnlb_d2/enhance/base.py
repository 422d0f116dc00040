"""The enhancer interface: a uint8 image in, an enhanced uint8 image of the same shape out."""

import abc

import numpy as np
import torch

from ..utils.params import CHANNEL_ORDERS, ParameterError, check_channel_order

__all__ = ["Enhancer", "EnhancerChain", "ENHANCER_FORMATS", "check_image", "bgr_to_rgb_tensor", "rgb_tensor_to_bgr",
           "run_rgb_network", "frozen_network"]

#: Channel orders an enhancer accepts (detectron2's ``INPUT.FORMAT`` values for colour).
ENHANCER_FORMATS = CHANNEL_ORDERS


def check_image(image, who):
    """Raise a ``ValueError`` naming ``who`` unless ``image`` is a uint8 (H, W, 3) array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) \
            else type(image).__name__
        raise ValueError(f"{who}: expected a uint8 array of shape (H, W, 3), got {desc}")


def bgr_to_rgb_tensor(bgr):
    """A uint8 BGR image as the learned enhancers' network input.

    Args:
        bgr (np.ndarray): uint8 ``(H, W, 3)`` BGR image.

    Returns:
        Tensor: float32 RGB in [0, 1], shape ``(1, 3, H, W)``.
    """
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)[None].float() / 255.0


def rgb_tensor_to_bgr(rgb, *, truncate=False):
    """A network's RGB output in [0, 1] as a uint8 BGR image.

    Args:
        rgb (Tensor): ``(1, 3, H, W)``; values outside [0, 1] are clipped.
        truncate (bool): scale to uint8 by truncation, as ``astype(np.uint8)`` (the authors' test
            code of EnlightenGAN), instead of rounding to the nearest value.

    Returns:
        np.ndarray: uint8 ``(H, W, 3)`` BGR, contiguous.
    """
    out = rgb[0].permute(1, 2, 0).clamp(0, 1) * 255.0
    if not truncate:
        out = out.round_()
    return np.ascontiguousarray(out.to(torch.uint8).numpy()[:, :, ::-1])


def run_rgb_network(bgr, forward, *, truncate=False):
    """Enhance a BGR image with a network on RGB tensors in [0, 1], without gradients.

    Args:
        bgr (np.ndarray): uint8 ``(H, W, 3)`` BGR image.
        forward (callable): ``(1, 3, H, W)`` RGB in [0, 1] -> ``(1, 3, H, W)`` RGB in [0, 1]
            (the method's own scaling, padding and output selection inside).
        truncate (bool): see :func:`rgb_tensor_to_bgr`.

    Returns:
        np.ndarray: uint8 ``(H, W, 3)`` BGR.
    """
    x = bgr_to_rgb_tensor(bgr)
    with torch.no_grad():
        out = forward(x)
    return rgb_tensor_to_bgr(out, truncate=truncate)


def frozen_network(build, error_cls):
    """An enhancer's network from its weights file, in eval mode and without gradients.

    Args:
        build (callable): no arguments -> the network with its weights loaded.
        error_cls (type): the method's weights error; raised as a ``ParameterError`` of
            ``weights`` (the enhancer's argument) with the same message.

    Returns:
        nn.Module: the network.
    """
    try:
        net = build()
    except error_cls as e:
        raise ParameterError("weights", str(e)) from e
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class Enhancer(abc.ABC):
    """Base class of the image-space enhancers (the first stage of a two-stage pipeline).

    Enhancers are deterministic (no random draws), so an evaluation image is enhanced the same
    way in every run, process and data-loader worker. Subclasses implement :meth:`_enhance` on
    BGR images (OpenCV's order: its colour conversions assume it).

    Attributes:
        name (str): the name in ``INPUT.ENHANCER.NAME``.
    """

    name = ""

    def __call__(self, image, input_format="BGR"):
        """Enhance one image.

        Args:
            image (np.ndarray): uint8 array of shape (H, W, 3) in ``input_format``.
            input_format (str): "BGR" (detectron2's default) or "RGB"; the output has the same
                channel order.

        Returns:
            np.ndarray: uint8 array of shape (H, W, 3), contiguous.
        """
        check_image(image, f"enhancer {self.name!r}")
        check_channel_order(f"enhancer {self.name!r}", input_format)
        bgr = np.ascontiguousarray(image[:, :, ::-1]) if input_format == "RGB" else image
        out = self._enhance(bgr)
        if out.shape != image.shape or out.dtype != np.uint8:
            raise RuntimeError(f"enhancer {self.name!r} returned {out.dtype} {out.shape} for an image of "
                               f"shape {image.shape}; expected uint8 of the same shape")
        if input_format == "RGB":
            out = out[:, :, ::-1]
        return np.ascontiguousarray(out)

    @abc.abstractmethod
    def _enhance(self, bgr):
        """Subclass hook.

        Args:
            bgr (np.ndarray): uint8 (H, W, 3) BGR image (do not modify it in place).

        Returns:
            np.ndarray: uint8 (H, W, 3) BGR image.
        """

    def _params(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


class EnhancerChain(Enhancer):
    """Several enhancers applied left to right, e.g. ``nlm+clahe``: denoise, then enhance.

    Args:
        enhancers (list[Enhancer]): at least one.
    """

    def __init__(self, enhancers):
        if not enhancers:
            raise ValueError("EnhancerChain needs at least one enhancer")
        self.enhancers = list(enhancers)
        self.name = "+".join(e.name for e in self.enhancers)

    def _enhance(self, bgr):
        for e in self.enhancers:
            bgr = e(bgr, "BGR")
        return bgr

    def __repr__(self):
        return " -> ".join(repr(e) for e in self.enhancers)
