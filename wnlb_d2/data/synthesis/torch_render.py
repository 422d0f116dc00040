"""Both synthesis pipelines in torch: a batch of images degraded on any device.

The training device path (``INPUT.LOW_LIGHT.ON_DEVICE``) degrades the batch where the model
runs. The parameters are drawn by the NumPy pipeline (:meth:`sample_params`, the same draws);
the per-level tables are computed by it too (256 values per image, so the same float32 values);
this module does the per-pixel work with the same formulas as the pipelines' ``render``. For the
same parameters and noise its output equals the NumPy one up to float rounding order (OpenCV's
filters and colour transforms, torch's ``pow`` against NumPy's): on photos 0-7e-6 of the values
are one level off on the CPU (``tests/test_torch_render.py``).
"""

import numpy as np
import torch
import torch.nn.functional as F

from .lv2021 import Lv2021Pipeline
from .unprocess import UnprocessPipeline, _camera

__all__ = ["supports_torch", "noise_shape_torch", "draw_noise", "render_torch"]

# Bilinear demosaicing kernels (camera.py's), as a (3, 1, 3, 3) depthwise weight: R, G, B.
_KERNEL_RB = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32) / 4
_KERNEL_G = torch.tensor([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=torch.float32) / 4
_DEMOSAIC = torch.stack([_KERNEL_RB, _KERNEL_G, _KERNEL_RB])[:, None]


def supports_torch(pipeline):
    """Whether :func:`render_torch` implements ``pipeline`` (lv2021 and unprocess)."""
    return isinstance(pipeline, (Lv2021Pipeline, UnprocessPipeline))


def noise_shape_torch(pipeline, height, width):
    """Per-image shape of the standard normal draws in the torch layout.

    lv2021: (H, W), one per Bayer site; unprocess: (3, H, W), camera RGB (the NumPy pipeline's
    (H, W, 3) draws transposed).
    """
    shape = pipeline.noise_shape(height, width)
    return shape if len(shape) == 2 else (shape[2],) + tuple(shape[:2])


def draw_noise(pipeline, n, height, width, generator, device):
    """Standard normal draws for ``n`` images of one size, on ``device``.

    Args:
        pipeline (LowLightPipeline): lv2021 or unprocess.
        n, height, width (int): the batch.
        generator (torch.Generator): on ``device``.
        device (torch.device or str): where to draw.

    Returns:
        Tensor: float32 ``(n,) + noise_shape_torch(pipeline, height, width)``.
    """
    shape = (n,) + tuple(noise_shape_torch(pipeline, height, width))
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def _channel_index(input_format):
    # Index of R, G, B in a CHW image of that order.
    return (2, 1, 0) if input_format == "BGR" else (0, 1, 2)


def _check(pipeline, images, params, noise, input_format):
    if not supports_torch(pipeline):
        raise NotImplementedError(f"render_torch: no torch implementation of pipeline {pipeline.name!r} "
                                  f"({type(pipeline).__name__}); lv2021 and unprocess have one")
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"render_torch: images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if len(params) != images.shape[0]:
        raise ValueError(f"render_torch: {len(params)} parameter sets for {images.shape[0]} images")
    expected = (images.shape[0],) + tuple(noise_shape_torch(pipeline, *images.shape[2:]))
    if tuple(noise.shape) != expected or noise.dtype != torch.float32:
        raise ValueError(f"render_torch: noise must be float32 {expected}, got {noise.dtype} {tuple(noise.shape)}")
    if input_format not in ("BGR", "RGB"):
        raise ValueError(f"render_torch: input_format must be 'BGR' or 'RGB', got {input_format!r}")


def render_torch(pipeline, images, params, noise, input_format="BGR"):
    """Degrade a batch of images of one size with drawn parameters and noise.

    Args:
        pipeline (LowLightPipeline): an lv2021 or unprocess pipeline (its ranges are not used:
            the parameters are given).
        images (Tensor): uint8 ``(N, 3, H, W)`` in ``input_format``, on any device.
        params (list[dict]): ``N`` parameter sets from ``pipeline.sample_params``.
        noise (Tensor): float32 ``(N,) + noise_shape_torch(...)`` standard normals on the
            images' device (:func:`draw_noise`).
        input_format (str): "BGR" or "RGB"; the output has the same order.

    Returns:
        Tensor: uint8 ``(N, 3, H, W)`` on the images' device.

    Raises:
        NotImplementedError: a pipeline without a torch implementation.
        ValueError: wrong shapes or dtypes (the message names them).
    """
    _check(pipeline, images, params, noise, input_format)
    if isinstance(pipeline, Lv2021Pipeline):
        return _lv2021(pipeline, images, params, noise, input_format)
    return _unprocess(pipeline, images, params, noise, input_format)


def _tables(rows, device):
    return torch.from_numpy(np.ascontiguousarray(np.stack(rows), dtype=np.float32)).to(device)


def _per_image(values, device, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype, device=device).view(-1, 1, 1, 1)


def _interp(x, xp, fp):
    """``np.interp(x, xp, fp)`` in float64 for x in [0, 1] (the DoRF curves' domain), per image.

    Args:
        x (Tensor): float32 (N, C, H, W).
        xp, fp (list[np.ndarray]): per image, float64 (K,) increasing sample points and values.

    Returns:
        Tensor: float32, the shape of ``x``.
    """
    out = torch.empty_like(x)
    for i, (xs, fs) in enumerate(zip(xp, fp)):
        xs_t = torch.from_numpy(xs).to(x.device)
        fs_t = torch.from_numpy(fs).to(x.device)
        v = x[i].double()
        j = torch.searchsorted(xs_t, v, right=True).clamp_(1, len(xs) - 1) - 1
        x0, x1, f0, f1 = xs_t[j], xs_t[j + 1], fs_t[j], fs_t[j + 1]
        y = (f1 - f0) / (x1 - x0) * (v - x0) + f0
        y = torch.where(v <= xs_t[0], fs_t[0], torch.where(v >= xs_t[-1], fs_t[-1], y))
        out[i] = y.float()
    return out


def _quantise(x):
    """float [0, 1] -> uint8 as the pipelines: ``rint(x * 255)`` clipped (torch rounds half to even as rint)."""
    return torch.round(x * 255.0).clamp_(0, 255).to(torch.uint8)


def _lv2021(pipe, images, params, noise, input_format):
    n, _, h, w = images.shape
    device = images.device
    tables = [pipe.tables(p) for p in params]
    irradiance = _tables([t[0] for t in tables], device)  # (N, 256)
    std = _tables([t[1] for t in tables], device)
    r, g, b = _channel_index(input_format)
    # The RGGB mosaic of the 8-bit image (R at the top-left), as camera.mosaic_rggb.
    codes = torch.empty((n, h, w), dtype=torch.long, device=device)
    codes[:, 0::2, 0::2] = images[:, r, 0::2, 0::2]
    codes[:, 0::2, 1::2] = images[:, g, 0::2, 1::2]
    codes[:, 1::2, 0::2] = images[:, g, 1::2, 0::2]
    codes[:, 1::2, 1::2] = images[:, b, 1::2, 1::2]
    codes = codes.view(n, -1)
    raw = noise.reshape(n, -1) * torch.gather(std, 1, codes)
    raw = (raw + torch.gather(irradiance, 1, codes)).clamp_(0.0, 1.0).view(n, h, w)
    # Bilinear demosaicing: each colour's sites, then its kernel; 'reflect' is OpenCV's REFLECT_101.
    planes = torch.zeros((n, 3, h, w), dtype=torch.float32, device=device)
    planes[:, 0, 0::2, 0::2] = raw[:, 0::2, 0::2]
    planes[:, 1, 0::2, 1::2] = raw[:, 0::2, 1::2]
    planes[:, 1, 1::2, 0::2] = raw[:, 1::2, 0::2]
    planes[:, 2, 1::2, 1::2] = raw[:, 1::2, 1::2]
    planes = F.conv2d(F.pad(planes, (1, 1, 1, 1), mode="reflect"), _DEMOSAIC.to(device), groups=3)
    planes.clamp_(0.0, 1.0)
    # The camera response, per image: a gamma (float32 exponent as GammaResponse) or a DoRF curve.
    if all("crf_index" not in p for p in params):
        exponent = _per_image([float(np.float32(1.0 / p["crf_gamma"])) for p in params], device)
        planes = torch.pow(planes, exponent)
    else:
        curves = [pipe.response(p) for p in params]
        if any(not hasattr(c, "irradiance") for c in curves):
            raise ValueError("render_torch: mixed parametric and DoRF responses in one batch")
        planes = _interp(planes, [c.irradiance for c in curves], [c.brightness for c in curves])
    out = _quantise(planes)
    return out.flip(1) if input_format == "BGR" else out


def _unprocess(pipe, images, params, noise, input_format):
    n, _, h, w = images.shape
    device = images.device
    f32 = np.float32
    table = _tables([pipe.tables(p) for p in params], device)  # (N, 256)
    cams = [_camera(p) for p in params]
    rgb2cam = _tables([c[0].astype(f32) for c in cams], device)  # (N, 3, 3)
    gains = _tables([(1.0 / c[1]).astype(f32) for c in cams], device)  # (N, 3)
    to_srgb = _tables([(np.linalg.inv(c[0]) * (c[1] / 255.0)[None, :]).astype(f32) for c in cams], device)
    # The linear signal of the 8-bit RGB values (the table), then camera RGB.
    rgb = images[:, list(_channel_index(input_format))].long().view(n, -1)
    linear = torch.gather(table, 1, rgb).view(n, 3, h, w)
    raw = torch.einsum("nkhw,nck->nchw", linear, rgb2cam)
    # safe_inverse_gains: highlights (grey above 0.9) blend the gains towards 1.
    gray = raw.mean(dim=1, keepdim=True)
    mask = torch.square(torch.clamp(gray - 0.9, min=0.0) / float(f32(1.0) - f32(0.9)))
    g = gains.view(n, 3, 1, 1)
    raw = raw * torch.maximum(mask + (1.0 - mask) * g, g)
    raw = raw.clamp_(0.0, 1.0) * _per_image([float(f32(p["darkness"])) for p in params], device)
    # Shot and read noise, then the 8-bit ADC.
    std = torch.sqrt(raw * _per_image([float(f32(p["shot_noise"])) for p in params], device)
                     + _per_image([float(f32(p["read_noise"])) for p in params], device))
    raw = torch.round((raw + noise * std).clamp_(0.0, 1.0) * 255.0)
    # Levels -> white balance -> sRGB (the 1/255 is in to_srgb), gamma, 8 bit.
    out = torch.einsum("nkhw,nck->nchw", raw, to_srgb).clamp_(1e-8, 1.0)
    out = torch.pow(out, _per_image([float(f32(1.0 / p["gamma"])) for p in params], device))
    out = torch.round(out * 255.0).to(torch.uint8)
    return out.flip(1) if input_format == "BGR" else out
