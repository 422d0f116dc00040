"""The "lv2021" pipeline: gamma/scale darkening followed by CBDNet-style in-camera noise.

Lv, Li and Lu (IJCV 2021, AGLLNet) made low-light images this way, and the wNLB paper used
their recipe for its low-light COCO. Per image (RGB in [0, 1]):

1. darken: ``D = beta * (alpha * I) ** gamma``;
2. noise in the camera (Guo et al., CBDNet 2019): ``L = mosaic_RGGB(ICRF(D))``,
   ``L += n`` with ``n ~ Normal(0, sigma_s**2 * L + sigma_c**2)``, clip to [0, 1],
   bilinear demosaic, clip, apply the CRF, quantise to 8 bit.

Deliberate difference from the public re-implementation (JoanneLin168/ELVIS): the three
darkening steps are computed in float without rounding to uint8 in between, so dark pixels
are not crushed to a few levels before the noise is added; only the final image is quantised.
"""

import logging

import cv2
import numpy as np

from .camera import GammaResponse, demosaic_bilinear_rggb_planes, load_dorf_curves, mosaic_rggb
from .common import ParameterError, SampledPipeline, check_range, uniform

__all__ = ["Lv2021Pipeline"]

logger = logging.getLogger(__name__)


class Lv2021Pipeline(SampledPipeline):
    """Darkening + in-camera noise (Lv et al. 2021; noise model of CBDNet).

    Every range is ``(low, high)`` and its parameter is drawn uniformly from it per image.

    Args:
        alpha: range of the pre-scale alpha, inside (0, 1]. Default (0.9, 1.0).
        beta: range of the post-scale beta, inside (0, 1]. Default (0.5, 1.0).
        gamma: range of the darkening exponent, inside (0, 10]. Default (1.5, 5.0).
        sigma_s: range of the signal-dependent noise level, inside [0, 1]. Default (0, 0.16).
        sigma_c: range of the constant noise level, inside [0, 1]. Default (0, 0.06).
        crf_gamma: range of the exponent of the parametric CRF ``B = I ** (1 / crf_gamma)``,
            inside (0, 10]; used when ``crf_file`` is empty. Default (1.8, 2.6).
        crf_file: path of the DoRF ``dorfCurves.txt``; if given, each image uses one of its
            curves drawn uniformly instead of the parametric one. Default "" (parametric).
    """

    name = "lv2021"

    def __init__(self, *, alpha=(0.9, 1.0), beta=(0.5, 1.0), gamma=(1.5, 5.0),
                 sigma_s=(0.0, 0.16), sigma_c=(0.0, 0.06), crf_gamma=(1.8, 2.6), crf_file=""):
        self.alpha = check_range("alpha", alpha, 0.0, 1.0, lower_open=True)
        self.beta = check_range("beta", beta, 0.0, 1.0, lower_open=True)
        self.gamma = check_range("gamma", gamma, 0.0, 10.0, lower_open=True)
        self.sigma_s = check_range("sigma_s", sigma_s, 0.0, 1.0)
        self.sigma_c = check_range("sigma_c", sigma_c, 0.0, 1.0)
        self.crf_gamma = check_range("crf_gamma", crf_gamma, 0.0, 10.0, lower_open=True)
        if not isinstance(crf_file, str):
            raise ParameterError("crf_file", f"expected a path (str, '' for none), got {crf_file!r}")
        self.crf_file = crf_file
        self._curves = None
        if crf_file:
            try:
                self._curves = load_dorf_curves(crf_file)
            except (OSError, ValueError) as e:
                raise ParameterError("crf_file", str(e)) from e

    def config(self):
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
                "sigma_s": self.sigma_s, "sigma_c": self.sigma_c, "crf_gamma": self.crf_gamma,
                "crf_file": self.crf_file}

    def _draw_response(self, rng, params):
        if self._curves is None:
            params["crf_gamma"] = uniform(rng, self.crf_gamma)
            return GammaResponse(params["crf_gamma"])
        index = int(rng.integers(len(self._curves)))
        params["crf_index"] = index
        params["crf_name"] = self._curves[index].name
        return self._curves[index]

    def sample_params(self, rng):
        """Draw the parameters of one image (every draw but the noise, in the pipeline's order).

        Returns:
            dict: alpha, beta, gamma, sigma_s, sigma_c, and crf_gamma (parametric response) or
            crf_index and crf_name (a DoRF curve); Python floats, ints and strs.
        """
        params = {
            "alpha": uniform(rng, self.alpha),
            "beta": uniform(rng, self.beta),
            "gamma": uniform(rng, self.gamma),
            "sigma_s": uniform(rng, self.sigma_s),
            "sigma_c": uniform(rng, self.sigma_c),
        }
        self._draw_response(rng, params)
        return params

    def response(self, params):
        """The camera response of drawn ``params`` (:class:`GammaResponse` or a DoRF curve)."""
        if "crf_index" in params:
            if self._curves is None:
                raise ValueError(f"{self.name}: parameters name DoRF curve {params['crf_index']} but the pipeline "
                                 "has no crf_file")
            return self._curves[params["crf_index"]]
        return GammaResponse(params["crf_gamma"])

    def tables(self, params):
        """The per-level tables of the degradation before the noise.

        Args:
            params (dict): as returned by :meth:`sample_params`.

        Returns:
            tuple[np.ndarray, np.ndarray]: float32 (256,) irradiance (the darkened 8-bit value
            through the inverse response) and noise standard deviation, per 8-bit input value.
        """
        f32 = np.float32
        levels = np.arange(256, dtype=f32) * f32(1.0 / 255.0)
        dark = f32(params["beta"]) * np.power(f32(params["alpha"]) * levels, f32(params["gamma"]))
        irradiance = self.response(params).inverse(dark)
        std = np.sqrt(f32(params["sigma_s"] ** 2) * irradiance + f32(params["sigma_c"] ** 2))
        return irradiance, std

    def noise_shape(self, height, width):
        """Shape of the standard normal draws for an image: one per Bayer site, (H, W)."""
        return (height, width)

    def render(self, image, params, noise, input_format):
        """The degradation of one image for given parameters and noise, equal bit for bit to the
        float formulas (no random draws; the noise follows :meth:`sample_params`' draws).

        Before the noise every pixel is a function of its own 8-bit value, so the darkening, the
        inverse response and the noise level are 256-entry tables (computed with the same
        float32 operations as on the image, hence the same values), and the mosaic is taken
        from the uint8 image. After the noise: in-place float operations per plane, and the
        output interleaved once, in the input's channel order (no RGB/BGR copies).

        Args:
            image (np.ndarray): uint8 (H, W, 3) in ``input_format``.
            params (dict): as returned by :meth:`sample_params`.
            noise (np.ndarray): float32 standard normal draws of :meth:`noise_shape`; used as
                the working buffer (overwritten).
            input_format (str): "BGR" or "RGB".

        Returns:
            np.ndarray: uint8 (H, W, 3) in ``input_format``.
        """
        f32 = np.float32
        crf = self.response(params)
        # The tables: what the float formulas give for each 8-bit input value.
        irradiance, std = self.tables(params)
        codes = mosaic_rggb(image[:, :, ::-1] if input_format == "BGR" else image)  # uint8 (H, W)
        raw = noise
        table = np.empty(codes.shape, f32)
        # mode='clip' (codes are 0..255, always in range): 'raise' with out= buffers a copy.
        raw *= np.take(std, codes, out=table, mode="clip")
        raw += np.take(irradiance, codes, out=table, mode="clip")
        np.clip(raw, 0.0, 1.0, out=raw)
        del table
        planes = demosaic_bilinear_rggb_planes(raw)  # R, G, B
        del raw
        for plane in planes:
            np.clip(plane, 0.0, 1.0, out=plane)
            crf.forward(plane, out=plane)
            # The base class's quantisation: rint(x * 255) clipped, per plane in place.
            np.multiply(plane, f32(255.0), out=plane)
            np.rint(plane, out=plane)
            np.clip(plane, 0, 255, out=plane)
        order = planes[::-1] if input_format == "BGR" else planes
        return cv2.merge([p.astype(np.uint8) for p in order])
