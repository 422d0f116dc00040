"""Data: low-light synthesis, image reading and the low-light dataset mapper."""

from .image_io import ImageReadError, read_image
from .mapper import LowLightDatasetMapper
from .synthesis import (PIPELINES, LowLightPipeline, Lv2021Pipeline, UnprocessPipeline,
                        build_pipeline, build_pipeline_from_config, eval_rng)

__all__ = ["ImageReadError", "read_image", "LowLightDatasetMapper", "PIPELINES", "LowLightPipeline",
           "Lv2021Pipeline", "UnprocessPipeline", "build_pipeline", "build_pipeline_from_config",
           "eval_rng"]

from . import datasets  # noqa: F401,E402  (registers the datasets by name)
