"""Low-light synthesis: turn well-lit uint8 images into synthetic low-light ones.

Two pipelines (see ``docs/synthesis.md``):

- ``"lv2021"``: gamma/scale darkening + CBDNet-style in-camera noise (Lv et al. 2021), the
  recipe of the wNLB paper's low-light COCO;
- ``"unprocess"``: physics-based sensor model (Brooks et al. 2019, as used by MAET).

Every draw comes from an explicit ``numpy.random.Generator``; :func:`eval_rng` gives the one
for an evaluation image, the same in every run, process and rank.
"""

import logging

from detectron2.utils.registry import Registry

from ...utils.registry import build_from_section, build_named, constructor_arguments, lookup, registered_names
from .common import LowLightPipeline, eval_rng
from .lv2021 import Lv2021Pipeline
from .unprocess import UnprocessPipeline

__all__ = ["LOW_LIGHT_PIPELINE_REGISTRY", "PIPELINES", "pipeline_names", "LowLightPipeline", "Lv2021Pipeline",
           "UnprocessPipeline", "build_pipeline", "build_pipeline_from_config", "eval_rng", "pipeline_arguments"]

logger = logging.getLogger(__name__)

LOW_LIGHT_PIPELINE_REGISTRY = Registry("LOW_LIGHT_PIPELINE")
LOW_LIGHT_PIPELINE_REGISTRY.__doc__ = """
Registry of low-light synthesis pipelines: :class:`LowLightPipeline` subclasses, selected by
their ``name`` in ``INPUT.LOW_LIGHT.PIPELINE``; their constructor's keyword arguments are the
keys of ``INPUT.LOW_LIGHT.<NAME>`` upper-cased (a section that is absent keeps the defaults).
Register your own with ``@LOW_LIGHT_PIPELINE_REGISTRY.register()``.
"""
LOW_LIGHT_PIPELINE_REGISTRY.register(Lv2021Pipeline)
LOW_LIGHT_PIPELINE_REGISTRY.register(UnprocessPipeline)

#: The built-in pipelines' names; :func:`pipeline_names` also lists those registered by users.
PIPELINES = ("lv2021", "unprocess")

_KIND = "low-light pipeline"


def pipeline_names():
    """Names of every registered pipeline (built-in first)."""
    return registered_names(LOW_LIGHT_PIPELINE_REGISTRY)


def pipeline_arguments(name):
    """The keyword arguments (parameter names) that pipeline ``name`` accepts.

    Returns:
        tuple[str]: in constructor order; ``INPUT.LOW_LIGHT.<NAME>`` has the same keys upper-cased.
    """
    return constructor_arguments(lookup(LOW_LIGHT_PIPELINE_REGISTRY, name, _KIND, "pipeline_arguments"))


def build_pipeline(name, **overrides):
    """Build a pipeline by name, with default ranges except those given.

    Args:
        name (str): a registered name (:func:`pipeline_names`).
        **overrides: constructor arguments, e.g. ``gamma=(2.0, 3.0)``.

    Returns:
        LowLightPipeline

    Raises:
        ValueError: unknown name or argument (the message lists the allowed ones), or a bad
            value (the message names the argument).
    """
    return build_named(LOW_LIGHT_PIPELINE_REGISTRY, name, overrides, _KIND, "build_pipeline")


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
    section = str(name).upper()
    # YAML gives lists where the defaults are tuples; the checks accept both.
    pipeline = build_from_section(LOW_LIGHT_PIPELINE_REGISTRY, name, node.get(section), f"INPUT.LOW_LIGHT.{section}",
                                  _KIND, "INPUT.LOW_LIGHT.PIPELINE")
    logger.info(f"Low-light pipeline: {pipeline!r}")
    return pipeline
