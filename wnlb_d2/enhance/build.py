"""Building enhancers by name (``"nlm+clahe"``) or from ``INPUT.ENHANCER``."""

import logging

from detectron2.utils.registry import Registry

from ..utils.registry import build_from_section, build_named, constructor_arguments, lookup, registered_names
from .base import EnhancerChain
from .classical import Clahe, GammaCorrection, HistogramEqualization, NonLocalMeans
from .agllnet import AGLLNetEnhancer
from .enlightengan import EnlightenGANEnhancer
from .retinexformer import RetinexFormerEnhancer
from .zero_dce import ZeroDCEEnhancer

__all__ = ["ENHANCER_REGISTRY", "ENHANCERS", "enhancer_names", "build_enhancer", "build_enhancer_from_config",
           "parse_enhancer_name", "enhancer_arguments", "enhancer_enabled"]

logger = logging.getLogger(__name__)

ENHANCER_REGISTRY = Registry("ENHANCER")
ENHANCER_REGISTRY.__doc__ = """
Registry of image enhancers: :class:`~wnlb_d2.enhance.base.Enhancer` subclasses, selected by
their ``name`` in ``INPUT.ENHANCER.NAME`` (alone or chained with "+"); their constructor's
keyword arguments are the keys of ``INPUT.ENHANCER.<NAME>`` upper-cased (a section that is
absent keeps the defaults). Register your own with ``@ENHANCER_REGISTRY.register()``.
"""
for _cls in (GammaCorrection, Clahe, HistogramEqualization, NonLocalMeans, ZeroDCEEnhancer, RetinexFormerEnhancer,
             EnlightenGANEnhancer, AGLLNetEnhancer):
    ENHANCER_REGISTRY.register(_cls)

#: The built-in single enhancers; :func:`enhancer_names` also lists those registered by users.
ENHANCERS = ("gamma", "clahe", "histeq", "nlm", "zero_dce", "retinexformer", "enlightengan", "agllnet")

_KIND = "enhancer"


def enhancer_names():
    """Names of every registered enhancer (built-in first)."""
    return registered_names(ENHANCER_REGISTRY)


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
    names = enhancer_names()
    unknown = [p for p in parts if p not in names]
    if unknown:
        raise ValueError(f"{where} = {name!r}: unknown enhancer(s) {unknown}; expected 'none', one of "
                         f"{list(names)}, or several joined by '+' (applied left to right), e.g. 'nlm+clahe'")
    return parts


def enhancer_arguments(name):
    """Constructor arguments of single enhancer ``name``; ``INPUT.ENHANCER.<NAME>`` has them upper-cased."""
    parse_enhancer_name(name)
    return constructor_arguments(lookup(ENHANCER_REGISTRY, name, _KIND, "enhancer_arguments"))


def _chain(built):
    return None if not built else built[0] if len(built) == 1 else EnhancerChain(built)


def build_enhancer(name, params=None):
    """Build an enhancer (or a chain of them) by name.

    Args:
        name (str): "none", a registered name (:func:`enhancer_names`), or a chain such as "nlm+clahe".
        params (dict or None): single enhancer name -> keyword arguments, e.g.
            ``{"clahe": {"clip_limit": 3.0}, "zero_dce": {"weights": "Epoch99.pth"}}``.

    Returns:
        Enhancer or None: None for "none".

    Raises:
        ValueError: unknown name or argument, or a bad value (the message names it).
    """
    params = params or {}
    parts = parse_enhancer_name(name)
    return _chain([build_named(ENHANCER_REGISTRY, part, dict(params.get(part, {})), _KIND, "build_enhancer")
                   for part in parts])


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
    enhancer = _chain([build_from_section(ENHANCER_REGISTRY, part, node.get(part.upper()),
                                          f"INPUT.ENHANCER.{part.upper()}", _KIND, "INPUT.ENHANCER.NAME")
                       for part in parts])
    if enhancer is not None:
        logger.info(f"Enhancer: {enhancer!r}")
    return enhancer
