"""The torch pipelines equal the NumPy ones for the same parameters and noise (up to rounding order)."""

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import torch

from wnlb_d2.data.synthesis import LowLightPipeline, build_pipeline
from wnlb_d2.data.synthesis.torch_render import draw_noise, noise_shape_torch, render_torch, supports_torch


def photo(h, w, seed):
    img = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    y, x = (seed * 37) % (img.shape[0] - h), (seed * 53) % (img.shape[1] - w)
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def numpy_and_torch(pipe, images, seed, fmt):
    """Both renderings of a batch (list of HWC uint8 in fmt) with the same params and noise."""
    rng = np.random.default_rng(seed)
    params, noises, expected = [], [], []
    for image in images:
        p = pipe.sample_params(rng)
        noise = rng.standard_normal(pipe.noise_shape(*image.shape[:2]), dtype=np.float32)
        noises.append(noise.transpose(2, 0, 1) if noise.ndim == 3 else noise)
        expected.append(pipe.render(image, p, noise.copy(), fmt))
        params.append(p)
    batch = torch.from_numpy(np.stack([im.transpose(2, 0, 1) for im in images]))
    got = render_torch(pipe, batch, params, torch.from_numpy(np.stack(noises)), fmt)
    return np.stack(expected), got.numpy().transpose(0, 2, 3, 1)


def levels_off(expected, got):
    diff = np.abs(expected.astype(np.int16) - got.astype(np.int16))
    return int(diff.max()), float((diff > 0).mean()), float((diff > 1).mean())


@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_lv2021_torch_equals_numpy_for_the_same_parameters_and_noise(fmt):
    pipe = build_pipeline("lv2021")
    images = [photo(96, 128, s) for s in range(4)]
    expected, got = numpy_and_torch(pipe, images, 0, fmt)
    worst, off, off2 = levels_off(expected, got)
    # Only float rounding order differs (OpenCV's filter against conv2d, NumPy's pow against torch's).
    assert worst <= 1 and off < 1e-4, (worst, off)


def test_lv2021_torch_equals_numpy_with_dorf_curves(tmp_path):
    lines = []
    for k, g in enumerate((1.8, 2.4)):
        i = np.linspace(0, 1, 1024)
        lines += [f"curve{k}", "graph", "I =", " ".join(f"{v:.6f}" for v in i), "B =",
                  " ".join(f"{v:.6f}" for v in i ** (1 / g))]
    path = tmp_path / "dorfCurves.txt"
    path.write_text("\n".join(lines) + "\n")
    pipe = build_pipeline("lv2021", crf_file=str(path))
    expected, got = numpy_and_torch(pipe, [photo(64, 80, s) for s in range(3)], 1, "BGR")
    worst, off, _ = levels_off(expected, got)
    assert worst <= 1 and off < 1e-3, (worst, off)


@pytest.mark.parametrize("ccm_mode,fmt", [("mix", "BGR"), ("pick", "RGB")])
def test_unprocess_torch_equals_numpy_for_the_same_parameters_and_noise(ccm_mode, fmt):
    pipe = build_pipeline("unprocess", ccm_mode=ccm_mode)
    images = [photo(96, 128, s) for s in range(4)]
    images[0][:20, :30] = 255  # highlights: the protected gains
    expected, got = numpy_and_torch(pipe, images, 2, fmt)
    worst, off, off2 = levels_off(expected, got)
    # Measured: 0-7e-6 of values one level off. Near black one ADC level is many sRGB levels (the
    # gamma's slope), so a rounding flip of the ADC input could show as a few levels: allowed, rare.
    assert off < 1e-4 and off2 < 2e-5 and worst <= 40, (worst, off, off2)


def test_torch_render_checks_its_inputs_and_draws_noise_of_the_right_shape():
    lv, up = build_pipeline("lv2021"), build_pipeline("unprocess")
    assert supports_torch(lv) and supports_torch(up)
    assert noise_shape_torch(lv, 6, 8) == (6, 8) and noise_shape_torch(up, 6, 8) == (3, 6, 8)
    g = torch.Generator().manual_seed(0)
    noise = draw_noise(up, 2, 6, 8, g, "cpu")
    assert noise.shape == (2, 3, 6, 8) and noise.dtype == torch.float32
    images = torch.zeros((2, 3, 6, 8), dtype=torch.uint8)
    params = [up.sample_params(np.random.default_rng(i)) for i in range(2)]
    assert render_torch(up, images, params, noise).shape == (2, 3, 6, 8)
    with pytest.raises(ValueError, match="noise must be float32"):
        render_torch(up, images, params, noise[:, :1])
    with pytest.raises(ValueError, match="images must be uint8"):
        render_torch(up, images.float(), params, noise)
    with pytest.raises(ValueError, match="1 parameter sets for 2 images"):
        render_torch(up, images, params[:1], noise)

    class Other(LowLightPipeline):
        name = "other"

        def config(self):
            return {}
    with pytest.raises(NotImplementedError, match="no torch implementation of pipeline 'other'"):
        render_torch(Other(), images, params, noise)
