"""Low-light synthesis: turn well-lit uint8 images into synthetic low-light ones.

Two pipelines (see ``docs/synthesis.md``):

- ``"lv2021"``: gamma/scale darkening + CBDNet-style in-camera noise (Lv et al. 2021), the
  recipe of the wNLB paper's low-light COCO;
- ``"unprocess"``: physics-based sensor model (Brooks et al. 2019, as used by MAET).

Every draw comes from an explicit ``numpy.random.Generator``; :func:`eval_rng` gives the one
for an evaluation image, the same in every run, process and rank.
"""

import inspect
import logging

from .common import LowLightPipeline, ParameterError, eval_rng
from .lv2021 import Lv2021Pipeline
from .unprocess import UnprocessPipeline

__all__ = ["PIPELINES", "LowLightPipeline", "Lv2021Pipeline", "UnprocessPipeline", "build_pipeline",
           "build_pipeline_from_config", "eval_rng", "pipeline_arguments"]

logger = logging.getLogger(__name__)

_CLASSES = {cls.name: cls for cls in (Lv2021Pipeline, UnprocessPipeline)}

#: Names accepted by :func:`build_pipeline` and ``INPUT.LOW_LIGHT.PIPELINE``.
PIPELINES = tuple(_CLASSES)


def _check_name(name, where):
    if name not in _CLASSES:
        raise ValueError(f"{where}: unknown low-light pipeline {name!r}, expected one of {PIPELINES}")
    return _CLASSES[name]


def pipeline_arguments(name):
    """The keyword arguments (parameter names) that pipeline ``name`` accepts.

    Returns:
        tuple[str]: in constructor order; ``INPUT.LOW_LIGHT.<NAME>`` has the same keys upper-cased.
    """
    cls = _check_name(name, "pipeline_arguments")
    return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")


def build_pipeline(name, **overrides):
    """Build a pipeline by name, with default ranges except those given.

    Args:
        name (str): one of :data:`PIPELINES`.
        **overrides: constructor arguments, e.g. ``gamma=(2.0, 3.0)``.

    Returns:
        LowLightPipeline

    Raises:
        ValueError: unknown name or argument (the message lists the allowed ones), or a bad
            value (the message names the argument).
    """
    cls = _check_name(name, "build_pipeline")
    allowed = pipeline_arguments(name)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"build_pipeline({name!r}): unknown parameter(s) {unknown}, "
                         f"expected some of {list(allowed)}")
    return cls(**overrides)


def build_pipeline_from_config(cfg):
    """Build the pipeline that ``cfg.INPUT.LOW_LIGHT`` selects, with its configured ranges.

    Args:
        cfg (CfgNode): a config with the node added by
            :func:`wnlb_d2.config.add_low_light_input_config`.

    Returns:
        LowLightPipeline

    Raises:
        ValueError: bad ``PIPELINE`` or a bad range; the message names the full config key,
            e.g. ``INPUT.LOW_LIGHT.LV2021.GAMMA``.
    """
    node = cfg.INPUT.LOW_LIGHT
    name = node.PIPELINE
    _check_name(name, "INPUT.LOW_LIGHT.PIPELINE")
    section = name.upper()
    values = node[section]
    expected = {a.upper(): a for a in pipeline_arguments(name)}
    unknown = sorted(set(values) - set(expected))
    if unknown:
        raise ValueError(f"INPUT.LOW_LIGHT.{section}: unknown key(s) {unknown}, "
                         f"expected some of {sorted(expected)}")
    # YAML gives lists where the defaults are tuples; the checks accept both.
    kwargs = {expected[k]: v for k, v in values.items()}
    try:
        pipeline = build_pipeline(name, **kwargs)
    except ParameterError as e:
        raise ValueError(f"INPUT.LOW_LIGHT.{section}.{e.key.upper()}: {e.detail}") from e
    logger.info(f"Low-light pipeline: {pipeline!r}")
    return pipeline
