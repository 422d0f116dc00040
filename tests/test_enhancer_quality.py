"""PSNR and SSIM of enhancers against an independent SciPy transcription of Wang et al.'s SSIM."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from wnlb_d2.data.synthesis import build_pipeline, eval_rng
from wnlb_d2.enhance import build_enhancer
from wnlb_d2.enhance.quality import enhancer_quality, psnr, ssim


def reference_ssim(x, y, data_range=255.0):
    """scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False), per channel with scipy's gaussian_filter, then the mean."""
    out = []
    for c in range(x.shape[2]):
        a, b = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        f = lambda z: gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")  # noqa: E731
        ux, uy = f(a), f(b)
        vx, vy, vxy = f(a * a) - ux * ux, f(b * b) - uy * uy, f(a * b) - ux * uy
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        out.append(s[5:-5, 5:-5].mean())
    return float(np.mean(out))


def test_psnr_and_ssim_match_their_definitions():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / mse))
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) == pytest.approx(reference_ssim(a, b), abs=1e-6)
    assert ssim(a, b) < ssim(a, np.clip(a.astype(int) + 2, 0, 255).astype(np.uint8))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, b[:10])
    with pytest.raises(ValueError, match="at least 11 pixels"):
        ssim(a[:8], b[:8])


def test_enhancer_quality_on_the_evaluation_pairs(tmp_path):
    import cv2
    from detectron2.data import DatasetCatalog

    from helpers import make_cfg
    from wnlb_d2.enhance.quality import evaluation_pairs

    yy, xx = np.mgrid[0:48, 0:64]
    records = []
    for i in range(3):
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, np.stack([xx * 4, yy * 5, np.full_like(xx, 100 + 20 * i)], -1).astype(np.uint8))
        records.append({"file_name": path, "image_id": 10 + i, "height": 48, "width": 64})
    DatasetCatalog.register("quality_test_set", lambda: records)
    try:
        cfg = make_cfg()
        cfg.INPUT.LOW_LIGHT.SEED = 4
        pipe = build_pipeline("lv2021")
        pairs = list(evaluation_pairs("quality_test_set", degraded_on_the_fly=True, low_light_cfg=cfg))
        # The dark images are exactly the evaluation ones: eval_rng(SEED, image id).
        for (dark, clean), r in zip(pairs, records):
            assert np.array_equal(dark, pipe(cv2.imread(r["file_name"]), eval_rng(4, r["image_id"]), "BGR")[0])
            assert np.array_equal(clean, cv2.imread(r["file_name"]))
        dark = enhancer_quality(None, pairs, progress=False)
        assert dark["psnr"]["n"] == 3 and dark["psnr"]["mean"] < 30
        assert dark["ssim"]["mean"] == pytest.approx(np.mean([ssim(d, c) for d, c in pairs]))
        gamma = enhancer_quality(build_enhancer("gamma"), pairs, progress=False)
        assert gamma["psnr"]["mean"] > dark["psnr"]["mean"]  # brightening moves towards the clean images
        with pytest.raises(ValueError, match="no images"):
            enhancer_quality(None, [], progress=False)
    finally:
        DatasetCatalog.remove("quality_test_set")
