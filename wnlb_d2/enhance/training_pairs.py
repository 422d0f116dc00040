"""Exact (dark, clean) training pairs for the supervised enhancers, made by a synthesis pipeline.

RetinexFormer and AGLLNet are trained on aligned pairs. The synthetic pipelines give them
exactly: the clean image is the normal-light photo, the dark one is the same photo degraded with
the evaluation seeding (``eval_rng(seed, basename)``), so a training run is reproducible and the
same image is degraded the same way in every run.
"""

import logging
import os

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..data.image_io import ImageReadError, read_image
from ..data.synthesis import eval_rng

__all__ = ["load_training_pairs", "load_registered_pairs", "readable_rgb_images", "square_tensor"]

logger = logging.getLogger(__name__)


def _to_tensor(rgb):
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)


def square_tensor(rgb, size):
    """Resize an ``(H, W, 3)`` uint8 image to ``size x size`` by area interpolation (it averages
    the noise down as a low-resolution camera would) and return it as a ``(3, size, size)`` uint8 tensor."""
    return _to_tensor(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))


def readable_rgb_images(paths, failed, *, desc, progress=True):
    """Read each file as RGB, with a progress bar; a file that cannot be read is skipped.

    Args:
        paths (list[str]): image files.
        failed (list[str]): unreadable files are appended here (each with a warning).
        desc (str): the progress bar's label.
        progress (bool): show the progress bar.

    Yields:
        tuple[str, np.ndarray]: the path and its ``(H, W, 3)`` uint8 RGB image.
    """
    for path in tqdm(paths, desc=desc, unit="img", disable=not progress):
        try:
            rgb = read_image(path, format="RGB")
        except ImageReadError as e:
            logger.warning(str(e))
            failed.append(path)
            continue
        yield path, rgb


def load_training_pairs(paths, pipeline, *, size=128, seed=0, progress=True):
    """Read normal-light images, degrade each, and resize both to ``size x size``.

    The degradation runs at the image's own resolution (as on the fly in training); both images
    are then resized with area interpolation, which averages the noise down as a lower
    resolution camera would, identically for the pair.

    Args:
        paths (list[str]): normal-light image files.
        pipeline (LowLightPipeline): the degradation (required: it makes the pairs).
        size (int): side of the square training images (>= 8).
        seed (int): seed of the degradation.
        progress (bool): show a progress bar.

    Returns:
        tuple[Tensor, Tensor, list[str]]: dark and clean RGB images in [0, 1], each
        ``(N, 3, size, size)`` float32, and the files that could not be read (skipped with a
        warning).

    Raises:
        ValueError: no pipeline, a bad size, or no image could be read.
    """
    if pipeline is None:
        raise ValueError("load_training_pairs: a low-light pipeline is required to make (dark, clean) pairs")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"load_training_pairs: size must be an int >= 8, got {size!r}")
    dark, clean, failed = [], [], []
    for path, rgb in readable_rgb_images(paths, failed, desc="making pairs", progress=progress):
        low, _ = pipeline(rgb, eval_rng(seed, os.path.basename(path)), "RGB")
        dark.append(square_tensor(low, size))
        clean.append(square_tensor(rgb, size))
    if not dark:
        raise ValueError(f"None of the {len(paths)} training image(s) could be read")
    return torch.stack(dark).float() / 255.0, torch.stack(clean).float() / 255.0, failed


def load_registered_pairs(record_pairs, *, size=128, progress=True):
    """Read (dark, clean) pairs that exist as files: an offline synthetic copy and its source, or
    real pairs such as LIS's dark and normal twins (:func:`wnlb_d2.analysis.clean_pairs.clean_pairs`).

    Args:
        record_pairs (list[tuple[dict, dict]]): (dark record, clean record) with ``file_name``.
        size (int): side of the square training images (>= 8); both are resized with area
            interpolation.
        progress (bool): show a progress bar.

    Returns:
        tuple[Tensor, Tensor, list[str]]: dark and clean RGB images in [0, 1], each
        ``(N, 3, size, size)``, and the files that could not be read (their pair is skipped).

    Raises:
        ValueError: a bad size, or no pair could be read.
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"load_registered_pairs: size must be an int >= 8, got {size!r}")
    dark, clean, failed = [], [], []
    for dark_record, clean_record in tqdm(record_pairs, desc="reading pairs", unit="pair", disable=not progress):
        images = []
        for record in (dark_record, clean_record):
            try:
                images.append(read_image(record["file_name"], format="RGB"))
            except ImageReadError as e:
                logger.warning(str(e))
                failed.append(record["file_name"])
                break
        if len(images) < 2:
            continue
        dark.append(square_tensor(images[0], size))
        clean.append(square_tensor(images[1], size))
    if not dark:
        raise ValueError(f"None of the {len(record_pairs)} training pair(s) could be read")
    return torch.stack(dark).float() / 255.0, torch.stack(clean).float() / 255.0, failed
