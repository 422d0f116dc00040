"""The interface between the study runner and a detector: :class:`DetectorFamily`.

The runner (:func:`wnlb_d2.experiment.run_experiment`) knows rows, seeds, statistics and
severity levels; a family knows how to build, train and evaluate its detector with and without
non-local blocks. Mask R-CNN and SOLOv2 (detectron2 meta-architectures) share
:class:`~wnlb_d2.experiment.detectron2_family.Detectron2Family`; YOLOv8 (Ultralytics) has its
own in ``wnlb_d2.yolo``. A new detector is one subclass registered with
``@DETECTOR_FAMILY_REGISTRY.register()`` and selected by its ``name``
(``tools/run_experiment.py --detector NAME``).
"""

import abc
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from detectron2.utils.registry import Registry

from ..utils.registry import lookup, registered_names

__all__ = ["DETECTOR_FAMILY_REGISTRY", "DetectorFamily", "TrainedRow", "build_detector_family",
           "detector_family_names", "read_w_trajectory"]

DETECTOR_FAMILY_REGISTRY = Registry("DETECTOR_FAMILY")
DETECTOR_FAMILY_REGISTRY.__doc__ = """
Registry of detector families for the study runner: :class:`DetectorFamily` subclasses selected
by their ``name`` (``ExperimentSpec.detector``). Families whose code imports an optional package
(Ultralytics) are registered when that package's module is imported.
"""

# Families registered on first use by importing their module (optional dependencies stay lazy).
_LAZY_FAMILIES = {"yolov8": "wnlb_d2.yolo.family"}


@dataclass
class TrainedRow:
    """One trained (or loaded) model of a row.

    Attributes:
        row: the row name ("pretrained", "finetuned", "nlb", "wnlb").
        seed: the training seed (None for loaded weights).
        weights: path of the final checkpoint (what a later row starts from).
        output_dir: the run's folder.
        seconds: training time.
        handle: family-specific (detectron2: ``(cfg, model)``; YOLO: its model and settings).
        w_trajectory: ``[{"iteration": i, "res3": w, ...}, ...]`` of the weighted blocks.
    """

    row: str
    seed: Optional[int]
    weights: str
    output_dir: str
    seconds: float = 0.0
    handle: Any = None
    w_trajectory: List[Dict[str, float]] = field(default_factory=list)


class DetectorFamily(abc.ABC):
    """How the study runner builds, trains and evaluates one kind of detector.

    Args:
        spec (ExperimentSpec): the study; a family reads what it needs from it.

    Attributes:
        name (str): the family's name in ``ExperimentSpec.detector``.
    """

    name = ""
    #: Whether an interrupted training run continues from its last checkpoint (``resume=True``
    #: of :meth:`pretrain` / :meth:`finetune`); families that cannot restart it from scratch.
    can_resume = False

    def __init__(self, spec):
        self.spec = spec

    def validate(self):
        """Check the family's own inputs (config file, model YAML) before anything trains.

        Raises:
            ValueError or FileNotFoundError: naming the bad input.
        """

    def train_identity(self):
        """What else, beyond the spec's training fields, changes this family's trained weights
        (recorded with every run, so a change retrains; default: nothing)."""
        return {}

    @abc.abstractmethod
    def pretrain(self, output_dir, resume=False):
        """Train the normal-light model on ``spec.pretrain_data``; returns a :class:`TrainedRow`.

        ``resume``: continue the interrupted run in ``output_dir`` (only when :attr:`can_resume`).
        """

    @abc.abstractmethod
    def load(self, weights, output_dir):
        """The normal-light model from ``weights`` (file or URL); returns a :class:`TrainedRow`."""

    @abc.abstractmethod
    def finetune(self, row, pretrained, seed, output_dir, resume=False):
        """Fine-tune ``row`` ("finetuned", "nlb" or "wnlb") from ``pretrained.weights``.

        Args:
            row (str): which row; "nlb"/"wnlb" add the blocks (residual / weighted fusion).
            pretrained (TrainedRow): the starting weights.
            seed (int): the run's seed (data order, block initialisation, degradation draws).
            output_dir (str): the run's folder.
            resume (bool): continue the interrupted run in ``output_dir`` (only when
                :attr:`can_resume`).

        Returns:
            TrainedRow
        """

    @abc.abstractmethod
    def evaluate(self, trained, dataset, *, low_light, output_dir, overrides=None):
        """COCO metrics of a trained row on a registered dataset.

        Args:
            trained (TrainedRow): the model.
            dataset (str): a registered detectron2 dataset (COCO ground truth).
            low_light (bool): degrade the test images on the fly (the evaluation degradation:
                the same bytes for every row, run and family).
            output_dir (str): where predictions and logs of this evaluation go.
            overrides (dict or None): ``{full config key: value}`` that change the test-time
                image stages: a fixed severity level (``INPUT.LOW_LIGHT.*``) or an enhancer
                (``INPUT.ENHANCER.*``).

        Returns:
            dict: ``{"segm": {"AP": ..., "AP50": ..., ...}, "bbox": {...}}`` as detectron2's
            COCOEvaluator reports them (percent); with bootstrap on, each task also has
            ``"AP-ci95-lo"`` / ``"AP-ci95-hi"``.
        """

    @abc.abstractmethod
    def low_light_config(self):
        """A detectron2 CfgNode whose ``INPUT.LOW_LIGHT`` is the study's degradation (for severity levels)."""

    def feature_errors(self, trained, dataset, *, low_light, num_images):
        """Per-image normalised feature errors and non-local shares of ``trained`` (see
        :func:`wnlb_d2.analysis.detectron2_features.detectron2_feature_errors` for the layout).

        Raises:
            NotImplementedError: the family measures no features.
            NoCleanCounterpartError: the test set's images have no clean counterparts.
        """
        raise NotImplementedError(f"detector family {self.name!r} measures no feature errors")

    def reload(self, trained):
        """Give a row restored from its record (weights on disk, ``handle`` None) what
        :meth:`evaluate` and :meth:`save_pictures` need (default: nothing)."""

    def block_weights(self, trained):
        """The learned w per stage of the weighted blocks of ``trained`` (empty without blocks)."""
        return {}

    def save_pictures(self, trained_rows, dataset, output_dir, *, num_images=3, low_light=False):
        """Side-by-side pictures of every row's predictions on the first test images.

        Args:
            trained_rows (dict[str, TrainedRow]): row -> its (last-seed) model.
            dataset (str): the test dataset.
            output_dir (str): folder for the PNGs.
            num_images (int): how many images.
            low_light (bool): degrade the test images first (the evaluation degradation).

        Returns:
            list[str]: paths written.

        Raises:
            NotImplementedError: the family draws no pictures.
        """
        raise NotImplementedError(f"detector family {self.name!r} draws no side-by-side pictures")

    def release(self, trained):
        """Free what ``trained.handle`` holds once the runner no longer needs it (default: drop it)."""
        trained.handle = None


def detector_family_names():
    """Names of the registered families, plus those registered on first use."""
    return tuple(dict.fromkeys(registered_names(DETECTOR_FAMILY_REGISTRY) + tuple(_LAZY_FAMILIES)))


def build_detector_family(spec):
    """The :class:`DetectorFamily` that ``spec.detector`` names.

    Raises:
        ValueError: unknown name (lists the known ones), or a family whose optional dependency is
            not installed (says what to install).
    """
    name = spec.detector
    if name in _LAZY_FAMILIES and name not in registered_names(DETECTOR_FAMILY_REGISTRY):
        import importlib

        try:
            importlib.import_module(_LAZY_FAMILIES[name])
        except ImportError as e:
            raise ValueError(f"detector {name!r} needs an optional dependency that is not installed ({e}); "
                             f"install it with: pip install 'wnlb_d2[yolo]'") from e
    if name not in registered_names(DETECTOR_FAMILY_REGISTRY):
        raise ValueError(f"detector (--detector) {name!r}: unknown detector family, expected one of "
                         f"{detector_family_names()}")
    return lookup(DETECTOR_FAMILY_REGISTRY, name, "detector family", "--detector")(spec)


def read_w_trajectory(metrics_json):
    """The learned w of each weighted block over training, from detectron2's ``metrics.json``.

    Args:
        metrics_json (str): the JSON-lines file detectron2's JSONWriter writes (one object per
            logging period, with ``"iteration"`` and ``"wnlb/w_<stage>"``).

    Returns:
        list[dict]: ``[{"iteration": i, "res3": w, ...}, ...]`` in iteration order; empty when
        the file is missing or holds no w. JSONWriter appends: after a resume the file holds the
        interrupted attempt, then the resumed one from its checkpoint on; an entry whose
        iteration is not above the last one starts a new attempt, which replaces every earlier
        entry from that iteration on (those iterations were redone from the checkpoint).
    """
    out = []
    if not os.path.isfile(metrics_json):
        return out
    with open(metrics_json) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: the others still count
            ws = {k[len("wnlb/w_"):]: float(v) for k, v in entry.items() if k.startswith("wnlb/w_")}
            if ws and "iteration" in entry:
                it = int(entry["iteration"])
                while out and out[-1]["iteration"] >= it:
                    out.pop()
                out.append({"iteration": it, **ws})
    return out
