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

import numpy as np

from .camera import GammaResponse, demosaic_bilinear_rggb, load_dorf_curves, mosaic_rggb
from .common import LowLightPipeline, ParameterError, check_range, uniform

__all__ = ["Lv2021Pipeline"]

logger = logging.getLogger(__name__)


class Lv2021Pipeline(LowLightPipeline):
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

    def _degrade(self, rgb, rng):
        params = {
            "alpha": uniform(rng, self.alpha),
            "beta": uniform(rng, self.beta),
            "gamma": uniform(rng, self.gamma),
            "sigma_s": uniform(rng, self.sigma_s),
            "sigma_c": uniform(rng, self.sigma_c),
        }
        crf = self._draw_response(rng, params)
        f32 = np.float32
        dark = f32(params["beta"]) * np.power(f32(params["alpha"]) * rgb, f32(params["gamma"]))
        raw = mosaic_rggb(crf.inverse(dark))
        std = np.sqrt(f32(params["sigma_s"] ** 2) * raw + f32(params["sigma_c"] ** 2))
        raw = raw + std * rng.standard_normal(raw.shape, dtype=np.float32)
        raw = np.clip(raw, 0.0, 1.0)
        out = np.clip(demosaic_bilinear_rggb(raw), 0.0, 1.0)
        return crf.forward(out), params
