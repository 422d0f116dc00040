"""Low-light images in Ultralytics' data pipeline, degraded exactly as in the detectron2 mapper.

:class:`LowLightYOLODataset` is Ultralytics' ``YOLODataset`` whose ``load_image`` reads and
degrades each image with a :class:`wnlb_d2.data.LowLightDatasetMapper` (no augmentations)
before Ultralytics resizes and augments it, so

* training draws a fresh degradation every time an image is read from disk (the mapper's
  training generator: per process and data-loader worker, from ``train_seed`` or OS entropy);
* validation degrades each image from the mapper's evaluation seed key (the image id) and
  ``seed``: the same bytes as detectron2's evaluation of the same image with the same seed,
  and as the offline copies of ``datasets/prepare_lowlight_coco.py``.

The degradation sees the image at its native resolution (the sensor model is per pixel), as in
detectron2. In training, each sample's own image is read and degraded afresh (as detectron2
draws a fresh degradation for every image it loads for a batch). Ultralytics' mosaic (and
mixup, cutmix) fills the other tiles with images from a buffer of the last images it read
(batch x 8 of them), reused as they were read; here the buffer holds those images as they
were degraded, so a mosaic partner is a recent image's draw reused at another place, scale,
flip and colour jitter, as Ultralytics reuses the pixels of a normal-light image. Every tile
has the distribution of a fresh draw, one draw per image and epoch as in detectron2; what is
shared is that draw between the (on average 4) mosaics the image takes part in within a few
batches. The cost is one degradation per sample instead of four. ``fresh_tiles=True`` in the
spec degrades every tile afresh instead (every load reads and degrades: the behaviour before
2026-12-05, with 4 degradations per mosaic). Image caching (``cache=ram/disk``) would freeze
one draw for the whole run and is turned off.

What to degrade is written into the data YAML (:func:`write_data_yaml`, key ``wnlb``), so the
trainer, its validator and a later standalone validation all read it from one place.

An image that cannot be read stops the run, as in detectron2 (``train_net.py``), with an
:class:`~wnlb_d2.data.image_io.ImageReadError` naming the dataset's file: Ultralytics' label
scan would drop it with a warning, and its objects would be scored as misses.
"""

import logging
import math
import os

import cv2
import yaml
from detectron2.data.detection_utils import check_image_size
from ultralytics.data import YOLODataset
from ultralytics.data.utils import get_split_fraction
from ultralytics.utils import colorstr

from ..data.image_io import ImageReadError, read_image
from ..data.synthesis import PIPELINES, build_pipeline
from ..data.synthesis.common import NOISE_SOURCES
from ..utils.allocator import tune_allocator
from ..utils.io import atomic_write_text
from .convert import read_index

__all__ = ["LowLightSpec", "LowLightYOLODataset", "write_data_yaml", "build_lowlight_dataset"]

logger = logging.getLogger(__name__)


class LowLightSpec(dict):
    """What the data pipeline degrades: a plain dict (it travels in the data YAML).

    Keys: ``pipeline`` (a name in :data:`wnlb_d2.data.PIPELINES` or None: no degradation),
    ``overrides`` (ranges, keyword arguments of ``build_pipeline``), ``train`` / ``val``
    (degrade that side), ``seed`` (evaluation seed, ``INPUT.LOW_LIGHT.SEED``) and
    ``train_seed`` (-1: OS entropy, ``INPUT.LOW_LIGHT.TRAIN_SEED``) and ``train_noise`` (where the
    training noise comes from, ``INPUT.LOW_LIGHT.TRAIN_NOISE``; a spec written before the key: "torch")
    and ``fresh_tiles`` (training: degrade every mosaic tile afresh instead of reusing the
    buffered image's draw; default False, see the module docstring).

    Raises:
        ValueError: an unknown key, pipeline or parameter, a bad seed or a non-bool fresh_tiles.
    """

    KEYS = ("pipeline", "overrides", "train", "val", "seed", "train_seed", "train_noise", "fresh_tiles")

    def __init__(self, pipeline=None, overrides=None, train=True, val=True, seed=0, train_seed=-1,
                 train_noise="torch", fresh_tiles=False):
        # Lists, not tuples: the spec is written into a YAML file (yaml.safe_dump has no tuples).
        overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(overrides or {}).items()}
        super().__init__(pipeline=pipeline, overrides=overrides, train=bool(train), val=bool(val),
                         seed=seed, train_seed=train_seed, train_noise=train_noise, fresh_tiles=fresh_tiles)
        if not isinstance(fresh_tiles, bool):
            raise ValueError(f"LowLightSpec: fresh_tiles must be True or False, got {fresh_tiles!r}")
        if train_noise not in NOISE_SOURCES:
            raise ValueError(f"LowLightSpec: train_noise must be one of {NOISE_SOURCES}, got {train_noise!r}")
        if pipeline is not None:
            if pipeline not in PIPELINES:
                raise ValueError(f"LowLightSpec: unknown pipeline {pipeline!r}; expected one of {PIPELINES} or None")
            build_pipeline(pipeline, **self["overrides"])  # bad ranges fail here, not in a worker
        for key, low in (("seed", 0), ("train_seed", -1)):
            value = self[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"LowLightSpec: {key} must be an int >= {low}, got {value!r}")

    @classmethod
    def from_dict(cls, d):
        """Rebuild from a dict (e.g. read back from a data YAML); None gives no degradation."""
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"LowLightSpec: unknown key(s) {unknown}; expected some of {list(cls.KEYS)}")
        return cls(**d)

    @classmethod
    def from_config(cls, cfg):
        """The spec of a detectron2 config's ``INPUT.LOW_LIGHT`` (same pipeline, ranges, seeds)."""
        node = cfg.INPUT.LOW_LIGHT
        if not node.ENABLED:
            return cls(None)
        section = node[node.PIPELINE.upper()]
        overrides = {k.lower(): (list(v) if isinstance(v, tuple) else v) for k, v in section.items()}
        return cls(node.PIPELINE, overrides, train=node.TRAIN, val=node.TEST, seed=node.SEED,
                   train_seed=node.TRAIN_SEED, train_noise=node.get("TRAIN_NOISE", "torch"))

    def active(self, training):
        """Whether images of that side are degraded."""
        return self["pipeline"] is not None and self["train" if training else "val"]


def write_data_yaml(path, root, names, train="train", val="val", low_light=None):
    """Write Ultralytics' data YAML for an export under ``root``, with the low-light spec.

    Args:
        path (str): the YAML to write (e.g. in the run's output folder).
        root (str): the export root (:func:`wnlb_d2.yolo.export_yolo_dataset`).
        names (dict[int, str]): class names.
        train, val (str): split folder names under ``root/images``.
        low_light (LowLightSpec or dict or None): what to degrade.

    Returns:
        str: ``path``.
    """
    spec = LowLightSpec.from_dict(low_light) if not isinstance(low_light, LowLightSpec) else low_light
    data = {
        "path": os.path.abspath(root),
        "train": f"images/{train}",
        "val": f"images/{val}",
        "names": {int(k): str(v) for k, v in names.items()},
        "wnlb": {"low_light": dict(spec), "splits": {"train": train, "val": val}},
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


class LowLightYOLODataset(YOLODataset):
    """``YOLODataset`` that degrades images with the detectron2 mapper's low-light pipeline.

    Images Ultralytics cannot use raise :class:`~wnlb_d2.data.image_io.ImageReadError` (naming
    the file) instead of being dropped with a warning.

    Args:
        *args, **kwargs: those of ``YOLODataset``.
        low_light (LowLightSpec): what to degrade; inactive for this side: plain ``YOLODataset``.
        records (dict[str, dict]): file stem -> detectron2 record (``file_name``, ``image_id``,
            ``height``, ``width``) of every image, from the export index (needed to degrade; an
            error about an image names its ``file_name``).

    ``load_image(i)`` returns ``(image (H, W, 3) uint8 BGR resized, (h0, w0), (h, w))`` as in
    Ultralytics; in training, an image still in the mosaic buffer is returned as it was degraded,
    except for the sample's own image (``dataset[i]`` degrades image ``i`` afresh) and with
    ``low_light["fresh_tiles"]`` (every load degrades afresh).
    """

    def __init__(self, *args, low_light=None, records=None, **kwargs):
        # Set before YOLODataset.__init__, which may already load images (caching).
        spec = low_light or LowLightSpec(None)
        self.mapper = None
        self.fresh_tiles = bool(spec.get("fresh_tiles", False))
        self._own = None  # index of the sample being built by __getitem__, until its image is loaded
        if spec.active(training=kwargs.get("augment", False)):
            if kwargs.get("cache"):
                logger.warning(f"LowLightYOLODataset: cache={kwargs['cache']!r} would keep one degradation per "
                               "image; images are read and degraded on every load instead")
            kwargs["cache"] = None
            self.mapper = self._build_mapper(spec, training=kwargs.get("augment", False))
        self.records = records or {}
        super().__init__(*args, **kwargs)
        if self.mapper is not None:
            missing = [f for f in self.im_files if self._stem(f) not in self.records]
            if missing:
                raise ValueError(f"LowLightYOLODataset: {len(missing)} images are not in the export index, e.g. "
                                 f"{missing[0]}; re-run export_yolo_dataset")

    def get_labels(self):
        """Ultralytics' labels; an image its scan drops (corrupt, unreadable, too small) is an error.

        Raises:
            ImageReadError: naming the first such image (the dataset's file behind the export's
                link) and how many of the split's images are unusable.
        """
        listed = list(self.im_files)
        try:
            labels = super().get_labels()
        except RuntimeError as e:  # "No valid images found in ...": the scan dropped every image
            if not listed:
                raise
            raise self._unusable_image_error(listed[0], len(listed), len(listed)) from e
        kept = {lb["im_file"] for lb in labels}
        dropped = [f for f in listed if f not in kept]
        if dropped:
            raise self._unusable_image_error(dropped[0], len(dropped), len(listed))
        return labels

    def _scan_reason(self, im_file):
        """Why Ultralytics' label scan rejects an image (its own check, run again for the message)."""
        from ultralytics.data.utils import img2label_paths, verify_image_label

        nkpt, ndim = self.data.get("kpt_shape", (0, 0))
        args = (im_file, img2label_paths([im_file])[0], "", self.use_keypoints,
                self.data.get("bg_class_idx") or len(self.data["names"]), nkpt, ndim, self.single_cls)
        msg = verify_image_label(args)[-1]
        return " ".join(msg.split("ignoring corrupt image/label:", 1)[-1].split()) or "rejected"

    def _unusable_image_error(self, im_file, dropped, total, reason=None):
        """An :class:`ImageReadError` naming the dataset's file (not the export's link) and what is wrong.

        detectron2's reader says why it cannot read the file; a file it reads but Ultralytics
        rejects gets Ultralytics' reason (e.g. fewer than 10 pixels a side).
        """
        record = self.records.get(self._stem(im_file))
        source = record["file_name"] if record else os.path.realpath(im_file)
        try:
            read_image(source)
        except ImageReadError as e:
            message = str(e)
        else:
            message = f"Cannot use image {source!r} for YOLO: {reason or self._scan_reason(im_file)}"
        if dropped > 1:
            message += f" ({dropped} of the {total} images of {self.img_path} are unusable)"
        return ImageReadError(message)

    @staticmethod
    def _build_mapper(spec, training):
        from ..data.mapper import LowLightDatasetMapper

        pipeline = build_pipeline(spec["pipeline"], **spec["overrides"])
        return LowLightDatasetMapper(training, pipeline=pipeline, eval_seed=spec["seed"],
                                     train_seed=spec["train_seed"], train_noise=spec["train_noise"],
                                     augmentations=[], image_format="BGR")

    @staticmethod
    def _stem(im_file):
        return os.path.splitext(os.path.basename(im_file))[0]

    def degraded_image(self, i):
        """Image ``i`` read and degraded at its native size, ``(H, W, 3)`` uint8 BGR, and the parameters.

        The steps of ``LowLightDatasetMapper.__call__`` up to its (here empty) augmentations, with
        the mapper's reader, generator and stages, so the pixels are the mapper's, draw for draw;
        without its copy of the record and its round trip through a (3, H, W) tensor.
        """
        record = self.records[self._stem(self.im_files[i])]
        tune_allocator()  # once per process, as the mapper does: each data-loader worker
        image = read_image(record["file_name"], format=self.mapper.image_format)
        check_image_size(record, image)  # the record has the size: nothing is written into it
        rng, params = self.mapper.rng_for(record), {}
        for stage in self.mapper.image_stages:
            image, stage_params = stage(image, rng, self.mapper.image_format)
            params.update(stage_params)
        return image, params

    def _resize(self, im, rect_mode, resize_short):
        # BaseDataset.load_image's resizing (Ultralytics 8.4), applied to the degraded image.
        h0, w0 = im.shape[:2]
        shape = tuple(self.imgsz) if isinstance(self.imgsz, (tuple, list)) else (self.imgsz, self.imgsz)
        imgsz = max(shape)
        if rect_mode:
            if resize_short:
                r = imgsz / min(h0, w0)
                if r != 1:
                    w, h = (math.ceil(w0 * r), imgsz) if h0 < w0 else (imgsz, math.ceil(h0 * r))
                    im = cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
            else:
                r = imgsz / max(h0, w0)
                if r != 1:
                    w, h = (min(math.ceil(w0 * r), imgsz), min(math.ceil(h0 * r), imgsz))
                    im = cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
        elif (h0, w0) != shape:
            im = cv2.resize(im, shape[::-1], interpolation=cv2.INTER_LINEAR)
        return im

    def __getitem__(self, index):
        """Ultralytics' training (or validation) sample ``index``; its own image is degraded afresh."""
        self._own = index
        try:
            return super().__getitem__(index)
        finally:
            self._own = None

    def load_image(self, i, rect_mode=True, resize_short=False):
        """Read image ``i``, degrade it (when active) and resize it as Ultralytics does."""
        if self.mapper is None:
            try:
                return super().load_image(i, rect_mode, resize_short)
            except FileNotFoundError as e:  # Ultralytics' "Image Not Found": OpenCV could not decode it
                raise self._unusable_image_error(self.im_files[i], 1, len(self.im_files),
                                                 reason="OpenCV cannot decode it") from e
        own = i == self._own
        if own:
            self._own = None  # the sample's own image, once: as a partner of its own mosaic it is reused
        if self.augment and not self.fresh_tiles and not own and self.ims[i] is not None:
            # A mosaic partner still in the buffer: its draw, as Ultralytics reuses a buffered image.
            return self.ims[i], self.im_hw0[i], self.im_hw[i]
        im, _ = self.degraded_image(i)
        h0, w0 = im.shape[:2]
        im = self._resize(im, rect_mode, resize_short)
        if self.augment and self.fresh_tiles:
            # Every load degrades afresh: the buffer keeps the indices only, never an image.
            self.buffer.append(i)
            if 1 < len(self.buffer) >= self.max_buffer_length:
                self.buffer.pop(0)
        elif self.augment:
            # BaseDataset.load_image's buffer (Ultralytics 8.4), holding the degraded image; an
            # image already in it (degraded again as a sample's own image) keeps its place.
            buffered = self.ims[i] is not None
            self.ims[i], self.im_hw0[i], self.im_hw[i] = im, (h0, w0), im.shape[:2]
            if not buffered:
                self.buffer.append(i)
                if 1 < len(self.buffer) >= self.max_buffer_length:
                    j = self.buffer.pop(0)
                    self.ims[j], self.im_hw0[j], self.im_hw[j] = None, None, None
        return im, (h0, w0), im.shape[:2]


def _split_records(data, img_path, required=True):
    """File stem -> detectron2 record of the split's export index (None: no index and not ``required``)."""
    root = str(data["path"])
    split = os.path.basename(os.path.normpath(str(img_path)))
    try:
        index = read_index(root, split)
    except FileNotFoundError:
        if required:
            raise
        return None
    return {os.path.splitext(os.path.basename(r["yolo_file"]))[0]: r for r in index["images"]}


def build_lowlight_dataset(cfg, img_path, batch, data, mode="train", rect=False, stride=32, fraction=None):
    """``ultralytics.data.build.build_yolo_dataset`` for the segment task, with low-light images.

    Args: as ``build_yolo_dataset`` (``data`` is the checked data dict; its ``wnlb.low_light``
    says what to degrade).

    Returns:
        LowLightYOLODataset
    """
    spec = LowLightSpec.from_dict((data.get("wnlb") or {}).get("low_light"))
    training = mode == "train"
    # The degradation needs each image's record; without it they still name the dataset's files in errors.
    records = _split_records(data, img_path, required=spec.active(training))
    if fraction is None:
        fraction = get_split_fraction(cfg.fraction, "train" if training else cfg.split)
    return LowLightYOLODataset(
        img_path=img_path,
        imgsz=cfg.imgsz,
        batch_size=batch,
        augment=training,
        hyp=cfg,
        rect=cfg.rect or rect,
        cache=cfg.cache or None,
        single_cls=cfg.single_cls or False,
        stride=stride,
        pad=0.0 if training else 0.5,
        prefix=colorstr(f"{mode}: "),
        task=cfg.task,
        classes=cfg.classes,
        data=data,
        fraction=fraction,
        low_light=spec,
        records=records,
    )
