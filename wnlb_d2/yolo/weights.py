"""Weights of a plain YOLO model loaded into the same model with non-local blocks.

Inserting a block shifts the index of every later layer, and the state-dict keys with it
(``model.5.conv.weight`` of yolov8n-seg is ``model.6.conv.weight`` with a block after P3), so
Ultralytics' own ``model.load`` (which matches by name and shape) would silently skip most of
the weights. :func:`load_plain_weights` renames by the layer map instead and checks that every
stock tensor found its place.

Weights are read from local files only: a path that names no file is refused by
:func:`check_weights_file` before Ultralytics sees it (its loader would take a missing
``yolov8n-seg.pt`` for an asset name and look it up on GitHub, even with ``YOLO_OFFLINE=1``).
The class names a checkpoint was trained with (:func:`model_class_names`) are compared with a
dataset's by :func:`check_class_names` before its predictions are scored, drawn or fine-tuned.
"""

import logging
import os
import re

import torch

from .model_yaml import plain_layer_map

__all__ = ["remap_plain_state_dict", "load_plain_weights", "read_yolo_state_dict", "check_weights_file",
           "is_weights_path", "model_class_names", "check_class_names"]

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^model\.(\d+)\.(.+)$")


def is_weights_path(source):
    """Whether ``source`` is a path (str, bytes or path-like) rather than a model or state dict."""
    return isinstance(source, (str, bytes)) or hasattr(source, "__fspath__")


def check_weights_file(path, what="weights"):
    """Refuse a weights path that is not an existing, non-empty local file, before Ultralytics sees it.

    Ultralytics' loader resolves a missing path online (a GitHub release asset, a URL), whatever
    ``YOLO_OFFLINE`` says; nothing of this project downloads weights.

    Args:
        path (str or os.PathLike): the weights path.
        what (str): what the path is, for the message (e.g. ``"--plain-weights"``).

    Returns:
        str: ``path`` as a string.

    Raises:
        FileNotFoundError: no file there (the message names the path).
        ValueError: a folder or an empty file.
    """
    path = os.fsdecode(path)
    if os.path.isdir(path):
        raise ValueError(f"{what}: {path!r} is a folder; expected an Ultralytics .pt checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: weights file {path!r} does not exist (weights are read from local files "
                                "only; nothing is downloaded)")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{what}: weights file {path!r} is empty (0 bytes): a failed copy or download?")
    return path


def _load_checkpoint_model(path):
    from ultralytics.nn.tasks import load_checkpoint

    path = check_weights_file(path)
    try:
        model, _ = load_checkpoint(path)
    except Exception as e:  # torch's and Ultralytics' loaders fail in many ways; all mean "unreadable"
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"weights file {path!r} is not a readable Ultralytics checkpoint: {detail}") from e
    return model


def model_class_names(source):
    """The class names a YOLO model or checkpoint holds, by class index.

    Args:
        source: an Ultralytics ``.pt`` path, a model (an Ultralytics model or ``YOLO``
            wrapper) or a state dict.

    Returns:
        list[str] or None: None for a state dict or a model without names (nothing to compare).
    """
    if isinstance(source, dict):
        return None
    model = _load_checkpoint_model(source) if is_weights_path(source) else source
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return None


def check_class_names(names, classes, what, dataset):
    """Refuse a model whose classes are not the dataset's (its class indices would mean other things).

    Args:
        names (list[str] or None): the model's class names by index (:func:`model_class_names`);
            None: unknown, nothing to check.
        classes (sequence of str): the dataset's ``thing_classes``.
        what (str): the model, for the message (e.g. ``"weights 'out/best.pt'"``).
        dataset (str): the dataset's name, for the message.

    Raises:
        ValueError: the names differ (the message names both lists).
    """
    if names is not None and list(names) != [str(c) for c in classes]:
        raise ValueError(f"{what} has classes {list(names)}, but the dataset {dataset!r} has {list(classes)}; "
                         "YOLO weights are scored, drawn or fine-tuned only on data with the same classes")


def read_yolo_state_dict(source):
    """The state dict of a YOLO model, a checkpoint file or a state dict.

    Args:
        source: a ``torch.nn.Module`` (an Ultralytics model or ``YOLO`` wrapper), a path of an
            Ultralytics ``.pt`` checkpoint (its EMA weights, else its model), or a state dict.

    Returns:
        dict[str, Tensor]: keys ``model.<layer>.<name>`` (float32 for floating tensors).

    Raises:
        FileNotFoundError: a path that names no file (nothing is looked up online).
        ValueError: the source is none of these, or a checkpoint holds no model.
    """
    if isinstance(source, dict) and all(isinstance(v, torch.Tensor) for v in source.values()):
        sd = source
    elif isinstance(source, torch.nn.Module):
        from ultralytics.engine.model import Model

        # ultralytics.YOLO wraps the DetectionModel, whose state dict has the model.<i> keys.
        sd = (source.model if isinstance(source, Model) else source).state_dict()
    elif is_weights_path(source):
        sd = _load_checkpoint_model(source).state_dict()
    else:
        raise ValueError(f"read_yolo_state_dict: expected a model, a .pt path or a state dict, got {type(source)}")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def remap_plain_state_dict(plain_state_dict, model_dict):
    """Rename a plain model's state dict to the layer indices of a model with blocks.

    Args:
        plain_state_dict (dict[str, Tensor]): keys ``model.<plain layer>.<name>``.
        model_dict (dict): the model dict with blocks (its YAML dict).

    Returns:
        dict[str, Tensor]: keys ``model.<new layer>.<name>``.

    Raises:
        ValueError: a key names a layer the plain model of ``model_dict`` does not have.
    """
    layer_map = plain_layer_map(model_dict)
    out = {}
    for key, value in plain_state_dict.items():
        m = _KEY.match(key)
        if m is None or int(m.group(1)) not in layer_map:
            raise ValueError(f"remap_plain_state_dict: key {key!r} is not a layer of the plain model "
                             f"(layers 0..{len(layer_map) - 1})")
        out[f"model.{layer_map[int(m.group(1))]}.{m.group(2)}"] = value
    return out


def load_plain_weights(model, source):
    """Load a plain YOLO model's weights into ``model`` (the same model with blocks).

    Every tensor of the plain model must fit (same name after renaming, same shape); only the
    blocks' tensors are left at their initialisation, which makes every block the identity,
    so right after loading ``model`` computes what the plain model computes.

    Args:
        model (ultralytics.nn.tasks.BaseModel): built from a YAML with blocks (``model.yaml``).
        source: see :func:`read_yolo_state_dict`.

    Returns:
        list[str]: the keys left at their initialisation (the blocks').

    Raises:
        ValueError: a plain tensor has no place in ``model`` or a different shape (e.g. the
            weights of another scale or number of classes), with the first offending keys.
    """
    remapped = remap_plain_state_dict(read_yolo_state_dict(source), model.yaml)
    own = model.state_dict()
    unexpected = sorted(set(remapped) - set(own))
    mismatched = sorted(k for k in remapped if k in own and remapped[k].shape != own[k].shape)
    if unexpected or mismatched:
        detail = [f"{k}: {tuple(remapped[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:5]]
        raise ValueError(f"load_plain_weights: the weights do not fit this model: {len(unexpected)} unknown keys "
                         f"{unexpected[:5]}, {len(mismatched)} of another shape {detail}")
    missing = sorted(set(own) - set(remapped))
    model.load_state_dict(remapped, strict=False)
    blocks = sorted({".".join(k.split(".")[:2]) for k in missing})
    logger.info(f"Loaded {len(remapped)}/{len(own)} tensors of the plain model; {len(missing)} block tensors keep "
                f"their initialisation: {', '.join(blocks)}")
    return missing
