"""Pictures of predictions: detectron2's Visualizer with steady colours, title bars, side-by-side rows.

One drawing code for ``tools/demo.py`` and the study's pictures, so the same predictions look
the same wherever they are drawn.
"""

import logging
import os

import cv2
import numpy as np
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..utils.io import atomic_write

__all__ = ["draw_predictions", "label_panel", "resized_instances", "save_side_by_side", "write_side_by_side"]

logger = logging.getLogger(__name__)


def draw_predictions(image_bgr, outputs, metadata, score_threshold=0.5, scale=1.0):
    """Masks, boxes and labels drawn by detectron2's ``Visualizer`` on the image the model saw.

    A scale below 1 shrinks the image and the predictions before they are drawn, so that the
    memory drawing takes follows the size of the picture, not that of the image (the
    ``Visualizer`` renders the whole image through matplotlib; measured: 460 MB for a 3000 x 2250
    image, 770 MB with 50 masks, so about 16 times that for a 12000 x 9000 photo).

    Args:
        image_bgr (np.ndarray): uint8 (H, W, 3) BGR image.
        outputs (dict): the model's output, with ``"instances"``.
        metadata: detectron2 metadata (class names).
        score_threshold (float): instances below it are not drawn.
        scale (float): drawing scale (> 1 for small images, < 1 for huge ones).

    Returns:
        np.ndarray: uint8 BGR image of size ``(round(H * scale), round(W * scale))`` (at least 1 px).
    """
    if scale < 1.0:
        image_bgr, outputs = _shrunk(image_bgr, outputs, score_threshold, scale)
        scale = 1.0
    vis = Visualizer(image_bgr[:, :, ::-1], metadata=metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    # The Visualizer draws instance colours from NumPy's global generator; a fixed seed makes
    # the same predictions look the same in every run (and keeps colours steady across video
    # frames), and the caller's generator state is restored afterwards.
    state = np.random.get_state()
    np.random.seed(0)
    try:
        if "instances" in outputs:
            inst = outputs["instances"]
            vis = vis.draw_instance_predictions(inst[inst.scores >= score_threshold])
        else:
            vis = vis.get_output()
    finally:
        np.random.set_state(state)
    return np.ascontiguousarray(vis.get_image()[:, :, ::-1])


def _shrunk(image_bgr, outputs, score_threshold, scale):
    """The image and the instances to draw, resized by ``scale`` < 1 (instances under the threshold dropped)."""
    h, w = image_bgr.shape[:2]
    size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    image = np.ascontiguousarray(cv2.resize(image_bgr, size[::-1], interpolation=cv2.INTER_AREA))
    if "instances" not in outputs:
        return image, outputs
    inst = outputs["instances"]
    # Indices, not inst[mask]: that would copy every full-size mask drawn before shrinking it.
    keep = (inst.scores >= score_threshold).nonzero().flatten()
    return image, dict(outputs, instances=resized_instances(inst, size, keep))


def resized_instances(instances, size, indices=None):
    """Predictions moved onto the same image resized to ``size``: boxes and keypoints scaled, masks resized.

    Args:
        instances (Instances): predictions in image coordinates (``pred_masks`` a ``(N, H, W)`` tensor).
        size (tuple[int, int]): the new ``(height, width)``.
        indices (torch.Tensor or None): int64 indices of the instances to keep (None: all).

    Returns:
        Instances: of ``image_size == size``; other fields (scores, classes) unchanged.
    """
    import torch
    from detectron2.structures import Boxes, Instances

    (h0, w0), (h, w) = instances.image_size, size
    if indices is None:
        indices = torch.arange(len(instances))
    out = Instances(tuple(size))
    for name, value in instances.get_fields().items():
        if name == "pred_masks" and isinstance(value, torch.Tensor) and value.dim() == 3:
            # One mask at a time: a copy of all of them at full size is what runs out of memory.
            resized = [cv2.resize(_as_cv2_mask(value[i]), (w, h), interpolation=cv2.INTER_NEAREST) for i in indices]
            value = torch.from_numpy(np.stack(resized)).to(value.dtype) if resized else value.new_zeros((0, h, w))
        else:
            value = value[indices]
            if isinstance(value, Boxes):
                value = Boxes(value.tensor.clone())
                value.scale(w / w0, h / h0)
            elif name == "pred_keypoints":
                value = value.clone()
                value[..., 0] *= w / w0
                value[..., 1] *= h / h0
        out.set(name, value)
    return out


def _as_cv2_mask(mask):
    """A ``(H, W)`` mask tensor as an array cv2.resize takes (it has no bool)."""
    import torch

    return mask.to(torch.uint8).numpy() if mask.dtype == torch.bool else mask.float().numpy()


def label_panel(image_bgr, text, height=None):
    """The image with a white title bar of ``text`` above it (for side-by-side pictures)."""
    h, w = image_bgr.shape[:2]
    bar_h = height or max(16, min(28, w // 12))
    bar = np.full((bar_h, w, 3), 255, np.uint8)
    font_scale = bar_h / 40.0
    cv2.putText(bar, text, (4, int(bar_h * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image_bgr], axis=0)


def save_side_by_side(models, cfg_test, dataset_name, out_dir, num_images=3, low_light=True, score_threshold=0.5,
                      scale=2.0):
    """Save PNGs: the (degraded) test input, then each row's predictions, side by side.

    Args:
        models (dict[str, (CfgNode, nn.Module)]): row -> (config, model).
        cfg_test (CfgNode): config whose ``INPUT.LOW_LIGHT`` decides the degradation of the inputs
            (the evaluation degradation: the same image every row sees in its evaluation).
        dataset_name (str): registered dataset to take the first ``num_images`` images from.
        out_dir (str): folder for ``sample_<k>.png``.
        num_images (int): how many images.
        low_light (bool): degrade the inputs (for normal-light test data).
        score_threshold (float): instances below it are not drawn.
        scale (float): drawing scale (> 1 for small images).

    Returns:
        list[str]: paths written.
    """
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..data.mapper import LowLightDatasetMapper

    cfg = cfg_test.clone()
    cfg.defrost()
    cfg.INPUT.LOW_LIGHT.ENABLED = bool(low_light)
    cfg.INPUT.LOW_LIGHT.TEST = bool(low_light)
    mapper = LowLightDatasetMapper(cfg, is_train=False)
    meta = MetadataCatalog.get(dataset_name)
    paths = []
    for k, d in enumerate(DatasetCatalog.get(dataset_name)[:num_images]):
        inp = mapper(dict(d))
        image = inp["image"].permute(1, 2, 0).numpy().astype(np.uint8)
        image_bgr = image[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else image
        h, w = d["height"], d["width"]
        image_bgr = np.ascontiguousarray(cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR))
        outputs = {}
        for row, (_, model) in models.items():
            model.eval()
            with torch.no_grad():
                outputs[row] = {"instances": model([inp])[0]["instances"].to("cpu")}
        path = os.path.join(out_dir, f"sample_{k}.png")
        paths.append(write_side_by_side(path, image_bgr, outputs, meta, score_threshold=score_threshold, scale=scale))
    return paths


def write_side_by_side(path, image_bgr, outputs, metadata, *, score_threshold=0.5, scale=2.0,
                       input_title="low-light input"):
    """Write one PNG: ``image_bgr``, then each row's predictions drawn on it, side by side.

    Args:
        path (str): the PNG to write (atomically; its folder is created).
        image_bgr (np.ndarray): uint8 ``(H, W, 3)`` BGR image, the input every row saw.
        outputs (dict[str, dict]): row -> that row's output on the image (``{"instances": Instances}``
            in image coordinates).
        metadata: detectron2 metadata (class names).
        score_threshold (float): instances below it are not drawn.
        scale (float): drawing scale (> 1 for small images).
        input_title (str): title of the first panel.

    Returns:
        str: ``path``.
    """
    h, w = image_bgr.shape[:2]
    size = (int(round(w * scale)), int(round(h * scale)))
    panels = [label_panel(cv2.resize(image_bgr, size, interpolation=cv2.INTER_NEAREST), input_title)]
    for row, out in outputs.items():
        drawn = draw_predictions(image_bgr, out, metadata, score_threshold=score_threshold, scale=scale)
        panels.append(label_panel(cv2.resize(drawn, size, interpolation=cv2.INTER_AREA), row))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as tmp:
        if not cv2.imwrite(tmp, np.concatenate(panels, axis=1)):
            raise OSError(f"could not write {path}")
    return path
