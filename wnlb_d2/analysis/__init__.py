"""Measuring what the non-local blocks do to the features: feature denoising as a number.

* :mod:`.feature_error`: the normalised feature error (NFE) of a dark image's features against
  its clean counterpart's, the blocks' non-local share, per-image summaries;
* :mod:`.clean_pairs`: which clean image belongs to each test image (on-the-fly degradation,
  offline synthetic copies, LIS's real pairs);
* :mod:`.detectron2_features`: both numbers for a detectron2 model on a registered dataset.
"""

from .clean_pairs import CLEAN_PAIRINGS, NoCleanCounterpartError, clean_pairs
from .feature_error import nonlocal_share, normalised_feature_error, summarise_per_image

__all__ = ["normalised_feature_error", "nonlocal_share", "summarise_per_image", "clean_pairs",
           "CLEAN_PAIRINGS", "NoCleanCounterpartError"]
