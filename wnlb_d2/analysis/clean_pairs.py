"""Which clean image belongs to each low-light test image (for the normalised feature error).

Three kinds of test set have clean counterparts:

* a normal-light dataset degraded on the fly (``INPUT.LOW_LIGHT.TEST``): each image is its own
  clean counterpart, darkened by the evaluation's deterministic degradation;
* an offline synthetic copy (``wnlb_demo_val_lowlight``, ``coco_2017_val_lowlight``): its
  metadata names the normal-light dataset (``clean_counterpart``) whose records share its
  ``image_id`` (``clean_pairing = "image_id"``);
* LIS's dark images: ``lis_<split>_dark`` names ``lis_<split>_normal``; a dark image is its
  normal twin's number plus one (``clean_pairing = "lis"``, the authors' naming).

Real low-light sets without pairs (ExDark) have none: :class:`NoCleanCounterpartError`.
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["CLEAN_PAIRINGS", "NoCleanCounterpartError", "clean_pairs", "has_clean_counterpart"]


def _lis_number(record):
    return int(os.path.splitext(os.path.basename(record["file_name"]))[0])


#: Pairing name -> (key of a dark record, key of a clean record): records with equal keys pair.
CLEAN_PAIRINGS = {
    "image_id": (lambda r: r["image_id"], lambda r: r["image_id"]),
    # LIS: dark image 2n's twin is normal image 2n - 1 (see wnlb_d2.data.datasets.lis).
    "lis": (lambda r: _lis_number(r) - 1, _lis_number),
}


class NoCleanCounterpartError(ValueError):
    """A test set whose images have no clean counterparts (the NFE cannot be computed)."""


def has_clean_counterpart(dataset, degraded_on_the_fly):
    """Whether :func:`clean_pairs` can pair ``dataset``'s images (without loading anything)."""
    return bool(degraded_on_the_fly or MetadataCatalog.get(dataset).get("clean_counterpart", None))


def clean_pairs(dataset, *, degraded_on_the_fly, num_images=None):
    """The first ``num_images`` (dark record, clean record) pairs of a registered test set.

    Args:
        dataset (str): the low-light test set (registered).
        degraded_on_the_fly (bool): the test images are degraded by the evaluation (then each
            record is its own clean counterpart).
        num_images (int or None): at most this many pairs, in the dataset's order (None: all).

    Returns:
        list[tuple[dict, dict]]: dataset records; with ``degraded_on_the_fly`` both are the same
        record (the caller degrades the first).

    Raises:
        NoCleanCounterpartError: the dataset has no clean counterpart, or none of its images
            has a twin in it.
    """
    records = DatasetCatalog.get(dataset)
    if degraded_on_the_fly:
        return [(r, r) for r in records[:num_images]]
    meta = MetadataCatalog.get(dataset)
    counterpart = meta.get("clean_counterpart", None)
    if not counterpart:
        raise NoCleanCounterpartError(
            f"{dataset}: no clean counterpart (its images are not degraded on the fly and its metadata "
            "names no 'clean_counterpart' dataset), so the normalised feature error is not computed")
    pairing = meta.get("clean_pairing", "image_id")
    if pairing not in CLEAN_PAIRINGS:
        raise ValueError(f"{dataset}: metadata clean_pairing {pairing!r} is unknown; expected one of "
                         f"{tuple(CLEAN_PAIRINGS)}")
    dark_key, clean_key = CLEAN_PAIRINGS[pairing]
    clean = {clean_key(r): r for r in DatasetCatalog.get(counterpart)}
    pairs = [(r, clean[dark_key(r)]) for r in records if dark_key(r) in clean]
    if not pairs:
        raise NoCleanCounterpartError(f"{dataset}: none of its {len(records)} images has a twin in "
                                      f"{counterpart} (pairing {pairing!r})")
    return pairs[:num_images]
