"""Shared pieces of the low-light pipelines: the base class, parameter checks and random draws.

Every random number of a pipeline comes from the ``numpy.random.Generator`` passed to it, so
a degradation is reproduced exactly by passing a generator in the same state
(see :func:`eval_rng` for the generator used for evaluation images).
"""

import abc
import copy
import hashlib
import logging
import math
import numbers

import numpy as np
import torch

from ...utils.params import (CHANNEL_ORDERS, ParameterError, check_channel_order, check_choice, check_number,
                             check_range)

__all__ = ["LowLightPipeline", "ParameterError", "eval_rng", "check_range", "check_number",
           "check_choice", "check_truncated_normal", "uniform", "truncated_normal", "log_uniform",
           "INPUT_FORMATS", "NOISE_SOURCES", "standard_normal", "SampledPipeline"]

logger = logging.getLogger(__name__)

#: Channel orders accepted by the pipelines (detectron2's ``INPUT.FORMAT`` values for colour).
INPUT_FORMATS = CHANNEL_ORDERS


#: Where a pipeline's Gaussian noise comes from: "numpy" (the generator's own
#: ``standard_normal``: the reference, used for every evaluation image) or "torch" (one seed drawn
#: from the generator, then ``torch.randn`` on the CPU: the same distribution, other values, 2.5x
#: faster; the training default, ``INPUT.LOW_LIGHT.TRAIN_NOISE``).
NOISE_SOURCES = ("numpy", "torch")


def standard_normal(rng, shape, source="numpy"):
    """Float32 standard normal draws for a pipeline's noise.

    NumPy's float32 ziggurat costs ~8.7 ns a value here (2.6 ms for a 640x480 Bayer plane,
    7.9 ms for three planes), the largest single cost of the degradation; ``torch.randn``'s
    vectorised Box-Muller costs ~3.4 ns. With "torch" the generator gives one 63-bit seed, so
    a seeded run is still reproducible on one machine (torch's CPU kernels may differ across
    instruction sets), and the draws after it stay those of the generator.

    Args:
        rng (numpy.random.Generator): the pipeline's generator.
        shape (tuple[int]): the shape of the draws.
        source (str): one of :data:`NOISE_SOURCES`.

    Returns:
        np.ndarray: float32 of ``shape``, writable.
    """
    if source == "numpy":
        return rng.standard_normal(shape, dtype=np.float32)
    if source != "torch":
        raise ValueError(f"standard_normal: source must be one of {NOISE_SOURCES}, got {source!r}")
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    return torch.randn(shape, generator=generator, dtype=torch.float32).numpy()


_SQRT2 = math.sqrt(2.0)


def _normal_cdf(z):
    return 0.5 * math.erfc(-z / _SQRT2)


def check_truncated_normal(key, mean, std, bounds, limits=(-math.inf, math.inf)):
    """Validate the parameters of :func:`truncated_normal`.

    Args:
        key (str): prefix of the three parameter names ``<key>_mean``, ``<key>_std``,
            ``<key>_range``, used in error messages.
        mean, std (float): of the untruncated normal.
        bounds: ``(low, high)`` truncation range.
        limits (tuple): physical limits ``(lower, upper)``; ``lower`` itself is excluded.

    Returns:
        tuple: ``(mean, std, low, high)`` as floats.

    Raises:
        ParameterError: naming ``key`` when std < 0, the bounds are not a range, or the
            bounds hold (numerically) no probability mass of the normal distribution.
    """
    mean = check_number(f"{key}_mean", mean)
    std = check_number(f"{key}_std", std, lower=0.0)
    low, high = check_range(f"{key}_range", bounds, limits[0], limits[1], lower_open=True)
    if std == 0.0:
        if not low <= mean <= high:
            raise ParameterError(f"{key}_mean", f"with std 0 the mean must lie in {bounds!r}, got {mean}")
    elif _normal_cdf((high - mean) / std) - _normal_cdf((low - mean) / std) < 1e-9:
        raise ParameterError(
            f"{key}_range", f"{bounds!r} holds no probability mass of Normal({mean}, {std}**2)"
        )
    return mean, std, low, high


def truncated_normal(rng, mean, std, low, high):
    """One draw of Normal(mean, std**2) conditioned on ``[low, high]``.

    Uses one uniform draw and inverts the CDF by bisection (NumPy has no inverse error
    function), so every call consumes exactly one number of ``rng`` whatever the bounds.

    Args:
        rng (numpy.random.Generator): the source of randomness.
        mean, std (float): parameters of the untruncated normal; std 0 returns ``mean``.
        low, high (float): bounds, checked by :func:`check_truncated_normal`.

    Returns:
        float
    """
    u = rng.uniform()
    if std == 0.0 or low == high:
        return float(min(max(mean, low), high))
    a, b = (low - mean) / std, (high - mean) / std
    target = _normal_cdf(a) + u * (_normal_cdf(b) - _normal_cdf(a))
    lo, hi = a, b
    erfc = math.erfc
    for _ in range(80):  # 80 halvings of an interval < 1e3 wide reach float precision
        mid = 0.5 * (lo + hi)
        # _normal_cdf(mid) inline (the same float operations): this loop runs per image.
        if 0.5 * erfc(-mid / _SQRT2) < target:
            if mid == lo:  # (lo, hi) unchanged: every further halving leaves it so
                break
            lo = mid
        else:
            if mid == hi:
                break
            hi = mid
    return float(min(max(mean + std * 0.5 * (lo + hi), low), high))


def uniform(rng, bounds):
    """One draw of U(low, high) as a Python float (``low == high`` gives that value)."""
    return float(rng.uniform(bounds[0], bounds[1]))


def log_uniform(rng, bounds):
    """One draw whose natural log is uniform on ``[ln low, ln high]`` (low > 0)."""
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def eval_rng(seed, image_key):
    """The generator that degrades one evaluation image, identical in every process.

    The state depends only on ``seed`` and ``image_key``, through SHA-256 and NumPy's
    ``SeedSequence`` (never Python's ``hash()``, which is salted per process), so every run,
    rank and data-loader worker degrades the same image the same way. Integer and string
    keys are compared by their decimal/text form: image id ``5`` and ``"5"`` are the same key.

    Args:
        seed (int): a non-negative seed (``INPUT.LOW_LIGHT.SEED``).
        image_key (int or str): the image id, or a file name (use a name relative to the
            dataset root or a base name, so the draw does not depend on where the data lives).

    Returns:
        numpy.random.Generator
    """
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"eval_rng: seed must be a non-negative int, got {seed!r}")
    if isinstance(image_key, bool) or not isinstance(image_key, (numbers.Integral, str)):
        raise ValueError(
            f"eval_rng: image_key must be an int (image id) or a str (file name), got {image_key!r}"
        )
    digest = hashlib.sha256(str(int(image_key) if not isinstance(image_key, str) else image_key)
                            .encode("utf-8")).digest()
    key_words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed)] + key_words))


def _to_python(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


class LowLightPipeline(abc.ABC):
    """Base class: turns a well-lit uint8 image into a synthetic low-light one.

    Subclasses implement :meth:`_degrade` on RGB floats in [0, 1]; this class checks the
    input, converts the channel order and quantises the result to 8 bit. A subclass may
    instead override :meth:`_degrade_uint8` and work on the 8-bit image itself (as lv2021
    does, for speed).

    Attributes:
        name (str): the pipeline's name in ``INPUT.LOW_LIGHT.PIPELINE`` (its registry key).
    """

    name = ""
    #: Where the Gaussian noise comes from (:data:`NOISE_SOURCES`); see :meth:`with_noise_source`.
    noise_source = "numpy"

    def with_noise_source(self, source):
        """A copy of this pipeline that draws its noise from ``source`` (the same other draws).

        Args:
            source (str): one of :data:`NOISE_SOURCES`.

        Returns:
            LowLightPipeline: ``self`` when it already uses ``source``, else a shallow copy.

        Raises:
            ParameterError: an unknown source.
        """
        check_choice("noise_source", source, NOISE_SOURCES)
        if source == self.noise_source:
            return self
        other = copy.copy(self)
        other.noise_source = source
        return other

    def __call__(self, image, rng, input_format="BGR"):
        """Degrade one image.

        Args:
            image (np.ndarray): uint8 array of shape (H, W, 3) in ``input_format``.
            rng (numpy.random.Generator): every random draw comes from it.
            input_format (str): "BGR" (detectron2's default) or "RGB". The degradation is
                defined on RGB; the output has the same channel order as the input.

        Returns:
            tuple[np.ndarray, dict]: the uint8 (H, W, 3) low-light image in ``input_format``,
            and the sampled parameters (Python floats/ints/strs, JSON-serialisable), including
            ``"pipeline"``.
        """
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                or image.shape[2] != 3:
            desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) \
                else type(image).__name__
            raise ValueError(f"{self.name}: expected a uint8 array of shape (H, W, 3), got {desc}")
        if image.shape[0] < 2 or image.shape[1] < 2:
            # The Bayer mosaic of lv2021 needs a full 2x2 cell; keep both pipelines alike.
            raise ValueError(f"{self.name}: image must be at least 2x2 pixels, got shape {image.shape}")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"{self.name}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        check_channel_order(self.name, input_format)
        out8, params = self._degrade_uint8(image, rng, input_format)
        params = {k: _to_python(v) for k, v in params.items()}
        params["pipeline"] = self.name
        return np.ascontiguousarray(out8), params

    def _degrade_uint8(self, image, rng, input_format):
        """The whole degradation on 8-bit images; by default :meth:`_degrade` between conversions.

        A pipeline overrides this instead of :meth:`_degrade` when it can work on the 8-bit
        values directly (lookup tables, no float copy of the input, either channel order).

        Args:
            image (np.ndarray): uint8 (H, W, 3) in ``input_format`` (checked by ``__call__``).
            rng (numpy.random.Generator): the source of all random draws.
            input_format (str): "BGR" or "RGB".

        Returns:
            tuple[np.ndarray, dict]: uint8 (H, W, 3) in ``input_format`` and the sampled parameters.
        """
        rgb = image[:, :, ::-1] if input_format == "BGR" else image
        x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
        out, params = self._degrade(x, rng)
        out8 = np.clip(np.rint(out * np.float32(255.0)), 0, 255).astype(np.uint8)
        if input_format == "BGR":
            out8 = out8[:, :, ::-1]
        return out8, params

    def _degrade(self, rgb, rng):
        """Subclass hook (or override :meth:`_degrade_uint8`).

        Args:
            rgb (np.ndarray): float32 (H, W, 3) RGB image in [0, 1].
            rng (numpy.random.Generator): the source of all random draws.

        Returns:
            tuple[np.ndarray, dict]: float (H, W, 3) RGB in [0, 1] and the sampled parameters.
        """
        raise NotImplementedError(f"{type(self).__name__}: a low-light pipeline implements _degrade(rgb, rng) "
                                  "or _degrade_uint8(image, rng, input_format)")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        noise = f", noise_source={self.noise_source!r}" if self.noise_source != "numpy" else ""
        return f"{type(self).__name__}({args}{noise})"

    @abc.abstractmethod
    def config(self):
        """dict: the constructor arguments that rebuild this pipeline (for logs and manifests)."""


class SampledPipeline(LowLightPipeline):
    """A pipeline in three steps: its parameters, its Gaussian noise, a deterministic render.

    The split lets the same draws feed the NumPy render here and the torch one on a device
    (:mod:`wnlb_d2.data.synthesis.torch_render`, ``INPUT.LOW_LIGHT.ON_DEVICE``). Subclasses
    implement :meth:`sample_params`, :meth:`noise_shape` and :meth:`render`.
    """

    def _degrade_uint8(self, image, rng, input_format):
        """:meth:`sample_params`, then the noise from ``rng`` (:attr:`noise_source`), then :meth:`render`.

        Args:
            image (np.ndarray): uint8 (H, W, 3) in ``input_format``.
            rng (numpy.random.Generator): the source of all random draws.
            input_format (str): "BGR" or "RGB".

        Returns:
            tuple[np.ndarray, dict]: uint8 (H, W, 3) in ``input_format`` and the parameters.
        """
        params = self.sample_params(rng)
        noise = standard_normal(rng, self.noise_shape(*image.shape[:2]), self.noise_source)
        return self.render(image, params, noise, input_format), params

    @abc.abstractmethod
    def sample_params(self, rng):
        """dict: every parameter of one image drawn from ``rng`` (all draws but the noise)."""

    @abc.abstractmethod
    def noise_shape(self, height, width):
        """tuple[int]: the shape of an image's standard normal draws."""

    @abc.abstractmethod
    def render(self, image, params, noise, input_format):
        """np.ndarray: the uint8 (H, W, 3) degraded image for given parameters and noise (no draws)."""
