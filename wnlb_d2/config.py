"""Config keys of wnlb_d2, added to a detectron2 config by :func:`add_wnlb_config`."""

import logging
import os

import yaml
from detectron2.config import CfgNode as CN

__all__ = ["add_wnlb_config", "merge_from_file", "MODEL_ZOO_PREFIX"]

logger = logging.getLogger(__name__)

#: A ``_BASE_`` (or config path) starting with this prefix names a stock detectron2 config,
#: resolved with :func:`detectron2.model_zoo.get_config_file`, e.g.
#: ``model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml``.
MODEL_ZOO_PREFIX = "model_zoo://"


def add_wnlb_config(cfg):
    """Add the ``MODEL.WNLB`` node (weighted non-local blocks) to a detectron2 config.

    Args:
        cfg (CfgNode): a config from :func:`detectron2.config.get_cfg`; modified in place.
    """
    _C = cfg
    _C.MODEL.WNLB = CN()
    # Stages after which a block is placed; any of "res2", "res3", "res4", "res5" that the
    # backbone computes (the C4 backbone stops at res4).
    _C.MODEL.WNLB.STAGES = ["res3", "res4", "res5"]
    # Pairwise function f of the non-local operation (Wang et al. 2018):
    # "embedded" (embedded Gaussian), "gaussian", "dot" (dot product), "concatenate".
    _C.MODEL.WNLB.MODE = "embedded"
    # "weighted": z = w * W_z(y) + (1 - w) * x (wNLB); "residual": z = x + W_z(y) (NLB).
    _C.MODEL.WNLB.FUSION = "weighted"
    # Whether the weight w of the weighted fusion is learned (else kept at WEIGHT_INIT).
    _C.MODEL.WNLB.LEARNABLE_WEIGHT = True
    # Initial w: one float for all stages, or a list with one float per entry of STAGES.
    # 0.0 makes every block the identity at initialisation.
    _C.MODEL.WNLB.WEIGHT_INIT = 0.0
    # Channels of theta/phi/g as a fraction of the stage's channels (0.5 as in Wang et al.).
    _C.MODEL.WNLB.INTER_CHANNELS_RATIO = 0.5
    # Norm after the W_z 1x1 conv: "BN", "SyncBN", "GN", "FrozenBN" or "none".
    _C.MODEL.WNLB.NORM = "BN"
    # "efficient": never builds the N x N affinity matrix (exact); "reference": plain O(N^2).
    _C.MODEL.WNLB.IMPL = "efficient"
    # Max-pool phi and g by 2 (Wang et al.'s sub-sampling): 4x fewer pairs, not exact.
    _C.MODEL.WNLB.SUB_SAMPLE = False


def _read_yaml(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file not found: {path}")
    with open(path, "r") as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError:
        # Stock configs such as Base-RetinaNet.yaml compute values with !!python/object tags;
        # detectron2's own merge_from_file loads them the same way (allow_unsafe=True).
        logger.warning(f"Loading config {path} with yaml.unsafe_load (it has Python tags).")
        data = yaml.unsafe_load(text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"Config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def _resolve(path, relative_to=None):
    if path.startswith(MODEL_ZOO_PREFIX):
        from detectron2 import model_zoo

        name = path[len(MODEL_ZOO_PREFIX):]
        try:
            return model_zoo.get_config_file(name)
        except RuntimeError as e:
            raise FileNotFoundError(f"Stock config {path!r} is not in detectron2's model zoo: {e}")
    path = os.path.expanduser(path)
    if relative_to is not None and not os.path.isabs(path):
        path = os.path.join(os.path.dirname(relative_to), path)
    return path


def _merge_dicts(src, dst):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge_dicts(v, dst[k])
        else:
            dst[k] = v


def _load_with_bases(path):
    data = _read_yaml(path)
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    merged = _load_with_bases(_resolve(base, relative_to=path))
    _merge_dicts(data, merged)
    return merged


def merge_from_file(cfg, path):
    """Merge a YAML config into ``cfg``, resolving ``_BASE_`` through detectron2's model zoo.

    Works like ``cfg.merge_from_file`` but also accepts ``model_zoo://<name>.yaml`` (as the file
    or as any ``_BASE_`` in its chain), so configs shipped here inherit the stock configs of the
    installed detectron2 without copying them.

    Args:
        cfg (CfgNode): target config, modified in place.
        path (str): a YAML file path or ``model_zoo://...`` name.

    Raises:
        FileNotFoundError: the file, or a base it names, does not exist.
        KeyError: the file sets a key that ``cfg`` does not have.
    """
    resolved = _resolve(path)
    data = _load_with_bases(resolved)
    cfg.merge_from_other_cfg(type(cfg)(data))
    return cfg
