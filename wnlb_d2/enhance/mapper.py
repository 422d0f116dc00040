"""The data mapper of the two-stage baselines: degrade (optionally), enhance, then map as usual."""

import logging

from detectron2.config import configurable

from ..data.mapper import LowLightDatasetMapper
from .build import build_enhancer_from_config, enhancer_enabled

__all__ = ["EnhancedDatasetMapper", "DegradeThenEnhance", "build_low_light_mapper"]

logger = logging.getLogger(__name__)


class DegradeThenEnhance:
    """A pipeline stage for :class:`LowLightDatasetMapper`: the low-light pipeline, then an enhancer.

    It has the pipeline interface ``(image, rng, input_format) -> (image, params)``, so the
    mapper applies it at the same place (right after reading, at native resolution, before
    any augmentation): the enhancer sees the image as a camera would deliver it.

    Args:
        pipeline (LowLightPipeline or None): None when the images are low-light already.
        enhancer (Enhancer): the enhancer.
    """

    def __init__(self, pipeline, enhancer):
        self.pipeline = pipeline
        self.enhancer = enhancer

    def __call__(self, image, rng, input_format="BGR"):
        """
        Returns:
            tuple[np.ndarray, dict]: the enhanced uint8 (H, W, 3) image in ``input_format``, and
            the pipeline's parameters (empty without one) plus ``"enhancer"`` (its name).
        """
        params = {}
        if self.pipeline is not None:
            image, params = self.pipeline(image, rng, input_format)
        image = self.enhancer(image, input_format)
        params["enhancer"] = self.enhancer.name
        return image, params

    def __repr__(self):
        first = repr(self.pipeline) if self.pipeline is not None else "no degradation"
        return f"{first}, then enhancer {self.enhancer!r}"


class EnhancedDatasetMapper(LowLightDatasetMapper):
    """:class:`LowLightDatasetMapper` with an image enhancer after the degradation.

    Everything else (reading, seeding, augmentation, annotations) is the parent's. The output's
    ``"low_light_params"`` holds the degradation's parameters and ``"enhancer"``.

    Attributes:
        enhancer (Enhancer): the enhancer.
        low_light_pipeline (LowLightPipeline or None): the degradation alone.
    """

    @configurable
    def __init__(self, is_train, *, enhancer, pipeline=None, **kwargs):
        """
        Args:
            is_train (bool): as :class:`LowLightDatasetMapper`.
            enhancer (Enhancer): applied to every image (required; use
                :class:`LowLightDatasetMapper` for none).
            pipeline (LowLightPipeline or None): the low-light degradation applied first.
            **kwargs: the other arguments of :class:`LowLightDatasetMapper`.
        """
        if enhancer is None:
            raise ValueError("EnhancedDatasetMapper needs an enhancer; use LowLightDatasetMapper without one")
        self.enhancer = enhancer
        self.low_light_pipeline = pipeline
        super().__init__(is_train, pipeline=DegradeThenEnhance(pipeline, enhancer), **kwargs)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        ret["enhancer"] = build_enhancer_from_config(cfg)
        return ret


def build_low_light_mapper(cfg, is_train):
    """The mapper ``cfg`` asks for: :class:`EnhancedDatasetMapper` when ``INPUT.ENHANCER`` selects
    an enhancer for this phase (``TRAIN`` / ``TEST``), else :class:`LowLightDatasetMapper`."""
    if enhancer_enabled(cfg, is_train):
        return EnhancedDatasetMapper(cfg, is_train=is_train)
    return LowLightDatasetMapper(cfg, is_train=is_train)
