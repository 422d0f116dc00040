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

__all__ = ["draw_predictions", "label_panel", "save_side_by_side", "write_side_by_side"]

logger = logging.getLogger(__name__)


def draw_predictions(image_bgr, outputs, metadata, score_threshold=0.5, scale=1.0):
    """Masks, boxes and labels drawn by detectron2's ``Visualizer`` on the image the model saw.

    Args:
        image_bgr (np.ndarray): uint8 (H, W, 3) BGR image.
        outputs (dict): the model's output, with ``"instances"``.
        metadata: detectron2 metadata (class names).
        score_threshold (float): instances below it are not drawn.
        scale (float): drawing scale (> 1 for small images).

    Returns:
        np.ndarray: uint8 BGR image of size ``(round(H * scale), round(W * scale))``.
    """
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
