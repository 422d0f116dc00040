"""Frozen copies of the low-light pipelines as they were before they were rewritten for speed.

The fast pipelines of ``wnlb_d2.data.synthesis`` must reproduce these outputs (lv2021 bit for
bit; unprocess within one 8-bit level on a stated fraction of values) from the same parameter
draws. Nothing here may change: it is the definition the fast code is tested against, and
``tools/benchmark_data.py``-style measurements time it as "before". Only the pipelines'
parameter ranges and checks are taken from the library (they are not part of the rewrite).

Both functions take the pipeline object (for its ranges and DoRF curves), a uint8 (H, W, 3)
image, a generator and the channel order, exactly like ``pipeline(image, rng, input_format)``.
"""

import math

import cv2
import numpy as np

_F32 = np.float32


def _uniform(rng, bounds):
    return float(rng.uniform(bounds[0], bounds[1]))


def _log_uniform(rng, bounds):
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def _normal_cdf(z):
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _truncated_normal(rng, mean, std, low, high):
    u = rng.uniform()
    if std == 0.0 or low == high:
        return float(min(max(mean, low), high))
    a, b = (low - mean) / std, (high - mean) / std
    target = _normal_cdf(a) + u * (_normal_cdf(b) - _normal_cdf(a))
    lo, hi = a, b
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if _normal_cdf(mid) < target:
            lo = mid
        else:
            hi = mid
    return float(min(max(mean + std * 0.5 * (lo + hi), low), high))


def _to_python(value):
    return value.item() if isinstance(value, np.generic) else value


def _wrap(name, image, input_format, degrade):
    """The base class's float conversion and 8-bit quantisation around ``degrade(rgb) -> (out, params)``."""
    rgb = image[:, :, ::-1] if input_format == "BGR" else image
    x = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    out, params = degrade(x)
    out8 = np.clip(np.rint(out * np.float32(255.0)), 0, 255).astype(np.uint8)
    if input_format == "BGR":
        out8 = out8[:, :, ::-1]
    params = {k: _to_python(v) for k, v in params.items()}
    params["pipeline"] = name
    return np.ascontiguousarray(out8), params


# ------------------------------------------------------------------------------------------ lv2021

def _mosaic_rggb(rgb):
    raw = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    raw[0::2, 0::2] = rgb[0::2, 0::2, 0]
    raw[0::2, 1::2] = rgb[0::2, 1::2, 1]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 1]
    raw[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return raw


_KERNEL_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 4
_KERNEL_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32) / 4


def _demosaic_bilinear_rggb(raw):
    raw = raw.astype(np.float32, copy=False)
    h, w = raw.shape
    planes = np.zeros((3, h, w), dtype=np.float32)
    planes[0, 0::2, 0::2] = raw[0::2, 0::2]
    planes[1, 0::2, 1::2] = raw[0::2, 1::2]
    planes[1, 1::2, 0::2] = raw[1::2, 0::2]
    planes[2, 1::2, 1::2] = raw[1::2, 1::2]
    out = np.empty((h, w, 3), dtype=np.float32)
    for c, kernel in ((0, _KERNEL_RB), (1, _KERNEL_G), (2, _KERNEL_RB)):
        out[:, :, c] = cv2.filter2D(planes[c], -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    return out


class _Gamma:
    def __init__(self, gamma):
        self.gamma = float(gamma)

    def forward(self, x):
        return np.power(x, np.float32(1.0 / self.gamma))

    def inverse(self, x):
        return np.power(x, np.float32(self.gamma))


class _Tabulated:
    def __init__(self, curve):
        self.c = curve

    def forward(self, x):
        return np.interp(x, self.c.irradiance, self.c.brightness).astype(np.float32)

    def inverse(self, x):
        return np.interp(x, self.c._inv_b, self.c._inv_i).astype(np.float32)


def lv2021(pipe, image, rng, input_format="BGR"):
    """The lv2021 pipeline before the rewrite (``Lv2021Pipeline.__call__``)."""

    def degrade(rgb):
        params = {"alpha": _uniform(rng, pipe.alpha), "beta": _uniform(rng, pipe.beta),
                  "gamma": _uniform(rng, pipe.gamma), "sigma_s": _uniform(rng, pipe.sigma_s),
                  "sigma_c": _uniform(rng, pipe.sigma_c)}
        if pipe._curves is None:
            params["crf_gamma"] = _uniform(rng, pipe.crf_gamma)
            crf = _Gamma(params["crf_gamma"])
        else:
            index = int(rng.integers(len(pipe._curves)))
            params["crf_index"] = index
            params["crf_name"] = pipe._curves[index].name
            crf = _Tabulated(pipe._curves[index])
        f32 = np.float32
        dark = f32(params["beta"]) * np.power(f32(params["alpha"]) * rgb, f32(params["gamma"]))
        raw = _mosaic_rggb(crf.inverse(dark))
        std = np.sqrt(f32(params["sigma_s"] ** 2) * raw + f32(params["sigma_c"] ** 2))
        raw = raw + std * rng.standard_normal(raw.shape, dtype=np.float32)
        raw = np.clip(raw, 0.0, 1.0)
        out = np.clip(_demosaic_bilinear_rggb(raw), 0.0, 1.0)
        return crf.forward(out), params

    return _wrap("lv2021", image, input_format, degrade)


# --------------------------------------------------------------------------------------- unprocess

_XYZ2CAMS = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]],
])
_RGB2XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])


def _rgb2cam_matrix(weights):
    w = np.asarray(weights, dtype=np.float64)
    xyz2cam = np.tensordot(w / w.sum(), _XYZ2CAMS, axes=1)
    rgb2cam = xyz2cam @ _RGB2XYZ
    return rgb2cam / rgb2cam.sum(axis=1, keepdims=True)


def unprocess_params(pipe, rng):
    """``UnprocessPipeline.sample_params`` before the rewrite."""
    params = {"gamma": _uniform(rng, pipe.gamma)}
    n = len(_XYZ2CAMS)
    if pipe.ccm_mode == "pick":
        weights = np.zeros(n)
        weights[int(rng.integers(n))] = 1.0
    else:
        weights = rng.uniform(1e-8, 1.0, size=n)
        weights = weights / weights.sum()
    for i, w in enumerate(weights):
        params[f"ccm_weight_{i}"] = float(w)
    params["rgb_gain"] = _truncated_normal(rng, *pipe.rgb_gain)
    params["red_gain"] = _uniform(rng, pipe.red_gain)
    params["blue_gain"] = _uniform(rng, pipe.blue_gain)
    params["darkness"] = _truncated_normal(rng, *pipe.darkness)
    shot = _log_uniform(rng, pipe.shot_noise)
    log_read = (pipe.read_noise_slope * np.log(shot) + pipe.read_noise_intercept
                + pipe.read_noise_std * rng.standard_normal())
    params["shot_noise"] = shot
    params["read_noise"] = float(np.exp(log_read))
    return params


def _camera(params):
    rgb2cam = _rgb2cam_matrix([params[f"ccm_weight_{i}"] for i in range(len(_XYZ2CAMS))])
    wb = np.array([params["red_gain"], 1.0, params["blue_gain"]]) / params["rgb_gain"]
    return rgb2cam, wb


def _inverse_tone_map(image):
    image = np.clip(image, 0.0, 1.0)
    return np.float32(0.5) - np.sin(np.arcsin(np.float32(1.0) - np.float32(2.0) * image) / np.float32(3.0))


def _safe_inverse_gains(image, gains):
    gray = image.mean(axis=-1, keepdims=True)
    inflection = np.float32(0.9)
    mask = np.square(np.maximum(gray - inflection, 0.0) / (np.float32(1.0) - inflection))
    gains = gains.astype(np.float32)
    safe = np.maximum(mask + (np.float32(1.0) - mask) * gains, gains)
    return image * safe


def unprocess(pipe, image, rng, input_format="BGR"):
    """The unprocess pipeline before the rewrite (``UnprocessPipeline.__call__``)."""

    def degrade(rgb):
        p = unprocess_params(pipe, rng)
        rgb2cam, wb = _camera(p)
        x = _inverse_tone_map(rgb)
        x = np.power(np.maximum(x, np.float32(1e-8)), np.float32(p["gamma"]))
        x = x @ rgb2cam.T.astype(np.float32)
        raw = _safe_inverse_gains(x, 1.0 / wb)
        raw = np.clip(raw, 0.0, 1.0) * np.float32(p["darkness"])
        std = np.sqrt(np.maximum(raw, 0.0) * np.float32(p["shot_noise"]) + np.float32(p["read_noise"]))
        raw = raw + std * rng.standard_normal(raw.shape, dtype=np.float32)
        raw = np.rint(np.clip(raw, 0.0, 1.0) * np.float32(255.0)) / np.float32(255.0)
        x = raw * wb.astype(np.float32)
        x = np.clip(x @ np.linalg.inv(rgb2cam).T.astype(np.float32), 0.0, 1.0)
        x = np.power(np.maximum(x, np.float32(1e-8)), np.float32(1.0 / p["gamma"]))
        return np.clip(x, 0.0, 1.0), p

    return _wrap("unprocess", image, input_format, degrade)
