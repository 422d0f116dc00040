"""Image quality of an enhancer on exact (dark, clean) pairs: PSNR and SSIM against the clean image.

The paper's Table II gives each enhancer's detection AP; the enhancers' own papers give PSNR and
SSIM. With synthetic low-light test sets both can be measured on the same images: the clean
test image, its evaluation degradation (the same pixels the detector is evaluated on) and the
enhancer's output.

SSIM follows Wang et al. (2004) as scikit-image's ``structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255)`` computes it: Gaussian-weighted local
statistics (11 x 11 window), K1 = 0.01, K2 = 0.03, the border of half a window left out, the
mean over pixels and channels.
"""

import logging
import math
import os

import cv2
import numpy as np
from tqdm import tqdm

__all__ = ["psnr", "ssim", "pair_quality", "evaluation_pairs", "enhancer_quality"]

logger = logging.getLogger(__name__)

_SIGMA = 1.5
_RADIUS = 5  # int(3.5 * sigma + 0.5): scikit-image's truncation of the Gaussian window


def psnr(image, reference, data_range=255.0):
    """Peak signal-to-noise ratio in dB.

    Args:
        image, reference (np.ndarray): same shape, any dtype (compared as float64).
        data_range (float): the largest possible value difference (255 for 8-bit images).

    Returns:
        float: ``10 log10(range^2 / MSE)``; ``inf`` for identical images.
    """
    a, b = _pair(image, reference)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def _pair(image, reference):
    if image.shape != reference.shape:
        raise ValueError(f"image quality: shapes differ, {image.shape} vs {reference.shape}")
    return image.astype(np.float64), reference.astype(np.float64)


def _blur(x):
    size = 2 * _RADIUS + 1
    return cv2.GaussianBlur(x, (size, size), _SIGMA, borderType=cv2.BORDER_REFLECT)


def ssim(image, reference, data_range=255.0):
    """Structural similarity (Wang et al. 2004), the mean over pixels and channels.

    Args:
        image, reference (np.ndarray): (H, W) or (H, W, C), same shape, H and W >= 11.
        data_range (float): 255 for 8-bit images.

    Returns:
        float: in [-1, 1]; 1 for identical images.
    """
    a, b = _pair(image, reference)
    if min(a.shape[:2]) < 2 * _RADIUS + 1:
        raise ValueError(f"ssim: images must be at least {2 * _RADIUS + 1} pixels a side, got {a.shape[:2]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _blur(a), _blur(b)
    var_a = _blur(a * a) - mu_a * mu_a
    var_b = _blur(b * b) - mu_b * mu_b
    cov = _blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    r = _RADIUS
    return float(s[r:-r, r:-r].mean())


def pair_quality(image, reference):
    """``{"psnr": dB, "ssim": value}`` of one image against its clean reference."""
    return {"psnr": psnr(image, reference), "ssim": ssim(image, reference)}


def evaluation_pairs(dataset, *, degraded_on_the_fly, low_light_cfg=None, num_images=None):
    """The (dark, clean) uint8 BGR images of a test set, the dark ones exactly as evaluated.

    Args:
        dataset (str): the registered low-light test set.
        degraded_on_the_fly (bool): its images are normal-light and degraded by the evaluation
            (``INPUT.LOW_LIGHT.TEST``): the dark image is ``pipeline(clean, eval_rng(SEED, key))``
            with the key the evaluation mapper uses; else the clean image is its registered
            counterpart (:func:`wnlb_d2.analysis.clean_pairs.clean_pairs`).
        low_light_cfg (CfgNode or None): its ``INPUT.LOW_LIGHT`` (needed when degraded on the fly).
        num_images (int or None): the first this many pairs.

    Yields:
        tuple[np.ndarray, np.ndarray]: dark and clean (H, W, 3) uint8 BGR images.

    Raises:
        NoCleanCounterpartError: a test set without clean counterparts.
    """
    from ..analysis.clean_pairs import clean_pairs
    from ..data.image_io import read_image
    from ..data.synthesis import build_pipeline_from_config, eval_rng

    pairs = clean_pairs(dataset, degraded_on_the_fly=degraded_on_the_fly, num_images=num_images)
    pipeline = build_pipeline_from_config(low_light_cfg) if degraded_on_the_fly else None
    for dark_record, clean_record in pairs:
        clean = read_image(clean_record["file_name"], format="BGR")
        if pipeline is not None:
            key = dark_record.get("image_id", os.path.basename(dark_record["file_name"]))
            dark, _ = pipeline(clean, eval_rng(low_light_cfg.INPUT.LOW_LIGHT.SEED, key), "BGR")
        else:
            dark = read_image(dark_record["file_name"], format="BGR")
            if dark.shape != clean.shape:
                dark = cv2.resize(dark, clean.shape[1::-1], interpolation=cv2.INTER_AREA)
        yield dark, clean


def enhancer_quality(enhancer, pairs, progress=True):
    """PSNR/SSIM of the enhancer's output (or of the dark images), against the clean images.

    Args:
        enhancer (Enhancer or None): None measures the dark images themselves.
        pairs (Iterable[tuple[np.ndarray, np.ndarray]]): (dark, clean) uint8 (H, W, 3) BGR, e.g.
            :func:`evaluation_pairs`.
        progress (bool): show a progress bar.

    Returns:
        dict: ``{"psnr": {"mean", "std", "n"}, "ssim": {...}}`` over images (``std`` across
        images; the PSNR of an identical pair, infinite, is left out of its mean).

    Raises:
        ValueError: no pairs.
    """
    values = {"psnr": [], "ssim": []}
    for dark, clean in tqdm(pairs, desc="image quality", unit="img", disable=not progress):
        out = enhancer(dark, "BGR") if enhancer is not None else dark
        q = pair_quality(out, clean)
        if math.isfinite(q["psnr"]):
            values["psnr"].append(q["psnr"])
        values["ssim"].append(q["ssim"])
    if not values["ssim"]:
        raise ValueError("enhancer_quality: no images")
    return {k: {"mean": float(np.mean(v)) if v else math.nan, "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                "n": len(v)} for k, v in values.items()}
