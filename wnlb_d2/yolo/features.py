"""The normalised feature error and the non-local share of a YOLOv8-seg model on a test set.

The YOLO counterpart of :mod:`wnlb_d2.analysis.detectron2_features`, with the same result
layout, so the study runner treats every detector alike. Places measured (names as in
``results.json``): the backbone outputs the blocks follow, ``P3``, ``P4``, ``P5`` (the last
backbone layer at stride 8, 16, 32, see :func:`wnlb_d2.yolo.model_yaml.stage_layers`; every
model has them, with blocks or without, so rows compare place by place), and each non-local
block's output, ``P3.after`` ...; per block the non-local share ``||w W_z(y)|| / ||(1 - w) x||``
(weighted fusion) or ``||W_z(y)|| / ||x||`` (residual), ``x`` the block's input.

Images: the dark image is exactly what the YOLO evaluation scores (:func:`evaluate_yolo`): the
dataset's image degraded by the evaluation's deterministic degradation (the mapper of
:class:`~wnlb_d2.yolo.data.LowLightYOLODataset`) when the test set is degraded on the fly, else
the file as Ultralytics reads it; the clean one is the undegraded image (read as the mapper
reads it) or, for an offline low-light copy, its clean twin (:func:`clean_pairs`). Both are then
preprocessed as Ultralytics' rectangular validation preprocesses an image (long side resized to
``imgsz``, letterboxed without upscaling to the stride-aligned rectangle, BGR to RGB, / 255).
Forward hooks read the features; nothing in the model changes.
"""

import logging
import types

import numpy as np
import torch

from ..analysis.clean_pairs import clean_pairs
from ..analysis.feature_error import nonlocal_share, normalised_feature_error
from ..data.image_io import ImageReadError, read_image
from .model_yaml import BLOCK_MODULE, DEFAULT_STAGES, STAGES, plain_layer_map, stage_layers
from .modules import YOLONonLocalBlock2d

__all__ = ["yolo_stage_layers", "validation_input", "evaluation_images", "yolo_backbone_features",
           "yolo_feature_errors"]

logger = logging.getLogger(__name__)

# Ultralytics' validation dataset pads each rectangle by half a stride (BaseDataset pad=0.5 for val).
_VAL_PAD = 0.5


def _model_of(source):
    """An Ultralytics model (``SegmentationModel``) from a ``.pt`` path, a ``YOLO`` wrapper or a model."""
    from .weights import _load_checkpoint_model, check_weights_file, is_weights_path

    if is_weights_path(source):
        return _load_checkpoint_model(check_weights_file(source, "yolo_feature_errors"))
    from ultralytics.engine.model import Model

    return source.model if isinstance(source, Model) else source


def yolo_stage_layers(model):
    """Which layer of a YOLO model gives each stage's output, and which block follows it.

    Args:
        model (nn.Module): an Ultralytics model (its ``yaml`` dict and ``model`` layer list).

    Returns:
        tuple[dict, dict]: ``{stage: layer index}`` for :data:`DEFAULT_STAGES` and every stage a
        block follows (in :data:`STAGES` order), and ``{block name: layer index}``, a block named
        after the stage it follows (``layer<i>`` for one that follows no stage).

    Raises:
        ValueError: a backbone whose stages cannot be read (see :func:`stage_layers`).
    """
    d = model.yaml
    # The stages of the model without blocks (stage_layers reads stock backbones), mapped to
    # the layer indices of the model with them.
    plain = {**d, "backbone": [row for row in d["backbone"] if row[2] != BLOCK_MODULE]}
    if plain.get("scales") and not plain.get("scale"):
        plain["scale"] = next(iter(plain["scales"]))  # Ultralytics' fallback: the first scale
    index = plain_layer_map(d)
    stages = {name: index[i] for name, (i, _channels) in stage_layers(plain).items()}
    follows = {layer: name for name, layer in stages.items()}
    blocks = {}
    for i, m in enumerate(model.model):
        if isinstance(m, YOLONonLocalBlock2d):
            if m.f != -1:  # the share needs the block's input to be the stage's output
                raise ValueError(f"yolo_stage_layers: block layer {i} takes 'from' {m.f}, not the previous layer")
            blocks[follows.get(i - 1, f"layer{i}")] = i
    wanted = [s for s in STAGES if s in DEFAULT_STAGES or s in blocks]
    missing = [s for s in wanted if s not in stages]
    if missing:
        raise ValueError(f"yolo_stage_layers: the model's backbone has no stage(s) {missing} (has {sorted(stages)})")
    return {s: stages[s] for s in wanted}, blocks


def _letterbox_shape(height, width, imgsz, stride):
    """The rectangle Ultralytics' validation letterboxes an image of this size into (as
    ``BaseDataset.set_rectangle`` for a batch of this image)."""
    ratio = height / width
    shape = [ratio, 1.0] if ratio < 1 else [1.0, 1.0 / ratio] if ratio > 1 else [1.0, 1.0]
    return tuple(int(v) for v in np.ceil(np.array(shape) * imgsz / stride + _VAL_PAD).astype(int) * stride)


def validation_input(image_bgr, imgsz, stride=32):
    """One image as Ultralytics' rectangular validation gives it to the model, before ``/ 255``.

    The long side resized to ``imgsz`` (``LowLightYOLODataset.load_image``), then letterboxed
    without upscaling into the stride-aligned rectangle (``LetterBox``, grey 114 borders), and
    the channels reversed to RGB (``Format``).

    Args:
        image_bgr (np.ndarray): ``(H, W, 3)`` uint8 BGR at the image's own size.
        imgsz (int): the validation size.
        stride (int): the model's largest stride (at least 32, as Ultralytics' ``AutoBackend``).

    Returns:
        Tensor: ``(3, h, w)`` uint8 RGB.
    """
    from ultralytics.data.augment import LetterBox

    from .data import LowLightYOLODataset

    h0, w0 = image_bgr.shape[:2]
    # The dataset's own resize (Ultralytics' load_image, restated in LowLightYOLODataset._resize).
    resized = LowLightYOLODataset._resize(types.SimpleNamespace(imgsz=imgsz), image_bgr, True, False)
    boxed = LetterBox(new_shape=_letterbox_shape(h0, w0, imgsz, stride), scaleup=False)(image=resized)
    return torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1)[::-1]))


def _ultralytics_read(file_name):
    """An undegraded image as Ultralytics' dataset reads it (OpenCV), BGR; unreadable: ImageReadError."""
    import cv2
    from ultralytics.utils.patches import imread

    image = imread(file_name, flags=cv2.IMREAD_COLOR)
    if image is None:
        read_image(file_name)  # says why (missing, not an image ...)
        raise ImageReadError(f"Cannot read image {file_name!r}: OpenCV cannot decode it")
    return image


def evaluation_images(dark_record, clean_record, mapper):
    """The dark image the evaluation scores and its clean counterpart, both ``(H, W, 3)`` uint8 BGR.

    Args:
        dark_record, clean_record (dict): a pair of :func:`clean_pairs`.
        mapper (LowLightDatasetMapper or None): the evaluation degradation (the test set is
            degraded on the fly; then both records are the same image), or None (an offline copy).

    Returns:
        tuple[np.ndarray, np.ndarray]
    """
    if mapper is None:
        return _ultralytics_read(dark_record["file_name"]), _ultralytics_read(clean_record["file_name"])
    dark = np.ascontiguousarray(mapper(dict(dark_record))["image"].numpy().transpose(1, 2, 0))
    # Read as the mapper reads before it degrades: the pair differs by the degradation only.
    return dark, read_image(clean_record["file_name"], "BGR")


def yolo_backbone_features(model, image, stages, blocks):
    """Every measured feature map of one image, and each block's input and non-local term.

    Args:
        model (nn.Module): an Ultralytics model in eval mode.
        image (Tensor): ``(3, h, w)`` uint8 RGB (:func:`validation_input`).
        stages, blocks (dict): :func:`yolo_stage_layers` of ``model``.

    Returns:
        tuple[dict, dict]: ``{place: Tensor (C, h, w)}`` (``P3`` ..., ``P3.after`` ...) and
        ``{block: (x, W_z(y), block module)}``.
    """
    layers = model.model
    features, inputs, terms, handles = {}, {}, {}, []

    def keep(store, name, what="output"):
        def hook(module, args, output):
            store[name] = (args[0] if what == "input" else output).detach()[0].float()
        return hook

    try:
        for name, i in stages.items():
            handles.append(layers[i].register_forward_hook(keep(features, name)))
        for name, i in blocks.items():
            handles.append(layers[i].register_forward_hook(keep(features, f"{name}.after")))
            handles.append(layers[i].register_forward_hook(keep(inputs, name, "input")))
            handles.append(layers[i].w_z.register_forward_hook(keep(terms, name)))
        device = next(model.parameters()).device
        with torch.no_grad():
            model(image[None].to(device).float() / 255)
    finally:
        for h in handles:
            h.remove()
    return features, {name: (inputs[name], terms[name], layers[i]) for name, i in blocks.items()}


def yolo_feature_errors(weights, dataset, *, low_light_spec, num_images, imgsz):
    """Per-image NFE at every place and per-image non-local share of every block of a YOLO model.

    Args:
        weights: an Ultralytics ``.pt`` checkpoint path (a local file), a ``YOLO`` wrapper or
            a model (eval mode is set here and restored).
        dataset (str): the low-light test set (registered).
        low_light_spec (LowLightSpec or dict or None): the evaluation degradation (its ``val``
            side; active: the test set is degraded on the fly).
        num_images (int or None): how many images (the first of the dataset; None: all).
        imgsz (int): the validation size (the rows' ``imgsz``).

    Returns:
        dict: ``{"nfe": {place: [float per image]}, "nonlocal_share": {block: [float per image]},
        "images": n}``.

    Raises:
        NoCleanCounterpartError: the test set's images have no clean counterparts.
        FileNotFoundError: ``weights`` names no local file.
        ValueError: an unreadable checkpoint or image, or a clean twin of another size.
    """
    from ultralytics.utils.checks import check_imgsz

    from .data import LowLightSpec, LowLightYOLODataset

    spec = low_light_spec if isinstance(low_light_spec, LowLightSpec) else LowLightSpec.from_dict(low_light_spec)
    on_the_fly = spec.active(training=False)
    pairs = clean_pairs(dataset, degraded_on_the_fly=on_the_fly, num_images=num_images)
    model = _model_of(weights)
    stages, blocks = yolo_stage_layers(model)
    stride = max(int(model.stride.max()) if hasattr(model, "stride") else 32, 32)  # as AutoBackend
    imgsz = check_imgsz(imgsz, stride=stride)  # as the validator: a multiple of the stride
    mapper = LowLightYOLODataset._build_mapper(spec, training=False) if on_the_fly else None
    nfe, share = {}, {}
    was_training = model.training
    model.eval()
    try:
        for dark_record, clean_record in pairs:
            dark_bgr, clean_bgr = evaluation_images(dark_record, clean_record, mapper)
            if dark_bgr.shape != clean_bgr.shape:
                raise ValueError(f"{dataset}: image {dark_record['file_name']} ({dark_bgr.shape[:2]}) and its clean "
                                 f"twin {clean_record['file_name']} ({clean_bgr.shape[:2]}) differ in size")
            dark, dark_terms = yolo_backbone_features(model, validation_input(dark_bgr, imgsz, stride), stages,
                                                      blocks)
            clean, _ = yolo_backbone_features(model, validation_input(clean_bgr, imgsz, stride), stages, blocks)
            # Places in forward order (P3, P3.after, P4 ...): the order the hooks saw them.
            for place, value in dark.items():
                nfe.setdefault(place, []).append(normalised_feature_error(value, clean[place]))
            for name, (x, term, block) in dark_terms.items():
                w = float(block.fusion_weight.detach()) if block.fusion == "weighted" else None
                share.setdefault(name, []).append(nonlocal_share(x, term, block.fusion, w))
    finally:
        model.train(was_training)
    logger.info(f"{dataset}: feature errors of {len(pairs)} images at {list(nfe)}")
    return {"nfe": nfe, "nonlocal_share": share, "images": len(pairs)}

