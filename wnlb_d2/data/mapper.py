"""A detectron2 dataset mapper that runs image stages (low-light degradation, enhancement) on the fly."""

import collections
import copy
import logging
import os

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils import comm

from ..utils.allocator import tune_allocator
from .image_io import READ_FORMATS, ImageReadError, read_image
from .synthesis import LowLightPipeline, build_pipeline_from_config, eval_rng
from .device_path import DEVICE_KEY, ShapeOnlyAugInput, geometric_steps
from .synthesis.common import NOISE_SOURCES
from .synthesis.torch_render import supports_torch

__all__ = ["LowLightDatasetMapper", "worker_error_message"]

logger = logging.getLogger(__name__)


class LowLightDatasetMapper(DatasetMapper):
    """:class:`~detectron2.data.DatasetMapper` that passes the image through a list of image stages.

    An image stage is a callable ``(image, rng, input_format) -> (image, params)`` on uint8
    (H, W, 3) images: a low-light pipeline (:class:`~wnlb_d2.data.synthesis.LowLightPipeline`)
    or an enhancer stage (:class:`wnlb_d2.engine.image_stages.EnhancerStage`). The engine builds
    the list from the config (:func:`wnlb_d2.engine.image_stages.build_image_stages`: degrade,
    then enhance); ``from_config`` alone gives the degradation only.

    Only the image changes: boxes, masks, keypoints and semantic labels are mapped exactly as
    by ``DatasetMapper`` with the same augmentations. The stages run right after reading,
    before any augmentation, because the degradation models the sensor at its native
    resolution: noise and the Bayer mosaic are per-pixel effects of the camera, and resizing
    afterwards smooths them the way a downscaled low-light photo is smoothed (and an enhancer
    sees the image as a camera would deliver it).

    The stages' parameters are added to the output as ``dataset_dict["low_light_params"]``.

    Randomness:

    - training: a fresh draw per image every time it is loaded, from a generator created
      lazily in each process (so forked data-loader workers never share a state) and seeded
      from ``train_seed`` (or OS entropy), ``torch.initial_seed()`` (which differs per worker
      and per data-loader iterator), the worker id and the rank;
    - evaluation: ``eval_rng(eval_seed, key)`` with key the ``image_id`` (the COCO id of the
      annotation JSON; else the file's base name): the same degradation of the same image in
      every run, on every rank and with any number of workers. It is the key
      :func:`wnlb_d2.data.prepare.prepare_lowlight` renders offline copies with, and it does
      not depend on where the set is registered from (a file name would: the mapper only sees
      absolute paths), so a normal-light set degraded here and its prepared low-light copy are
      one test set.

    Each process that maps images applies :func:`wnlb_d2.utils.allocator.tune_allocator` on its
    first image (glibc's allocator keeps image-sized arrays instead of returning them to the
    kernel after every image).

    Images are read with :func:`wnlb_d2.data.image_io.read_image` (clear errors for bad files,
    logged conversions of grey/16-bit/alpha/CMYK images).

    Unreadable images (``DATALOADER.SKIP_UNREADABLE_IMAGES``, default False):

    - False: :class:`~wnlb_d2.data.image_io.ImageReadError` naming the file stops the run
      (:func:`worker_error_message` makes it one line when a data-loader worker raised it);
    - True, training: a warning naming the file and the count skipped so far (per process),
      and one of the last 16 images this process read well is mapped instead (a fresh
      degradation of it), so the batch stays full; before any image was read well, a blank
      image without objects. (Returning ``None`` would ask detectron2's ``MapDataset`` to
      retry another index, but in v0.6 and main that calls ``random.sample`` on a set, a
      TypeError on Python >= 3.11.)
    - True, evaluation: ``None`` would make the same ``MapDataset`` evaluate a random other
      image twice in its place (duplicate predictions, a silently wrong AP), so the image is
      replaced by a blank (black) one of its annotated size, marked
      ``dataset_dict["unreadable"]`` (the error), with the same warning. COCOEvaluator keeps
      the image: its objects count as missed (and any prediction on the blank as a false
      positive), so the AP is a lower bound over the same images and ground truth as every
      other run, never an evaluation on fewer images.
    """

    @configurable
    def __init__(self, is_train, *, image_stages=None, pipeline=None, eval_seed=0, train_seed=-1,
                 train_noise="torch", on_device=False, skip_unreadable=False, **kwargs):
        """
        Args:
            is_train (bool): training (random draws) or evaluation (seeded per image).
            image_stages (Sequence[callable] or None): applied in order; empty maps images
                unchanged, exactly like ``DatasetMapper``.
            pipeline (LowLightPipeline or None): shorthand for ``image_stages=[pipeline]``
                (give one of the two).
            eval_seed (int): seed of the evaluation degradation (``INPUT.LOW_LIGHT.SEED``), >= 0.
            train_seed (int): seed of the training draws; -1 draws OS entropy once here.
            train_noise (str): where the training degradation's Gaussian noise comes from
                (``INPUT.LOW_LIGHT.TRAIN_NOISE``): "torch" (faster) or "numpy"; evaluation
                always uses "numpy" (the reference, bit for bit).
            on_device (bool): training only (``INPUT.LOW_LIGHT.ON_DEVICE``): draw the degradation
                here but ship the 8-bit image at native size with the draws and the
                augmentations' transforms, for the model's device to apply
                (:mod:`wnlb_d2.data.device_path`). Needs an lv2021/unprocess pipeline, no enhancer
                stage, and geometric augmentations only.
            skip_unreadable (bool): skip unreadable images with a warning instead of raising
                (``DATALOADER.SKIP_UNREADABLE_IMAGES``; see the class docstring).
            **kwargs: the arguments of :class:`detectron2.data.DatasetMapper` (augmentations,
                image_format, use_instance_mask, ...).
        """
        super().__init__(is_train, **kwargs)
        if image_stages is not None and pipeline is not None:
            raise ValueError("LowLightDatasetMapper: give image_stages or pipeline, not both")
        stages = list(image_stages) if image_stages is not None else ([pipeline] if pipeline is not None else [])
        if stages and self.image_format not in READ_FORMATS:
            raise ValueError(f"LowLightDatasetMapper: INPUT.FORMAT must be one of {READ_FORMATS} to "
                             f"synthesise low-light images, got {self.image_format!r}")
        if isinstance(eval_seed, bool) or not isinstance(eval_seed, int) or eval_seed < 0:
            raise ValueError(f"LowLightDatasetMapper: INPUT.LOW_LIGHT.SEED must be an int >= 0, got {eval_seed!r}")
        if isinstance(train_seed, bool) or not isinstance(train_seed, int) or train_seed < -1:
            raise ValueError("LowLightDatasetMapper: INPUT.LOW_LIGHT.TRAIN_SEED must be an int >= 0 "
                             f"or -1 (OS entropy), got {train_seed!r}")
        if train_noise not in NOISE_SOURCES:
            raise ValueError(f"LowLightDatasetMapper: INPUT.LOW_LIGHT.TRAIN_NOISE must be one of {NOISE_SOURCES}, "
                             f"got {train_noise!r}")
        if is_train:
            stages = [s.with_noise_source(train_noise) if isinstance(s, LowLightPipeline) else s for s in stages]
        self.image_stages = stages
        self.on_device = bool(on_device) and is_train
        if self.on_device:
            if len(stages) != 1 or not supports_torch(stages[0]):
                names = [getattr(s, "name", type(s).__name__) for s in stages]
                raise ValueError("LowLightDatasetMapper: INPUT.LOW_LIGHT.ON_DEVICE needs exactly one stage, an lv2021 "
                                 f"or unprocess degradation (no enhancer in training), got {names}")
        self.skip_unreadable = bool(skip_unreadable)
        self.skipped = 0  # unreadable images skipped by this process (each worker counts its own)
        self._recent = collections.deque(maxlen=16)  # training dicts read well: stand-ins for bad ones
        self.eval_seed = eval_seed
        self.train_seed = train_seed
        # Drawn here, in the main process, and pickled into the workers: with -1 each run
        # differs; the per-process parts of the seed are added lazily in _train_rng.
        self._train_entropy = train_seed if train_seed >= 0 else np.random.SeedSequence().entropy
        self._rng = None
        self._rng_pid = None
        mode = "training" if is_train else "inference"
        if not stages:
            logger.info(f"[LowLightDatasetMapper] no image stages in {mode} (no degradation)")
        else:
            how = "a fresh random draw per load" if is_train else f"seeded per image (SEED={eval_seed})"
            logger.info(f"[LowLightDatasetMapper] {mode}: {', then '.join(map(repr, stages))}; {how}")

    @property
    def pipeline(self):
        """The low-light degradation among the stages (None without one)."""
        return next((s for s in self.image_stages if isinstance(s, LowLightPipeline)), None)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        node = cfg.INPUT.LOW_LIGHT
        apply = node.ENABLED and (node.TRAIN if is_train else node.TEST)
        ret["image_stages"] = [build_pipeline_from_config(cfg)] if apply else []
        ret["eval_seed"] = node.SEED
        ret["train_seed"] = node.TRAIN_SEED
        ret["train_noise"] = node.get("TRAIN_NOISE", "torch")  # configs saved before the key: the default
        ret["on_device"] = bool(apply and is_train and node.get("ON_DEVICE", False))
        # Older configs (made without add_low_light_input_config) lack the key: off.
        ret["skip_unreadable"] = cfg.DATALOADER.get("SKIP_UNREADABLE_IMAGES", False)
        return ret

    def _train_rng(self):
        pid = os.getpid()
        if self._rng is None or self._rng_pid != pid:
            info = torch.utils.data.get_worker_info()
            worker = info.id + 1 if info is not None else 0
            entropy = [self._train_entropy, torch.initial_seed(), worker, comm.get_rank()]
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
            self._rng_pid = pid
        return self._rng

    def image_key(self, dataset_dict):
        """The key of :func:`eval_rng` for an image: its id, else its file's base name."""
        if "image_id" in dataset_dict:
            return dataset_dict["image_id"]
        return os.path.basename(dataset_dict["file_name"])

    def rng_for(self, dataset_dict):
        """The generator that degrades this image now (see the class docstring)."""
        if self.is_train:
            return self._train_rng()
        return eval_rng(self.eval_seed, self.image_key(dataset_dict))

    def _read(self, file_name):
        if self.image_format in READ_FORMATS:
            return read_image(file_name, format=self.image_format)
        # Other formats (e.g. "L", "YUV-BT.601") only occur without degradation (checked in
        # __init__); detectron2's reader supports them.
        return utils.read_image(file_name, format=self.image_format)

    def _skip(self, dataset_dict, error):
        """Warn about an unreadable image; return None to map a recent image, else a blank one."""
        self.skipped += 1
        if self.is_train and self._recent:
            # A random one of the recent images: the same one every time would be over-sampled.
            self._recent.rotate(int(self._train_rng().integers(len(self._recent))))
            what = f"{self._recent[-1]['file_name']} is used instead"
        elif self.is_train:
            what = "a blank image without objects is used instead (no image read well yet)"
        else:
            what = "a blank image stands in (its objects count as missed)"
        logger.warning(f"[LowLightDatasetMapper] skipping unreadable image {dataset_dict['file_name']}: "
                       f"{error} -- {what}; {self.skipped} skipped by this process "
                       "(DATALOADER.SKIP_UNREADABLE_IMAGES)")
        if self.is_train and self._recent:
            return None
        if self.is_train:
            # No objects (the real boxes on a blank would teach noise), but an empty "instances":
            # detectron2's models expect the key on every training input.
            dataset_dict["annotations"] = []
        dataset_dict["unreadable"] = str(error)
        # The annotated size keeps predictions and ground truth in one frame; 32 px otherwise.
        h, w = dataset_dict.get("height", 32), dataset_dict.get("width", 32)
        return np.zeros((h, w, 1 if self.image_format == "L" else 3), np.uint8)

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        self._check_mask_format(dataset_dict)
        super()._transform_annotations(dataset_dict, transforms, image_shape)

    def _check_mask_format(self, dataset_dict):
        """Raise a ValueError naming ``INPUT.MASK_FORMAT`` for RLE masks in the polygon format.

        detectron2 keeps a non-crowd RLE mask (crowd ones are dropped in training) and then fails
        with "Failed to use mask_format=='polygon' from the given annotations!", which names
        neither the image nor the setting that fixes it.
        """
        if not self.use_instance_mask or self.instance_mask_format != "polygon":
            return
        rle = [a for a in dataset_dict.get("annotations", [])
               if not a.get("iscrowd", 0) and isinstance(a.get("segmentation"), dict)]
        if rle:
            raise ValueError(
                f"{dataset_dict.get('file_name')}: {len(rle)} non-crowd annotations have RLE masks, which "
                "INPUT.MASK_FORMAT 'polygon' (the default) cannot hold: set INPUT.MASK_FORMAT to 'bitmask'"
            )

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): metadata of one image, in detectron2's dataset format.

        Returns:
            dict: what ``DatasetMapper`` returns, plus ``"low_light_params"`` (the sampled
            parameters, a dict) when a pipeline is set; for an unreadable image with
            ``skip_unreadable``, a stand-in (see the class docstring).
        """
        # Once per process (each data-loader worker): keep image-sized arrays on the heap. Here
        # because detectron2's train loader takes no worker_init_fn (v0.6 fixes it; main passes
        # its own next to **kwargs).
        tune_allocator()
        # This follows DatasetMapper.__call__ of detectron2 (v0.6 and later), which offers no
        # hook between reading and augmenting; only the two marked steps differ.
        original, dataset_dict = dataset_dict, copy.deepcopy(dataset_dict)
        try:
            image = self._read(dataset_dict["file_name"])  # differs: wnlb_d2's reader
        except (ImageReadError, OSError) as e:  # differs: DATALOADER.SKIP_UNREADABLE_IMAGES
            if not self.skip_unreadable:
                raise
            image = self._skip(dataset_dict, e)
            if image is None:  # training: map an image read well before instead
                return self(self._recent.pop())
        else:
            if self.is_train and self.skip_unreadable:
                self._recent.appendleft(original)  # not the copy: the steps below change it
        utils.check_image_size(dataset_dict, image)
        if self.on_device and "unreadable" not in dataset_dict:  # differs: the device path
            return self._map_for_device(dataset_dict, image)
        if self.image_stages and "unreadable" not in dataset_dict:  # differs: image stages at native resolution
            rng, params = self.rng_for(dataset_dict), {}
            for stage in self.image_stages:
                image, stage_params = stage(image, rng, self.image_format)
                params.update(stage_params)
            dataset_dict["low_light_params"] = params

        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
        else:
            sem_seg_gt = None

        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg

        image_shape = image.shape[:2]  # h, w
        # Tensors travel between data-loader workers through shared memory (see DatasetMapper).
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))

        return self._map_targets(dataset_dict, transforms, image_shape)

    def _map_targets(self, dataset_dict, transforms, image_shape):
        """The end of ``DatasetMapper.__call__``: proposals, then annotations (training) or none.

        Args:
            dataset_dict (dict): the copy being mapped.
            transforms (TransformList): the augmentations' transforms of the image.
            image_shape (tuple): ``(H, W)`` of the augmented image.

        Returns:
            dict: ``dataset_dict``.
        """
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict

        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict

    def _map_for_device(self, dataset_dict, image):
        """The device path's training dict: the native 8-bit image, its draws and its transforms.

        The parameters come from the same generator as on the CPU path (``sample_params``), the
        noise is a seed for the device's generator; the augmentations choose their transforms
        from the image's shape (:class:`~wnlb_d2.data.device_path.ShapeOnlyAugInput`) and the
        annotations are transformed here, to the size the device will produce.
        """
        if "sem_seg_file_name" in dataset_dict:
            raise ValueError("LowLightDatasetMapper: INPUT.LOW_LIGHT.ON_DEVICE does not transform semantic "
                             f"segmentation ({dataset_dict['sem_seg_file_name']}); turn it off for this dataset")
        rng = self.rng_for(dataset_dict)
        pipeline = self.image_stages[0]
        params = pipeline.sample_params(rng)
        noise_seed = int(rng.integers(0, 2**63 - 1))
        aug_input = ShapeOnlyAugInput(*image.shape[:2])
        transforms = self.augmentations(aug_input)
        image_shape = aug_input.shape
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict[DEVICE_KEY] = {"params": params, "noise_seed": noise_seed,
                                    "steps": geometric_steps(aug_input.transforms)}
        dataset_dict["low_light_params"] = dict(params, pipeline=pipeline.name)
        return self._map_targets(dataset_dict, transforms, image_shape)


def worker_error_message(error):
    """The one-line message of an error, without the traceback of a data-loader worker.

    PyTorch re-raises an exception of a worker process in the main process with the worker's
    whole traceback in its message ("Caught ImageReadError in DataLoader worker process 0.
    Original Traceback ..."); the last line of that traceback is the original message, which
    names the file.

    Args:
        error (BaseException or str): the exception (or its message).

    Returns:
        str: the original message for a worker's error, else ``str(error)``.
    """
    text = str(error)
    if "DataLoader worker process" not in text or "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    # "wnlb_d2.data.image_io.ImageReadError: Cannot read image ...": drop the qualified class.
    head, sep, rest = last.partition(": ")
    return rest if sep and " " not in head else last
