"""The enhancer interface: a uint8 image in, an enhanced uint8 image of the same shape out."""

import abc

import numpy as np

from ..utils.params import CHANNEL_ORDERS, check_channel_order

__all__ = ["Enhancer", "EnhancerChain", "ENHANCER_FORMATS", "check_image"]

#: Channel orders an enhancer accepts (detectron2's ``INPUT.FORMAT`` values for colour).
ENHANCER_FORMATS = CHANNEL_ORDERS


def check_image(image, who):
    """Raise a ``ValueError`` naming ``who`` unless ``image`` is a uint8 (H, W, 3) array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) \
            else type(image).__name__
        raise ValueError(f"{who}: expected a uint8 array of shape (H, W, 3), got {desc}")


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
