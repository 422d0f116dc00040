"""The training device path (``INPUT.LOW_LIGHT.ON_DEVICE``): degradation where the model runs.

Data-loader workers read each training image, draw its degradation parameters (the NumPy
pipeline's draws) and a noise seed, choose the augmentations' transforms from the image's
shape alone, transform the annotations, and ship the 8-bit image at its native size with
those draws and transforms under ``dataset_dict["low_light_device"]``. A forward pre-hook on the
model (:func:`attach_device_degradation`) then degrades each such image on the model's device
(:func:`~wnlb_d2.data.synthesis.torch_render.render_torch`) and applies the transforms there:
the degradation stays at native resolution, before resize and flip, as on the CPU path. The
workers' cost per image falls to reading and decoding (the stock mapper's, less its resize).

Evaluation never takes this path: test images keep the deterministic NumPy degradation.
"""

import logging

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T

from .synthesis.torch_render import draw_noise, render_torch, supports_torch

__all__ = ["DEVICE_KEY", "ShapeOnlyAugInput", "geometric_steps", "apply_steps", "DeviceDegradation",
           "attach_device_degradation"]

logger = logging.getLogger(__name__)

#: Key of the per-image draws and transforms in a mapped training dict.
DEVICE_KEY = "low_light_device"

# detectron2's ResizeTransform interpolations (PIL codes) and torch's closest equivalents.
_INTERPOLATIONS = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


def _flatten(tfm):
    if isinstance(tfm, T.TransformList):
        for t in tfm.transforms:
            yield from _flatten(t)
    else:
        yield tfm


class ShapeOnlyAugInput(T.AugInput):
    """An ``AugInput`` with an image that has a shape and no pixels.

    detectron2's geometric augmentations (``ResizeShortestEdge``, ``RandomFlip``,
    ``RandomCrop``, ...) choose their transform from the image's shape; given this input they
    do so without touching pixels, and the transforms are kept for the device. Transforms that
    change pixel values (colour, brightness, rotation...) cannot be replayed on the device and
    are refused by name.

    Args:
        height, width (int): the native image size.
    """

    def __init__(self, height, width):
        self.shape = (int(height), int(width))
        self.image = self._blank()
        self.boxes = None
        self.sem_seg = None
        self.transforms = []

    def _blank(self):
        # A read-only view with zero strides: the shape an augmentation reads, no memory.
        return np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), self.shape + (3,), (0, 0, 0), writeable=False)

    def transform(self, tfm):
        for t in _flatten(tfm):
            h, w = self.shape
            if isinstance(t, T.NoOpTransform):
                continue
            if isinstance(t, T.ResizeTransform):
                if (t.h, t.w) != (h, w):
                    raise ValueError(f"ResizeTransform from {(t.h, t.w)} given an image of {(h, w)}")
                if t.interp not in _INTERPOLATIONS:
                    raise ValueError(f"INPUT.LOW_LIGHT.ON_DEVICE: ResizeTransform interpolation {t.interp} has no "
                                     f"device equivalent; use one of PIL's {sorted(_INTERPOLATIONS)}")
                self.shape = (t.new_h, t.new_w)
            elif isinstance(t, (T.HFlipTransform, T.VFlipTransform)):
                pass
            elif isinstance(t, T.CropTransform):
                self.shape = (t.h, t.w)
            else:
                raise ValueError(f"INPUT.LOW_LIGHT.ON_DEVICE: the augmentation transform {type(t).__name__} cannot be "
                                 "applied on the device (only resize, flip and crop can); turn ON_DEVICE off or "
                                 "remove that augmentation")
            self.transforms.append(t)
            self.image = self._blank()


def geometric_steps(transforms):
    """The device steps of the transforms a :class:`ShapeOnlyAugInput` kept.

    Returns:
        list[tuple]: ``("resize", new_h, new_w, interp)``, ``("hflip",)``, ``("vflip",)`` or
        ``("crop", x0, y0, w, h)``, in order (plain values: they travel between processes).
    """
    steps = []
    for t in transforms:
        if isinstance(t, T.ResizeTransform):
            steps.append(("resize", int(t.new_h), int(t.new_w), int(t.interp)))
        elif isinstance(t, T.HFlipTransform):
            steps.append(("hflip",))
        elif isinstance(t, T.VFlipTransform):
            steps.append(("vflip",))
        elif isinstance(t, T.CropTransform):
            steps.append(("crop", int(t.x0), int(t.y0), int(t.w), int(t.h)))
    return steps


def apply_steps(image, steps):
    """Apply :func:`geometric_steps` to an image on its device.

    Resizing matches detectron2's ``ResizeTransform`` on 8-bit images (PIL's filters, which
    widen their support when shrinking: torch's ``antialias=True``), rounded back to 8 bit.

    Args:
        image (Tensor): uint8 (3, H, W).
        steps (list[tuple]): as returned by :func:`geometric_steps`.

    Returns:
        Tensor: uint8 (3, H', W') on the same device.
    """
    for step in steps:
        kind = step[0]
        if kind == "resize":
            _, new_h, new_w, interp = step
            mode = _INTERPOLATIONS[interp]
            x = image[None].float()
            if mode == "nearest-exact":
                x = F.interpolate(x, size=(new_h, new_w), mode=mode)
            else:
                x = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False, antialias=True)
            image = x[0].round_().clamp_(0, 255).to(torch.uint8)
        elif kind == "hflip":
            image = image.flip(-1)
        elif kind == "vflip":
            image = image.flip(-2)
        elif kind == "crop":
            _, x0, y0, w, h = step
            image = image[:, y0:y0 + h, x0:x0 + w]
        else:
            raise ValueError(f"apply_steps: unknown step {step!r}")
    return image.contiguous()


def _model_device(module):
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class DeviceDegradation:
    """The forward pre-hook that degrades the training images a device-path mapper shipped.

    Inputs without :data:`DEVICE_KEY` (evaluation, other loaders) pass unchanged.

    Args:
        pipeline (LowLightPipeline): the training pipeline (lv2021 or unprocess; for DoRF curves
            the same ``crf_file`` as the mapper's).
        input_format (str): the model's ``INPUT.FORMAT``, "BGR" or "RGB".
    """

    def __init__(self, pipeline, input_format):
        if not supports_torch(pipeline):
            raise ValueError(f"INPUT.LOW_LIGHT.ON_DEVICE: pipeline {pipeline.name!r} has no torch implementation "
                             "(lv2021 and unprocess have one)")
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.LOW_LIGHT.ON_DEVICE: INPUT.FORMAT must be 'BGR' or 'RGB', got {input_format!r}")
        self.pipeline = pipeline
        self.input_format = input_format

    def degrade(self, dataset_dict, device):
        """One mapped dict with its image degraded and transformed on ``device``.

        Returns:
            dict: a shallow copy with ``"image"`` the uint8 (3, H', W') result on ``device``.
        """
        info = dataset_dict[DEVICE_KEY]
        image = dataset_dict["image"].to(device, non_blocking=True)[None]
        generator = torch.Generator(device=device).manual_seed(int(info["noise_seed"]))
        noise = draw_noise(self.pipeline, 1, image.shape[2], image.shape[3], generator, device)
        out = render_torch(self.pipeline, image, [info["params"]], noise, self.input_format)[0]
        result = {k: v for k, v in dataset_dict.items() if k != DEVICE_KEY}
        result["image"] = apply_steps(out, info["steps"])
        return result

    def __call__(self, module, args):
        if not args or not isinstance(args[0], (list, tuple)):
            return None
        batched = args[0]
        if not any(isinstance(d, dict) and DEVICE_KEY in d for d in batched):
            return None
        device = _model_device(module)
        batched = [self.degrade(d, device) if isinstance(d, dict) and DEVICE_KEY in d else d for d in batched]
        return (batched,) + tuple(args[1:])


def attach_device_degradation(model, pipeline, input_format):
    """Register :class:`DeviceDegradation` on ``model`` (once; a second call replaces the first).

    Works for any detectron2 meta-architecture called with a list of dicts, also under
    DistributedDataParallel (the hook is on the wrapped module). For LazyConfig training, call
    it on the instantiated model.

    Args:
        model (nn.Module): the detector.
        pipeline (LowLightPipeline): the training pipeline.
        input_format (str): the model's input channel order.

    Returns:
        torch.utils.hooks.RemovableHandle
    """
    hook = DeviceDegradation(pipeline, input_format)
    old = getattr(model, "_wnlb_device_degradation", None)
    if old is not None:
        old.remove()
    handle = model.register_forward_pre_hook(hook)
    model._wnlb_device_degradation = handle
    logger.info(f"Training images are degraded on the model's device: {pipeline!r}")
    return handle
