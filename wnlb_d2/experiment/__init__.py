"""The study runner: Table I/II rows of any detector family, seeds, statistics, severity curves, reports.

* :mod:`.spec`: :class:`ExperimentSpec`, row names, metrics, compared pairs;
* :mod:`.family`: the :class:`DetectorFamily` interface and its registry;
* :mod:`.detectron2_family`: Mask R-CNN and SOLOv2 families;
* :mod:`.runner`: :func:`run_experiment`;
* :mod:`.two_stage`: enhancer rows (Table II), Zero-DCE++ weights;
* :mod:`.severity`: fixed darkness levels;
* :mod:`.stats`: summaries, paired intervals, image-level bootstrap;
* :mod:`.report`: results.md and the plots.
"""

from . import detectron2_family  # noqa: F401  (registers the detectron2 families)
from .family import DETECTOR_FAMILY_REGISTRY, DetectorFamily, TrainedRow, build_detector_family, detector_family_names
from .runner import run_experiment
from .spec import FINETUNE_ROWS, METRICS, PAIRS, ROWS, TASKS, ExperimentSpec

__all__ = ["ExperimentSpec", "run_experiment", "DetectorFamily", "TrainedRow", "DETECTOR_FAMILY_REGISTRY",
           "build_detector_family", "detector_family_names", "ROWS", "FINETUNE_ROWS", "METRICS", "TASKS", "PAIRS"]
