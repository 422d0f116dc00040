"""Weights of a plain YOLO model loaded into the same model with non-local blocks.

Inserting a block shifts the index of every later layer, and the state-dict keys with it
(``model.5.conv.weight`` of yolov8n-seg is ``model.6.conv.weight`` with a block after P3), so
Ultralytics' own ``model.load`` (which matches by name and shape) would silently skip most of
the weights. :func:`load_plain_weights` renames by the layer map instead and checks that every
stock tensor found its place.
"""

import logging
import re

import torch

from .model_yaml import plain_layer_map

__all__ = ["remap_plain_state_dict", "load_plain_weights", "read_yolo_state_dict"]

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^model\.(\d+)\.(.+)$")


def read_yolo_state_dict(source):
    """The state dict of a YOLO model, a checkpoint file or a state dict.

    Args:
        source: a ``torch.nn.Module`` (an Ultralytics model or ``YOLO`` wrapper), a path of an
            Ultralytics ``.pt`` checkpoint (its EMA weights, else its model), or a state dict.

    Returns:
        dict[str, Tensor]: keys ``model.<layer>.<name>`` (float32 for floating tensors).

    Raises:
        ValueError: the source is none of these, or a checkpoint holds no model.
    """
    if isinstance(source, dict) and all(isinstance(v, torch.Tensor) for v in source.values()):
        sd = source
    elif isinstance(source, torch.nn.Module):
        from ultralytics.engine.model import Model

        # ultralytics.YOLO wraps the DetectionModel, whose state dict has the model.<i> keys.
        sd = (source.model if isinstance(source, Model) else source).state_dict()
    elif isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from ultralytics.nn.tasks import load_checkpoint

        model, _ = load_checkpoint(source)
        sd = model.state_dict()
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
