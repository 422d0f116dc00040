"""Side-by-side pictures of YOLO rows' predictions, drawn as the detectron2 rows' are.

Each test image is degraded as the evaluation degrades it (the detectron2 mapper's evaluation
seed, see :mod:`wnlb_d2.data`; the same bytes the YOLO validator scores), every row's weights
predict on it through Ultralytics, and the predictions, converted to detectron2 ``Instances``,
are drawn by :func:`wnlb_d2.visualization.write_side_by_side`: one drawing code for every
detector, so a YOLO row looks like a Mask R-CNN row.
"""

import logging
import os

import numpy as np

__all__ = ["results_to_instances", "save_yolo_side_by_side"]

logger = logging.getLogger(__name__)


def results_to_instances(result, image_shape):
    """One Ultralytics ``Results`` (predicted with ``retina_masks=True``) as detectron2 ``Instances``.

    Args:
        result (ultralytics.engine.results.Results): one image's predictions.
        image_shape (tuple): ``(H, W)`` of the image predicted on.

    Returns:
        Instances: ``pred_boxes`` (XYXY, image pixels), ``scores``, ``pred_classes`` (class
        index = the dataset's contiguous class index), ``pred_masks`` ``(N, H, W)`` bool.

    Raises:
        ValueError: masks that are not at the image's size (predicted without ``retina_masks``).
    """
    import torch
    from detectron2.structures import Boxes, Instances

    h, w = image_shape
    boxes = result.boxes
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(boxes.xyxy.detach().cpu().float())
    inst.scores = boxes.conf.detach().cpu().float()
    inst.pred_classes = boxes.cls.detach().cpu().long()
    if result.masks is None:
        inst.pred_masks = torch.zeros((len(inst), h, w), dtype=torch.bool)
    else:
        masks = result.masks.data.detach().cpu()
        if tuple(masks.shape[1:]) != (h, w):
            raise ValueError(f"results_to_instances: masks of shape {tuple(masks.shape[1:])} for an image of "
                             f"{(h, w)}; predict with retina_masks=True")
        inst.pred_masks = masks > 0.5
    return inst


def save_yolo_side_by_side(weights, dataset_name, out_dir, *, low_light=None, num_images=3, imgsz=640,
                           score_threshold=0.5, scale=2.0, device="cpu"):
    """Save ``sample_<k>.png``: the (degraded) test image, then each row's predictions, side by side.

    Args:
        weights (dict[str, str]): row -> YOLO weights (``.pt``), in the order to draw.
        dataset_name (str): registered detectron2 dataset; its first ``num_images`` images.
        out_dir (str): folder for the PNGs.
        low_light (LowLightSpec or dict or None): the evaluation degradation (its ``val`` side);
            None or inactive: the images as they are.
        num_images (int): how many images.
        imgsz (int): inference size (the rows' training size).
        score_threshold (float): predictions below it are neither kept nor drawn.
        scale (float): drawing scale (> 1 for small images).
        device (str): Ultralytics device.

    Returns:
        list[str]: paths written.

    Raises:
        FileNotFoundError: a row's weights name no local file (nothing is downloaded).
        ValueError: a row's class names differ from the dataset's (its class indices would be
            drawn with the wrong names).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from ultralytics import YOLO

    from ..data.image_io import read_image
    from ..visualization import write_side_by_side
    from .data import LowLightSpec, LowLightYOLODataset
    from .weights import check_class_names, check_weights_file, model_class_names

    spec = LowLightSpec.from_dict(low_light) if not isinstance(low_light, LowLightSpec) else low_light
    mapper = LowLightYOLODataset._build_mapper(spec, training=False) if spec.active(training=False) else None
    meta = MetadataCatalog.get(dataset_name)
    classes = list(meta.thing_classes)
    models = {}
    for row, path in weights.items():
        # Checked before Ultralytics sees the path: it would look a missing file up online.
        path = check_weights_file(path, f"save_yolo_side_by_side: row {row!r}")
        model = YOLO(path, task="segment")
        check_class_names(model_class_names(model), classes, f"save_yolo_side_by_side: row {row!r} ({path})",
                          dataset_name)
        models[row] = model
    paths = []
    for k, d in enumerate(DatasetCatalog.get(dataset_name)[:num_images]):
        if mapper is not None:
            image = mapper(dict(d))["image"].numpy().transpose(1, 2, 0)
        else:
            image = read_image(d["file_name"], "BGR")
        image = np.ascontiguousarray(image, dtype=np.uint8)
        outputs = {}
        for row, model in models.items():
            result = model.predict(image, imgsz=imgsz, conf=score_threshold, retina_masks=True, device=device,
                                   verbose=False)[0]
            outputs[row] = {"instances": results_to_instances(result, image.shape[:2])}
        path = os.path.join(out_dir, f"sample_{k}.png")
        paths.append(write_side_by_side(path, image, outputs, meta, score_threshold=score_threshold, scale=scale))
    logger.info(f"{len(paths)} side-by-side pictures of {list(weights)} in {out_dir}")
    return paths
