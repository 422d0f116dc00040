"""What a study runs: :class:`ExperimentSpec`, the row names, metrics and compared pairs.

The rows are the paper's Table I:

* ``pretrained``: a model trained on normal light (the user's weights, or trained here on the
  normal-light data first); also evaluated on the normal-light test set.
* ``finetuned``: the same architecture fine-tuned on low-light data from those weights.
* ``nlb``: non-local blocks with residual fusion added, fine-tuned the same way.
* ``wnlb``: weighted non-local blocks, fine-tuned the same way.
* ``<enhancer>+pretrained`` (optional): the paper's Table II two-stage baselines, the pre-trained
  model on enhanced low-light test images.

Every fine-tuning row starts from the same weights and sees the same number of iterations at
the same learning rate; with several seeds each row runs once per seed (the seed sets data
order, block initialisation and training degradation draws; the test set never changes).
"""

import difflib
import numbers
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List

__all__ = ["ROWS", "FINETUNE_ROWS", "METRICS", "TASKS", "PAIRS", "pair_name", "ExperimentSpec"]

#: Rows of the table, in order.
ROWS = ("pretrained", "finetuned", "nlb", "wnlb")
#: The rows that are fine-tuned (once per seed) from the pre-trained weights.
FINETUNE_ROWS = ROWS[1:]
#: COCO metrics reported per task, as COCOEvaluator names them.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: Tasks as COCOEvaluator names them.
TASKS = ("segm", "bbox")
#: Row pairs the paper compares; the paired difference is first minus second.
PAIRS = (("wnlb", "finetuned"), ("nlb", "finetuned"), ("wnlb", "nlb"))


#: Fields added to the spec after studies were recorded, with their defaults.
_LATER_FIELDS = {"enhancer_weights": {}, "enhancer_iters": 300, "quality_images": 100}


def pair_name(first, second):
    """``("wnlb", "finetuned")`` -> ``"wnlb-vs-finetuned"`` (the key in ``results["paired"]``)."""
    return f"{first}-vs-{second}"


@dataclass
class ExperimentSpec:
    """What to run. Dataset names are registered detectron2 datasets.

    Attributes:
        config_file: base config of the detector with the stock backbone (detectron2 families:
            YAML or model_zoo://; YOLO: a model YAML such as yolov8n-seg.yaml).
        output_dir: where every row writes its run and where the tables go.
        test_data / finetune_data / pretrain_data / normal_test_data: dataset names; the
            normal-light ones may be empty when ``weights`` is given.
        detector: the detector family (``tools/run_experiment.py --detector``): "maskrcnn",
            "solov2", "yolov8", or one registered in ``DETECTOR_FAMILY_REGISTRY``.
        weights: normal-light weights (file or URL); empty: pre-train on ``pretrain_data``.
        pretrain_iters / finetune_iters: training length of those runs (iterations).
        finetune_lr: base learning rate of the fine-tuning rows (the paper: 5e-4).
        finetune_optimizer: "SGD" or "AdamW" for the fine-tuning rows; "" keeps the config's.
        finetune_policy: what learns in the fine-tuning rows (the paper: the backbone).
        wnlb_lr_factor: learning-rate factor of every block parameter (1.0: the paper's).
        wnlb_weight_lr_factor: learning-rate factor of the blocks' fusion weights w alone.
        wnlb_weight_init: initial w of the wNLB row (0.0: identity at initialisation).
        rows: which rows to run (pretrained always runs: the others start from it).
        seeds: one fine-tuning run per row and seed.
        low_light_train / low_light_test: degrade on the fly (INPUT.LOW_LIGHT.TRAIN/TEST);
            False when the data is low-light already (offline copies, real low-light images).
        severities: positions along the training range of the degradation at which every row
            is evaluated on ``normal_test_data`` (``wnlb_d2.experiment.severity``); empty: none.
        bootstrap_samples: image-level bootstrap samples of each evaluation's AP (0: off).
        feature_images: test images (the first ones) on which every row's normalised feature
            error and the blocks' non-local share are measured against the clean counterparts
            (:mod:`wnlb_d2.analysis`; 0: off; skipped, and said so, for a test set without them).
        opts: extra ``KEY VALUE`` config overrides for every run.
        block_opts: ``KEY VALUE`` config overrides of the rows with blocks alone (nlb, wnlb), e.g.
            ``["MODEL.WNLB.ZERO_INIT", "conv_and_norm"]`` or a w per stage
            ``["MODEL.WNLB.WEIGHT_INIT", "[0.0, 0.0, 0.5, 0.0]"]`` (detectron2 families).
        enhancers: two-stage rows to add, enhancer names such as "clahe" or "nlm+clahe".
        zero_dce_weights: Zero-DCE++ weights for "zero_dce" rows; empty: trained here for
            ``zero_dce_iters`` steps on the images of ``finetune_data``, once per seed.
        enhancer_weights: method -> weights file for the other enhancers with weights
            ("retinexformer", "agllnet", "enlightengan"; e.g. the authors' released files);
            a method not given is trained here for ``enhancer_iters`` steps, once per seed.
        quality_images: test images (the first ones) on which each two-stage row's PSNR and
            SSIM against the clean image are measured (0: off; skipped for a test set without
            clean counterparts).
        preset: the preset this spec came from (recorded, so a folder is never silently
            overwritten by another preset's run).
    """

    config_file: str
    output_dir: str
    test_data: str
    finetune_data: str
    pretrain_data: str = ""
    normal_test_data: str = ""
    detector: str = "maskrcnn"
    weights: str = ""
    pretrain_iters: int = 600
    finetune_iters: int = 200
    finetune_lr: float = 5e-4
    finetune_optimizer: str = ""
    finetune_policy: str = "backbone"
    wnlb_lr_factor: float = 1.0
    wnlb_weight_lr_factor: float = 1.0
    wnlb_weight_init: float = 0.0
    rows: List[str] = field(default_factory=lambda: list(ROWS))
    seeds: List[int] = field(default_factory=lambda: [0])
    low_light_train: bool = False
    low_light_test: bool = False
    severities: List[float] = field(default_factory=list)
    bootstrap_samples: int = 1000
    feature_images: int = 50
    opts: List[str] = field(default_factory=list)
    block_opts: List[str] = field(default_factory=list)
    enhancers: List[str] = field(default_factory=list)
    zero_dce_weights: str = ""
    zero_dce_iters: int = 300
    enhancer_weights: Dict[str, str] = field(default_factory=dict)
    enhancer_iters: int = 300
    quality_images: int = 100
    preset: str = ""

    def validate(self):
        """Check everything that can be checked before any training, so a bad name or path
        fails in seconds, not after the pre-trained row has trained.

        Raises:
            ValueError: unknown rows, enhancers or dataset names; bad seeds; non-positive settings.
            FileNotFoundError: ``weights`` or ``zero_dce_weights`` names a missing local file.
        """
        from ..enhance import parse_enhancer_name

        unknown = [r for r in self.rows if r not in ROWS]
        if unknown:
            raise ValueError(f"Unknown experiment rows {unknown}; expected a subset of {ROWS}")
        if not self.weights and not self.pretrain_data:
            raise ValueError("Give either weights (normal-light checkpoint) or pretrain_data to pre-train on")
        for name in ("pretrain_iters", "finetune_iters", "zero_dce_iters", "enhancer_iters"):
            if not isinstance(getattr(self, name), numbers.Integral) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("finetune_lr", "wnlb_lr_factor", "wnlb_weight_lr_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 <= self.wnlb_weight_init <= 1.0:
            raise ValueError(f"wnlb_weight_init must be in [0, 1], got {self.wnlb_weight_init!r}")
        if self.finetune_optimizer not in ("", "SGD", "AdamW"):
            raise ValueError(f"finetune_optimizer must be 'SGD', 'AdamW' or '' (the config's), "
                             f"got {self.finetune_optimizer!r}")
        self._check_seeds()
        if not isinstance(self.bootstrap_samples, numbers.Integral) or self.bootstrap_samples < 0 \
                or self.bootstrap_samples == 1:
            raise ValueError(f"bootstrap_samples must be 0 (off) or >= 2, got {self.bootstrap_samples!r}")
        if len(self.block_opts) % 2:
            raise ValueError(f"block_opts must be KEY VALUE pairs, got {self.block_opts}")
        if not isinstance(self.feature_images, numbers.Integral) or isinstance(self.feature_images, bool) \
                or self.feature_images < 0:
            raise ValueError(f"feature_images must be a non-negative integer (0: off), got {self.feature_images!r}")
        if self.severities and not self.normal_test_data:
            raise ValueError("severities need normal_test_data (--normal-test-data): the levels degrade "
                             "normal-light test images")
        for name in self.enhancers:
            if not parse_enhancer_name(name, "experiment enhancer"):
                raise ValueError(f"experiment enhancer {name!r}: 'none' is the pretrained row itself; "
                                 "give an enhancer such as 'clahe' or 'nlm+clahe'")
        self._check_enhancer_weights()
        if not isinstance(self.quality_images, numbers.Integral) or isinstance(self.quality_images, bool) \
                or self.quality_images < 0:
            raise ValueError(f"quality_images must be a non-negative integer (0: off), got {self.quality_images!r}")
        self._check_datasets()
        for name in ("weights", "zero_dce_weights"):
            path = getattr(self, name)
            # URLs (detectron2://, https://, ...) are fetched when used; local files must exist now.
            if path and "://" not in path and not os.path.isfile(path):
                raise FileNotFoundError(f"{name} (--{name.replace('_', '-')}) {path!r}: no such file; "
                                        "expected a checkpoint file or a URL")

    def enhancer_weights_file(self, method):
        """The user's weights for enhancer ``method`` ("" when trained here)."""
        if method == "zero_dce":
            return self.zero_dce_weights or self.enhancer_weights.get("zero_dce", "")
        return self.enhancer_weights.get(method, "")

    def _check_enhancer_weights(self):
        from ..enhance.trainable import TRAINABLE_ENHANCERS

        unknown = sorted(set(self.enhancer_weights) - set(TRAINABLE_ENHANCERS))
        if unknown:
            raise ValueError(f"enhancer_weights (--enhancer-weights) names {unknown}; expected methods with weights: "
                             f"{sorted(TRAINABLE_ENHANCERS)}")
        for method, path in self.enhancer_weights.items():
            if not path or not os.path.isfile(path):
                raise FileNotFoundError(f"enhancer_weights (--enhancer-weights) {method}={path!r}: no such file")
        from ..analysis.clean_pairs import has_clean_counterpart
        from ..enhance.trainable import trainable_parts

        for name in self.enhancers:
            for method in trainable_parts(name):
                supervision = TRAINABLE_ENHANCERS[method].supervision
                if not self.enhancer_weights_file(method) and supervision != "zero-reference" \
                        and not has_clean_counterpart(self.finetune_data, self.low_light_train):
                    raise ValueError(f"enhancer {method!r} is trained here on {supervision} clean and dark images, "
                                     f"but finetune_data {self.finetune_data!r} is neither degraded on the fly "
                                     "(--low-light-train) nor registered with a clean counterpart: give its weights "
                                     f"(--enhancer-weights {method}=FILE)")

    def _check_seeds(self):
        seeds = list(self.seeds)
        if not seeds:
            raise ValueError("seeds (--seeds) is empty; give at least one seed, e.g. --seeds 0 1 2")
        # < 2**32: numpy's and detectron2's seeding take 32-bit seeds (a larger one fails only
        # when the first run starts).
        bad = [s for s in seeds if not isinstance(s, numbers.Integral) or isinstance(s, bool) or not 0 <= s < 2**32]
        if bad:
            raise ValueError(f"seeds (--seeds) must be integers in [0, 2**32), got {bad}")
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            raise ValueError(f"seeds (--seeds) {seeds} repeat {dup}: a repeated seed is the same run twice "
                             "and would count as independent evidence")

    def _check_datasets(self):
        from detectron2.data import DatasetCatalog

        used = [("test_data", self.test_data), ("finetune_data", self.finetune_data)]
        if not self.weights:
            used.append(("pretrain_data", self.pretrain_data))
        if self.normal_test_data:
            used.append(("normal_test_data", self.normal_test_data))
        registered = DatasetCatalog.list()
        for field_name, name in used:
            if name not in registered:
                close = difflib.get_close_matches(str(name), registered, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(
                    f"{field_name} (--{field_name.replace('_', '-')}) {name!r} is not a registered dataset; "
                    f"expected a name of detectron2's DatasetCatalog ({len(registered)} registered){hint}"
                )

    def finetune_rows(self):
        """The fine-tuning rows to run, in table order."""
        return [r for r in FINETUNE_ROWS if r in self.rows]

    def identity(self):
        """What makes two runs the same experiment: every field but the output folder.

        Rows, seeds, iterations, learning rates and factors, severities, datasets, weights,
        detector, preset, overrides and enhancers all change a result; a folder holds one
        experiment (:func:`wnlb_d2.experiment.records.claim_output_folder`).
        """
        out = asdict(self)
        del out["output_dir"]
        # Fields added after results were recorded are left out at their defaults, so a folder
        # written before them is still the same experiment.
        for name, default in _LATER_FIELDS.items():
            if out[name] == default:
                del out[name]
        return out
