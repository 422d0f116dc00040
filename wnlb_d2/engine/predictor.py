"""Inference on single images and video frames, with optional low-light degradation and enhancement.

:class:`LowLightPredictor` is detectron2's ``DefaultPredictor`` plus the two image stages of
this project, applied to each image before the model sees it:

1. ``low_light``: a synthesis pipeline (``INPUT.LOW_LIGHT``), to see on normal-light photos
   what the dark does; seeded per image with ``eval_rng(seed, key)`` (key: the file's base
   name, or ``"<video name>:<frame index>"``), so a re-run gives the same pictures;
2. ``INPUT.ENHANCER``: an image enhancer (the two-stage baselines).

:func:`expand_inputs` turns files, folders and globs into a list of image files; the pictures
are drawn by :mod:`wnlb_d2.visualization`.
"""

import glob
import hashlib
import logging
import os

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ..checkpoint import WNLBCheckpointer
from ..data.synthesis import eval_rng
from .image_stages import build_image_stages

__all__ = ["LowLightPredictor", "expand_inputs", "IMAGE_EXTENSIONS", "metadata_of", "backbone_opts_for_checkpoint"]

logger = logging.getLogger(__name__)

#: File extensions taken from a folder given as input (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand_inputs(inputs):
    """Expand files, folders (their images, sorted, not recursive) and glob patterns.

    Args:
        inputs (list[str]): what the user gave.

    Returns:
        tuple[list[str], list[tuple[str, str]]]: the files to process (in order, duplicates
        removed), and ``(input, reason)`` for every input that names nothing (a missing path,
        a glob without matches, a folder without images).
    """
    files, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, f)))
            if not found:
                problems.append((item, f"folder has no images ({', '.join(IMAGE_EXTENSIONS)})"))
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(os.path.expanduser(item)) if os.path.isfile(f))
            if not found:
                problems.append((item, "no file matches this pattern"))
        elif os.path.isfile(item):
            found = [item]
        else:
            problems.append((item, "no such file or folder"))
            found = []
        for f in found:
            if f not in files:
                files.append(f)
    return files, problems


def backbone_opts_for_checkpoint(cfg, weights):
    """Overrides that give a stock-backbone config the non-local blocks a checkpoint holds.

    Loading a wNLB checkpoint into a stock model would drop its blocks (with only a warning about
    unused tensors); with these overrides the model gets them: ``MODEL.BACKBONE.NAME`` becomes the
    wNLB builder and ``MODEL.WNLB.STAGES`` (and ``MODE`` where the keys tell) those of the file.
    The fusion cannot be read from a checkpoint: the config's ``MODEL.WNLB.FUSION`` is used.

    Args:
        cfg (CfgNode): the config the model would be built from.
        weights (str): ``MODEL.WEIGHTS``; only local files are inspected.

    Returns:
        list[str]: ``KEY VALUE`` overrides; empty when nothing needs to change.
    """
    from ..checkpoint import wnlb_layout_of_checkpoint
    from ..naming import WNLB_BACKBONES

    name = cfg.MODEL.BACKBONE.NAME
    if not weights or "://" in weights or not os.path.isfile(weights) or name not in WNLB_BACKBONES:
        return []
    layout = wnlb_layout_of_checkpoint(weights)
    if not layout["stages"]:
        return []
    opts = ["MODEL.BACKBONE.NAME", WNLB_BACKBONES[name], "MODEL.WNLB.STAGES", str(layout["stages"])]
    if layout["mode"]:
        opts += ["MODEL.WNLB.MODE", layout["mode"]]
    return opts


def metadata_of(cfg):
    """Metadata (class names) for drawing: that of ``DATASETS.TEST[0]``, else of the first train set."""
    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    return MetadataCatalog.get(names[0] if names else "__unused")


class LowLightPredictor:
    """Run a detectron2 model on one image at a time, after optional degradation and enhancement.

    Args:
        cfg (CfgNode): a full config; ``MODEL.WEIGHTS`` is loaded with :class:`WNLBCheckpointer`
            (empty: random initialisation, with a warning; a checkpoint that does not fit the
            backbone raises :class:`~wnlb_d2.checkpoint.CheckpointMismatchError`). ``INPUT.ENHANCER`` (when it selects
            an enhancer for evaluation) is applied after the degradation.
        low_light (str or None): synthesis pipeline name ("lv2021", "unprocess") or None; its
            ranges come from ``cfg.INPUT.LOW_LIGHT.<PIPELINE>``.
        seed (int or None): seed of the degradation; None: ``cfg.INPUT.LOW_LIGHT.SEED``.
    """

    def __init__(self, cfg, *, low_light=None, seed=None):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if cfg.MODEL.WEIGHTS:
            # strict_backbone: weights of another architecture fail loudly (CheckpointMismatchError,
            # a ValueError) instead of leaving a silently random backbone.
            WNLBCheckpointer(self.model, strict_backbone=True).load(cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the model is randomly initialised (predictions are noise)")
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("BGR", "RGB"):
            raise ValueError(f"LowLightPredictor: INPUT.FORMAT must be 'BGR' or 'RGB', got {self.input_format!r}")
        self.metadata = metadata_of(cfg)
        c = self.cfg.clone()
        c.defrost()
        if low_light:
            c.INPUT.LOW_LIGHT.PIPELINE = low_light
        # The evaluation stages of the config, with the degradation as --low-light says.
        self.stages = build_image_stages(c, is_train=False, low_light=bool(low_light))
        self.seed = cfg.INPUT.LOW_LIGHT.SEED if seed is None else seed

    def prepare(self, image_bgr, key=None):
        """Degrade and enhance one image as configured.

        Args:
            image_bgr (np.ndarray): uint8 (H, W, 3) BGR image.
            key (str or None): the image's key for :func:`eval_rng` (file base name, or
                "video:frame"); None: a digest of the image's bytes (the same image gives the same
                degradation in every run).

        Returns:
            dict[str, np.ndarray]: the BGR images of every stage in order: ``"input"``, then
            ``"low-light"`` and/or ``"enhanced (<name>)"`` when configured; the last one is what
            the model sees.
        """
        out = {"input": image_bgr}
        if key is None and self.stages:
            key = hashlib.sha1(np.ascontiguousarray(image_bgr).tobytes()).hexdigest()[:16]
        image, rng = image_bgr, eval_rng(self.seed, key)
        for stage in self.stages:
            image, params = stage(image, rng, "BGR")
            out[f"enhanced ({params['enhancer']})" if "enhancer" in params else "low-light"] = image
        return out

    def predict(self, image_bgr):
        """Run the model on one image (no degradation or enhancement).

        Args:
            image_bgr (np.ndarray): uint8 (H, W, 3) BGR image.

        Returns:
            dict: the model's output for it, e.g. ``{"instances": Instances}`` on the CPU, in the
            image's own resolution.
        """
        with torch.no_grad():
            image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
            h, w = image.shape[:2]
            resized = self.aug.get_transform(image).apply_image(image)
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).to(self.cfg.MODEL.DEVICE)
            out = self.model([{"image": tensor, "height": h, "width": w}])[0]
        return {k: v.to("cpu") if hasattr(v, "to") else v for k, v in out.items()}

    def __call__(self, original_image, key=None):
        """Degrade, enhance and predict one image, called as detectron2's ``DefaultPredictor``.

        Args:
            original_image (np.ndarray): uint8 (H, W, 3) BGR image.
            key (str or None): the image's degradation key (see :meth:`prepare`).

        Returns:
            dict: the model's output for the image (``{"instances": Instances}``), as
            ``DefaultPredictor`` returns it.
        """
        return self.run(original_image, key)[1]

    def run(self, image_bgr, key=None):
        """Prepare and predict one image, keeping what each image stage made (for drawing them).

        Returns:
            tuple[dict[str, np.ndarray], dict]: the stages (see :meth:`prepare`) and the output.
        """
        stages = self.prepare(image_bgr, key)
        return stages, self.predict(list(stages.values())[-1])
