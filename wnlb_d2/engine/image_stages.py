"""The image stages the data mapper and the predictor run: low-light degradation, then enhancement.

:func:`build_image_stages` reads the config once for everything that sees images (training
and test loaders, ``tools/demo.py``), so the demo's pictures are what the model was evaluated
on: ``INPUT.LOW_LIGHT`` (when enabled for the phase) degrades, ``INPUT.ENHANCER`` (when it
selects an enhancer for the phase) enhances the result (the paper's two-stage baselines).
"""

import logging

from ..data.mapper import LowLightDatasetMapper
from ..data.synthesis import build_pipeline_from_config
from ..enhance.build import build_enhancer_from_config, enhancer_enabled

__all__ = ["EnhancerStage", "build_image_stages", "build_low_light_mapper"]

logger = logging.getLogger(__name__)


class EnhancerStage:
    """An enhancer as an image stage: ``(image, rng, input_format) -> (image, {"enhancer": name})``.

    Enhancers draw nothing at random; ``rng`` is accepted (and ignored) so every stage has one
    signature.

    Args:
        enhancer (Enhancer): the enhancer (or chain).
    """

    def __init__(self, enhancer):
        self.enhancer = enhancer

    def __call__(self, image, rng, input_format="BGR"):
        return self.enhancer(image, input_format), {"enhancer": self.enhancer.name}

    def __repr__(self):
        return f"enhancer {self.enhancer!r}"


def build_image_stages(cfg, is_train, *, low_light=None):
    """The stages ``cfg`` asks for in training (``is_train``) or evaluation, in order.

    Args:
        cfg (CfgNode): with ``INPUT.LOW_LIGHT`` and ``INPUT.ENHANCER``.
        is_train (bool): which phase's switches (``TRAIN`` / ``TEST``) apply.
        low_light (bool or None): force the degradation on or off (the demo tool's
            ``--low-light``); None follows ``INPUT.LOW_LIGHT.ENABLED`` and the phase's switch.

    Returns:
        list[callable]: the low-light pipeline and/or an :class:`EnhancerStage`.
    """
    node = cfg.INPUT.LOW_LIGHT
    degrade = (node.ENABLED and (node.TRAIN if is_train else node.TEST)) if low_light is None else low_light
    stages = [build_pipeline_from_config(cfg)] if degrade else []
    if enhancer_enabled(cfg, is_train):
        stages.append(EnhancerStage(build_enhancer_from_config(cfg)))
    return stages


def build_low_light_mapper(cfg, is_train):
    """The trainer's mapper: :class:`LowLightDatasetMapper` with :func:`build_image_stages`."""
    return LowLightDatasetMapper(cfg, is_train=is_train, image_stages=build_image_stages(cfg, is_train))
