"""Building enhancers by name (``"nlm+clahe"``) or from ``INPUT.ENHANCER``."""

import inspect
import logging

from ..data.synthesis.common import ParameterError
from .base import EnhancerChain
from .classical import Clahe, GammaCorrection, HistogramEqualization, NonLocalMeans
from .zero_dce import ZeroDCEEnhancer

__all__ = ["ENHANCERS", "build_enhancer", "build_enhancer_from_config", "parse_enhancer_name",
           "enhancer_arguments", "enhancer_enabled"]

logger = logging.getLogger(__name__)

_CLASSES = {cls.name: cls for cls in (GammaCorrection, Clahe, HistogramEqualization, NonLocalMeans, ZeroDCEEnhancer)}

#: Single enhancers; ``INPUT.ENHANCER.NAME`` is "none", one of these, or several joined by "+".
ENHANCERS = tuple(_CLASSES)


def parse_enhancer_name(name, where="enhancer name"):
    """Split ``"nlm+clahe"`` into ``["nlm", "clahe"]``; ``"none"`` gives ``[]``.

    Raises:
        ValueError: an unknown part; the message names ``where`` and lists the choices.
    """
    if not isinstance(name, str):
        raise ValueError(f"{where}: expected a string, got {name!r}")
    if name.strip().lower() == "none" or not name.strip():
        return []
    parts = [p.strip().lower() for p in name.split("+")]
    unknown = [p for p in parts if p not in _CLASSES]
    if unknown:
        raise ValueError(f"{where} = {name!r}: unknown enhancer(s) {unknown}; expected 'none', one of "
                         f"{list(ENHANCERS)}, or several joined by '+' (applied left to right), e.g. 'nlm+clahe'")
    return parts


def enhancer_arguments(name):
    """Constructor arguments of single enhancer ``name``; ``INPUT.ENHANCER.<NAME>`` has them upper-cased."""
    parse_enhancer_name(name)
    return tuple(p for p in inspect.signature(_CLASSES[name].__init__).parameters if p != "self")


def build_enhancer(name, params=None):
    """Build an enhancer (or a chain of them) by name.

    Args:
        name (str): "none", one of :data:`ENHANCERS`, or a chain such as "nlm+clahe".
        params (dict or None): single enhancer name -> keyword arguments, e.g.
            ``{"clahe": {"clip_limit": 3.0}, "zero_dce": {"weights": "Epoch99.pth"}}``.

    Returns:
        Enhancer or None: None for "none".

    Raises:
        ValueError: unknown name or argument, or a bad value (the message names it).
    """
    params = params or {}
    parts = parse_enhancer_name(name)
    if not parts:
        return None
    built = []
    for part in parts:
        kwargs = dict(params.get(part, {}))
        unknown = sorted(set(kwargs) - set(enhancer_arguments(part)))
        if unknown:
            raise ValueError(f"enhancer {part!r}: unknown parameter(s) {unknown}, expected some of "
                             f"{list(enhancer_arguments(part))}")
        built.append(_CLASSES[part](**kwargs))
    return built[0] if len(built) == 1 else EnhancerChain(built)


def enhancer_enabled(cfg, is_train):
    """Whether ``cfg`` asks for an enhancer in training (``is_train``) or evaluation."""
    if "ENHANCER" not in cfg.INPUT:
        return False
    node = cfg.INPUT.ENHANCER
    return bool(parse_enhancer_name(node.NAME, "INPUT.ENHANCER.NAME")) and bool(node.TRAIN if is_train else node.TEST)


def build_enhancer_from_config(cfg):
    """Build the enhancer that ``cfg.INPUT.ENHANCER`` selects, with its configured parameters.

    Args:
        cfg (CfgNode): a config with the node added by :func:`wnlb_d2.config.add_enhancer_config`.

    Returns:
        Enhancer or None: None when ``NAME`` is "none".

    Raises:
        ValueError: a bad ``NAME`` or parameter; the message names the full key, e.g.
            ``INPUT.ENHANCER.CLAHE.CLIP_LIMIT``.
    """
    node = cfg.INPUT.ENHANCER
    parts = parse_enhancer_name(node.NAME, "INPUT.ENHANCER.NAME")
    built = []
    for part in parts:
        section = part.upper()
        values = node.get(section, {})
        expected = {a.upper(): a for a in enhancer_arguments(part)}
        unknown = sorted(set(values) - set(expected))
        if unknown:
            raise ValueError(f"INPUT.ENHANCER.{section}: unknown key(s) {unknown}, expected some of {sorted(expected)}")
        try:
            built.append(build_enhancer(part, {part: {expected[k]: v for k, v in values.items()}}))
        except ParameterError as e:
            raise ValueError(f"INPUT.ENHANCER.{section}.{e.key.upper()}: {e.detail}") from e
    enhancer = None if not built else built[0] if len(built) == 1 else EnhancerChain(built)
    if enhancer is not None:
        logger.info(f"Enhancer: {enhancer!r}")
    return enhancer
