"""The "unprocess" pipeline: a physics-based sensor model (Brooks et al. 2019; MAET, ICCV 2021).

An sRGB image is taken back to a linear raw-like signal, darkened by an exposure drop, given
shot and read noise and 8-bit quantisation, and sent forward through the same camera ISP:

inverse tone map -> inverse gamma -> inverse colour matrix -> inverse white balance ->
darken -> shot + read noise -> quantise -> white balance -> colour matrix -> gamma -> clip.

Differences from MAET's ``Low_Illumination_Degrading`` (quirks not copied): the quantisation
step is one 8-bit level (not ``1 / (255 * B)``), the global gain ``g`` of the white balance is
undone in the forward pass, the result is clipped to [0, 1], and the random draws come from
an explicit generator so evaluation images can be degraded identically in every run.
As in Brooks et al., the inverse white balance protects highlights (``safe_invert_gains``),
and the camera's signal is clipped to [0, 1] where it is quantised (an ADC cannot store
negative or above-full-well values).
"""

import logging

import cv2
import numpy as np

from .common import (SampledPipeline, check_choice, check_number, check_range,
                     check_truncated_normal, log_uniform, truncated_normal, uniform)

__all__ = ["UnprocessPipeline", "XYZ2CAMS", "RGB2XYZ", "rgb2cam_matrix", "inverse_tone_map",
           "safe_inverse_gains", "add_shot_read_noise", "unprocess_to_raw", "process_raw"]

logger = logging.getLogger(__name__)

#: The four camera matrices (XYZ -> camera) of Brooks et al. 2019, ``unprocess.random_ccm``.
XYZ2CAMS = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]],
])

#: Linear sRGB (D65) -> XYZ.
RGB2XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])

#: How the camera matrix is chosen: "mix" (random convex combination, Brooks et al.) or
#: "pick" (one of the four, as MAET does).
CCM_MODES = ("mix", "pick")


def rgb2cam_matrix(weights):
    """The linear sRGB -> camera matrix for given weights of the four :data:`XYZ2CAMS`.

    Args:
        weights (array-like): shape (4,), non-negative, not all zero.

    Returns:
        np.ndarray: float64 (3, 3); rows sum to 1 so white stays white before white balance.
    """
    w = np.asarray(weights, dtype=np.float64)
    xyz2cam = np.tensordot(w / w.sum(), XYZ2CAMS, axes=1)
    rgb2cam = xyz2cam @ RGB2XYZ
    return rgb2cam / rgb2cam.sum(axis=1, keepdims=True)


def inverse_tone_map(image):
    """Inverse of the smoothstep tone curve ``3x^2 - 2x^3``: ``0.5 - sin(asin(1 - 2y) / 3)``.

    Args:
        image (np.ndarray): float (H, W, 3) in [0, 1].
    """
    image = np.clip(image, 0.0, 1.0)
    return np.float32(0.5) - np.sin(np.arcsin(np.float32(1.0) - np.float32(2.0) * image) / np.float32(3.0))


def safe_inverse_gains(image, gains):
    """Divide by white-balance gains without pushing highlights out of range (Brooks et al.).

    Near saturation (mean intensity above 0.9) the applied factor blends towards 1, so a
    clipped highlight stays a plausible raw value instead of turning tinted.

    Args:
        image (np.ndarray): float (H, W, 3) linear camera RGB.
        gains (np.ndarray): shape (3,), the inverse gains ``[1/r, 1, 1/b] * g``.
    """
    gray = image.mean(axis=-1, keepdims=True)
    inflection = np.float32(0.9)
    mask = np.square(np.maximum(gray - inflection, 0.0) / (np.float32(1.0) - inflection))
    gains = gains.astype(np.float32)
    safe = np.maximum(mask + (np.float32(1.0) - mask) * gains, gains)
    return image * safe


def add_shot_read_noise(image, shot, read, rng):
    """Add heteroscedastic Gaussian noise of variance ``image * shot + read``.

    Args:
        image (np.ndarray): float32 linear signal, any shape, >= 0.
        shot (float): shot-noise scale ``s`` (variance per unit signal).
        read (float): read-noise variance ``r``.
        rng (numpy.random.Generator): source of the noise.

    Returns:
        np.ndarray: float32, same shape, not clipped.
    """
    std = np.sqrt(np.maximum(image, 0.0) * np.float32(shot) + np.float32(read))
    return image + std * rng.standard_normal(image.shape, dtype=np.float32)


class UnprocessPipeline(SampledPipeline):
    """Unprocessing to raw, exposure drop, sensor noise, and processing back (Brooks; MAET).

    Ranges are ``(low, high)``; truncated normals are given by mean, std and a range.

    Args:
        gamma: range of the gamma of the camera's tone curve, inside (0, 10]. Default (2.0, 3.5).
        ccm_mode: "mix" (random convex combination of the four camera matrices, as Brooks et al.)
            or "pick" (one of them, as MAET). Default "mix".
        rgb_gain_mean, rgb_gain_std, rgb_gain_range: truncated normal of the global gain ``g``
            of the inverse white balance. Default 0.8, 0.1, (0.5, 1.1) (+-3 std keeps g > 0).
        red_gain: range of the red white-balance gain, inside (0, 10]. Default (1.9, 2.4).
        blue_gain: range of the blue white-balance gain, inside (0, 10]. Default (1.5, 1.9).
        darkness_mean, darkness_std, darkness_range: truncated normal of the exposure factor
            ``d``. Default 0.1, 0.08, (0.01, 1.0).
        shot_noise: range of the shot-noise scale ``s``, drawn log-uniformly, inside (0, 1].
            Default (1e-4, 0.012).
        read_noise_slope, read_noise_intercept, read_noise_std: the read-noise variance
            ``r`` follows ``ln r = slope * ln s + intercept + Normal(0, std**2)``.
            Default 2.18, 1.20, 0.26.
    """

    name = "unprocess"

    def __init__(self, *, gamma=(2.0, 3.5), ccm_mode="mix", rgb_gain_mean=0.8, rgb_gain_std=0.1,
                 rgb_gain_range=(0.5, 1.1), red_gain=(1.9, 2.4), blue_gain=(1.5, 1.9),
                 darkness_mean=0.1, darkness_std=0.08, darkness_range=(0.01, 1.0),
                 shot_noise=(1e-4, 0.012), read_noise_slope=2.18, read_noise_intercept=1.20,
                 read_noise_std=0.26):
        self.gamma = check_range("gamma", gamma, 0.0, 10.0, lower_open=True)
        self.ccm_mode = check_choice("ccm_mode", ccm_mode, CCM_MODES)
        # g divides the forward white balance, so it must stay > 0.
        self.rgb_gain = check_truncated_normal("rgb_gain", rgb_gain_mean, rgb_gain_std,
                                               rgb_gain_range, limits=(0.0, 10.0))
        self.red_gain = check_range("red_gain", red_gain, 0.0, 10.0, lower_open=True)
        self.blue_gain = check_range("blue_gain", blue_gain, 0.0, 10.0, lower_open=True)
        # An exposure factor above 1 would brighten; 0 would leave only noise.
        self.darkness = check_truncated_normal("darkness", darkness_mean, darkness_std,
                                               darkness_range, limits=(0.0, 1.0))
        self.shot_noise = check_range("shot_noise", shot_noise, 0.0, 1.0, lower_open=True)
        self.read_noise_slope = check_number("read_noise_slope", read_noise_slope)
        self.read_noise_intercept = check_number("read_noise_intercept", read_noise_intercept)
        self.read_noise_std = check_number("read_noise_std", read_noise_std, lower=0.0)

    def config(self):
        return {
            "gamma": self.gamma, "ccm_mode": self.ccm_mode,
            "rgb_gain_mean": self.rgb_gain[0], "rgb_gain_std": self.rgb_gain[1],
            "rgb_gain_range": self.rgb_gain[2:], "red_gain": self.red_gain,
            "blue_gain": self.blue_gain, "darkness_mean": self.darkness[0],
            "darkness_std": self.darkness[1], "darkness_range": self.darkness[2:],
            "shot_noise": self.shot_noise, "read_noise_slope": self.read_noise_slope,
            "read_noise_intercept": self.read_noise_intercept, "read_noise_std": self.read_noise_std,
        }

    def _draw_ccm_weights(self, rng):
        n = len(XYZ2CAMS)
        if self.ccm_mode == "pick":
            weights = np.zeros(n)
            weights[int(rng.integers(n))] = 1.0
            return weights
        # Brooks et al. draw U(1e-8, 1e8) and normalise: the same as U(0, 1) up to scale.
        weights = rng.uniform(1e-8, 1.0, size=n)
        return weights / weights.sum()

    def sample_params(self, rng):
        """Draw the parameters of one image.

        Returns:
            dict: gamma, ccm_weight_0..3, rgb_gain, red_gain, blue_gain, darkness, shot_noise,
            read_noise (a variance), all Python floats.
        """
        params = {"gamma": uniform(rng, self.gamma)}
        for i, w in enumerate(self._draw_ccm_weights(rng)):
            params[f"ccm_weight_{i}"] = float(w)
        params["rgb_gain"] = truncated_normal(rng, *self.rgb_gain)
        params["red_gain"] = uniform(rng, self.red_gain)
        params["blue_gain"] = uniform(rng, self.blue_gain)
        params["darkness"] = truncated_normal(rng, *self.darkness)
        shot = log_uniform(rng, self.shot_noise)
        log_read = (self.read_noise_slope * np.log(shot) + self.read_noise_intercept
                    + self.read_noise_std * rng.standard_normal())
        params["shot_noise"] = shot
        params["read_noise"] = float(np.exp(log_read))
        return params

    def noise_shape(self, height, width):
        """Shape of the standard normal draws for an image: one per camera value, (H, W, 3)."""
        return (height, width, 3)

    def tables(self, params):
        """float32 (256,): the linear signal (inverse tone curve, then gamma) per 8-bit value."""
        f32 = np.float32
        levels = np.arange(256, dtype=f32) * f32(1.0 / 255.0)
        return np.power(np.maximum(inverse_tone_map(levels), f32(1e-8)), f32(params["gamma"]))

    def render(self, image, p, noise, input_format):
        """The degradation of one image for given parameters and noise (no random draws), within
        one level of the float formulas: the same draws in the same order as
        :func:`unprocess_to_raw`, :func:`add_shot_read_noise` and :func:`process_raw` in sequence.

        Faster than the float formulas: the inverse tone curve and gamma are a
        256-entry table of the 8-bit values (``cv2.LUT``); the white-balance gains are applied by
        ``cv2.multiply``; the channel order and the 1/255 of the quantised signal are folded into
        the second colour matrix, applied by ``cv2.transform``; the highlight protection of
        :func:`safe_inverse_gains` is computed only at the pixels whose grey level may pass its
        inflection point; everything else in place. Products rounded in another order than
        NumPy's change a few values by one level (``tests/test_synthesis_speed_equivalence.py``
        bounds how many).

        Args:
            image (np.ndarray): uint8 (H, W, 3) in ``input_format``.
            p (dict): as returned by :meth:`sample_params`.
            noise (np.ndarray): float32 (H, W, 3) standard normal draws, camera RGB order;
                overwritten.
            input_format (str): "BGR" or "RGB".

        Returns:
            np.ndarray: uint8 (H, W, 3) in ``input_format``.
        """
        f32 = np.float32
        bgr = input_format == "BGR"
        rgb2cam, wb = _camera(p)
        table = self.tables(p)
        # float32 (H, W, 3) RGB: OpenCV's table lookup on an RGB copy of the 8-bit image (a
        # reversed view would make it copy the floats instead; cvtColor copies the bytes ~30x
        # faster than NumPy's reversed-stride copy, 0.03 against 1.0 ms at 640x480).
        linear = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image, table)
        # Camera RGB exactly as unprocess_to_raw computes it (NumPy's product, so the 8-bit ADC
        # below sees the same values: near black one ADC level is many sRGB levels).
        raw = linear @ rgb2cam.T.astype(f32)
        gains = (1.0 / wb).astype(f32)
        # Highlights (grey above 0.9) blend the gains towards 1 (safe_inverse_gains); elsewhere
        # its factor is the gains themselves.
        flat = raw.reshape(-1, 3)
        # A superset of those pixels (grey <= brightest channel); per-channel views, not an
        # axis reduction (5-10x slower on an axis of length 3).
        brightest = np.maximum(raw[:, :, 0], raw[:, :, 1])
        np.maximum(brightest, raw[:, :, 2], out=brightest)
        bright = np.flatnonzero(brightest > f32(0.9))
        highlights = safe_inverse_gains(flat[bright], gains) if bright.size else None
        # Per-channel gains by OpenCV: the same float32 products as NumPy's broadcast, 2.5x faster.
        cv2.multiply(raw, tuple(float(g) for g in gains) + (0.0,), dst=raw)
        if highlights is not None:
            flat[bright] = highlights
        del linear
        np.clip(raw, 0.0, 1.0, out=raw)
        raw *= f32(p["darkness"])
        # Shot and read noise (raw >= 0 here), then the 8-bit ADC: integer levels 0..255.
        std = raw * f32(p["shot_noise"])
        std += f32(p["read_noise"])
        np.sqrt(std, out=std)
        noise *= std
        raw += noise
        del std, noise
        np.clip(raw, 0.0, 1.0, out=raw)
        raw *= f32(255.0)
        np.rint(raw, out=raw)
        # Levels -> white balance -> sRGB, in the output's channel order.
        to_srgb = np.linalg.inv(rgb2cam) * (wb / 255.0)[None, :]
        out = cv2.transform(raw, (to_srgb[::-1] if bgr else to_srgb).astype(f32))
        del raw
        np.clip(out, f32(1e-8), 1.0, out=out)
        np.power(out, f32(1.0 / p["gamma"]), out=out)
        out *= f32(255.0)  # in [0, 255] already: no clip before the cast
        np.rint(out, out=out)
        return out.astype(np.uint8)


def _camera(params):
    rgb2cam = rgb2cam_matrix([params[f"ccm_weight_{i}"] for i in range(len(XYZ2CAMS))])
    wb = np.array([params["red_gain"], 1.0, params["blue_gain"]]) / params["rgb_gain"]
    return rgb2cam, wb


def unprocess_to_raw(rgb, params):
    """sRGB -> linear camera raw (Brooks et al. 2019), for the camera that ``params`` describe.

    Args:
        rgb (np.ndarray): float32 (H, W, 3) RGB in [0, 1].
        params (dict): as returned by :meth:`UnprocessPipeline.sample_params`.

    Returns:
        np.ndarray: float32 (H, W, 3) linear raw (camera RGB before white balance).
    """
    rgb2cam, wb = _camera(params)
    x = inverse_tone_map(rgb)
    x = np.power(np.maximum(x, np.float32(1e-8)), np.float32(params["gamma"]))
    x = x @ rgb2cam.T.astype(np.float32)
    return safe_inverse_gains(x, 1.0 / wb)


def process_raw(raw, params):
    """Linear camera raw -> sRGB: white balance (``g`` undone), colour matrix, gamma, clip.

    The forward tone curve is not re-applied (as in Brooks et al.'s ``process``), so a
    noise-free round trip ``process_raw(unprocess_to_raw(x))`` gives ``inverse_tone_map(x)``.

    Args:
        raw (np.ndarray): float32 (H, W, 3) linear raw.
        params (dict): as returned by :meth:`UnprocessPipeline.sample_params`.

    Returns:
        np.ndarray: float32 (H, W, 3) RGB in [0, 1].
    """
    rgb2cam, wb = _camera(params)
    x = raw * wb.astype(np.float32)
    x = np.clip(x @ np.linalg.inv(rgb2cam).T.astype(np.float32), 0.0, 1.0)
    x = np.power(np.maximum(x, np.float32(1e-8)), np.float32(1.0 / params["gamma"]))
    return np.clip(x, 0.0, 1.0)
