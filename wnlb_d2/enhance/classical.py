"""Classical image-space enhancers: gamma correction, CLAHE, histogram equalisation, NLM denoising.

All work on uint8 BGR images with OpenCV and change brightness/contrast on a luminance channel
only (CLAHE on L of CIELAB, equalisation on Y of YCrCb), so colours keep their hue; gamma acts
on every channel, as a camera's tone curve does.

Invalid parameters raise :class:`~wnlb_d2.utils.params.ParameterError` naming the
constructor argument; :func:`~wnlb_d2.enhance.build.build_enhancer_from_config` re-raises it
with the config key (``INPUT.ENHANCER.CLAHE.CLIP_LIMIT`` ...).
"""

import math
import numbers

import cv2
import numpy as np

from ..utils.params import ParameterError, check_number
from .base import Enhancer

__all__ = ["GammaCorrection", "Clahe", "HistogramEqualization", "NonLocalMeans", "check_int"]

# ITU-R BT.601 luma weights, in BGR order.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float64)


def check_int(key, value, lower, odd=False):
    """Validate an int >= ``lower`` (odd if asked); returns it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(key, f"expected an int, got {value!r}")
    if value < lower:
        raise ParameterError(key, f"expected an int >= {lower}, got {value}")
    if odd and value % 2 == 0:
        raise ParameterError(key, f"expected an odd int, got {value}")
    return int(value)


class GammaCorrection(Enhancer):
    """``I_out = 255 * (I / 255) ** gamma`` on every channel (a lookup table).

    With ``value = 0`` the gamma is chosen per image so that the mean luminance ``m`` becomes
    ``target_mean``: ``gamma = log(target_mean) / log(m)``, limited to ``[0.05, 20]``; a black
    image (``m = 0``) is returned unchanged.

    Args:
        value (float): the gamma (< 1 brightens), or 0 for the automatic choice.
        target_mean (float): mean luminance in (0, 1) that the automatic gamma aims at.
    """

    name = "gamma"

    def __init__(self, value=0.0, target_mean=0.5):
        self.value = check_number("value", value, lower=0.0)
        self.target_mean = check_number("target_mean", target_mean, lower=0.0, upper=1.0)
        if not 0.0 < self.target_mean < 1.0:
            raise ParameterError("target_mean", f"expected a number in (0, 1), got {target_mean!r}")

    def gamma_for(self, bgr):
        """The gamma applied to ``bgr``: ``value``, or the automatic one (None: leave unchanged)."""
        if self.value > 0:
            return self.value
        mean = float((bgr.reshape(-1, 3).astype(np.float64) @ _LUMA_BGR).mean()) / 255.0
        if mean <= 0.0:
            return None
        mean = min(mean, 254.5 / 255.0)  # log(1) = 0: a white image would divide by zero
        return float(np.clip(math.log(self.target_mean) / math.log(mean), 0.05, 20.0))

    def _enhance(self, bgr):
        gamma = self.gamma_for(bgr)
        if gamma is None:
            return bgr.copy()
        lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
        return cv2.LUT(bgr, lut)

    def _params(self):
        return {"value": self.value if self.value > 0 else "auto", "target_mean": self.target_mean}


class Clahe(Enhancer):
    """Contrast-limited adaptive histogram equalisation (Zuiderveld 1994) of CIELAB's L channel.

    Args:
        clip_limit (float): contrast limit per tile (OpenCV's ``clipLimit``), > 0.
        tile_grid_size (int): tiles per image side (OpenCV's ``tileGridSize``), >= 1.
    """

    name = "clahe"

    def __init__(self, clip_limit=2.0, tile_grid_size=8):
        self.clip_limit = check_number("clip_limit", clip_limit, lower=0.0)
        if self.clip_limit <= 0:
            raise ParameterError("clip_limit", f"expected a number > 0, got {clip_limit!r}")
        self.tile_grid_size = check_int("tile_grid_size", tile_grid_size, 1)

    def _enhance(self, bgr):
        # A CLAHE object holds state between calls, so one per call keeps the enhancer safe to
        # share between threads and to pickle into data-loader workers.
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=(self.tile_grid_size,) * 2)
        lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
        lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)

    def _params(self):
        return {"clip_limit": self.clip_limit, "tile_grid_size": self.tile_grid_size}


class HistogramEqualization(Enhancer):
    """Global histogram equalisation of the luma channel Y (YCrCb); chroma is kept."""

    name = "histeq"

    def _enhance(self, bgr):
        ycrcb = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
        ycrcb[:, :, 0] = cv2.equalizeHist(np.ascontiguousarray(ycrcb[:, :, 0]))
        return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


class NonLocalMeans(Enhancer):
    """Non-local means denoising in image space (Buades et al. 2005), OpenCV's coloured variant.

    The classical counterpart of the feature-space non-local blocks: every pixel becomes a
    weighted mean of pixels whose surrounding patches look alike. ``fastNlMeansDenoisingColored``
    denoises L and the chroma of CIELAB with separate strengths.

    Args:
        h (float): filter strength on luminance (larger removes more noise and more detail), > 0.
        h_color (float): filter strength on the colour components, > 0.
        template_window_size (int): patch side, odd.
        search_window_size (int): side of the window searched for similar patches, odd.
    """

    name = "nlm"

    def __init__(self, h=10.0, h_color=10.0, template_window_size=7, search_window_size=21):
        self.h = check_number("h", h, lower=0.0)
        self.h_color = check_number("h_color", h_color, lower=0.0)
        for key, v in (("h", self.h), ("h_color", self.h_color)):
            if v <= 0:
                raise ParameterError(key, f"expected a number > 0, got {v}")
        self.template_window_size = check_int("template_window_size", template_window_size, 1, odd=True)
        self.search_window_size = check_int("search_window_size", search_window_size, 1, odd=True)

    def _enhance(self, bgr):
        return cv2.fastNlMeansDenoisingColored(bgr, None, self.h, self.h_color, self.template_window_size,
                                               self.search_window_size)

    def _params(self):
        return {"h": self.h, "h_color": self.h_color, "template_window_size": self.template_window_size,
                "search_window_size": self.search_window_size}
