"""The paper's Table I experiment: pre-trained, fine-tuned, NLB and wNLB rows on low-light data.

Each row is a detectron2 training run (:class:`LowLightTrainer`) in this process, evaluated with
COCOEvaluator on the low-light test set:

* ``pretrained``: a model trained on normal light (the user's weights, or trained here on the
  normal-light data first); also evaluated on the normal-light test set.
* ``finetuned``: the same architecture fine-tuned on low-light data from those weights.
* ``nlb``: non-local blocks with residual fusion added, fine-tuned the same way.
* ``wnlb``: weighted non-local blocks, fine-tuned the same way.
* ``<enhancer>+pretrained`` (optional, ``enhancers``): two-stage baselines of the paper's
  Table II, the pre-trained model on enhanced low-light test images (:mod:`wnlb_d2.enhance`).

Every fine-tuning row starts from the same weights, sees the same number of iterations at the
same learning rate with the same seed, and trains what ``finetune_policy`` says (the paper:
only the backbone).
"""

import difflib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from detectron2.utils import comm

from .setup import setup_cfg
from .trainer import LowLightTrainer

__all__ = ["ExperimentSpec", "run_experiment", "ROWS", "METRICS", "results_markdown"]

logger = logging.getLogger(__name__)

#: Rows of the table, in order.
ROWS = ("pretrained", "finetuned", "nlb", "wnlb")
#: COCO metrics reported per task, as COCOEvaluator names them.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")

_WNLB_BACKBONES = {
    "build_resnet_fpn_backbone": "build_resnet_wnlb_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone": "build_retinanet_resnet_wnlb_fpn_backbone",
    "build_resnet_backbone": "build_resnet_wnlb_backbone",
}


@dataclass
class ExperimentSpec:
    """What to run. Dataset names are registered detectron2 datasets.

    Attributes:
        config_file: base config of the detector with the stock backbone (YAML or model_zoo://).
        output_dir: where every row writes its run and where the tables go.
        pretrain_data / finetune_data / test_data / normal_test_data: dataset names; the
            normal-light ones may be empty when ``weights`` is given.
        weights: normal-light weights (file or URL); empty: pre-train on ``pretrain_data``.
        pretrain_iters / finetune_iters: SOLVER.MAX_ITER of those runs.
        finetune_lr: SOLVER.BASE_LR of the fine-tuning rows (the paper: 5e-4).
        finetune_policy: SOLVER.FINETUNE_POLICY of the fine-tuning rows.
        wnlb_lr_factor: SOLVER.WNLB_LR_FACTOR of the fine-tuning rows (1.0: the paper's).
        rows: which rows to run (pretrained always runs: the others start from it).
        low_light_train / low_light_test: degrade on the fly (INPUT.LOW_LIGHT.TRAIN/TEST);
            False when the data is low-light already (offline copies, real low-light images).
        opts: extra ``KEY VALUE`` config overrides for every run.
        enhancers: two-stage rows to add, enhancer names such as "clahe" or "nlm+clahe"
            (``INPUT.ENHANCER.NAME``); each adds the row "<name>+pretrained".
        zero_dce_weights: Zero-DCE++ weights for "zero_dce" rows; empty: trained here for
            ``zero_dce_iters`` steps on the images of ``finetune_data``.
    """

    config_file: str
    output_dir: str
    test_data: str
    finetune_data: str
    pretrain_data: str = ""
    normal_test_data: str = ""
    weights: str = ""
    pretrain_iters: int = 600
    finetune_iters: int = 200
    finetune_lr: float = 5e-4
    finetune_policy: str = "backbone"
    wnlb_lr_factor: float = 1.0
    rows: List[str] = field(default_factory=lambda: list(ROWS))
    low_light_train: bool = False
    low_light_test: bool = False
    opts: List[str] = field(default_factory=list)
    enhancers: List[str] = field(default_factory=list)
    zero_dce_weights: str = ""
    zero_dce_iters: int = 300

    def validate(self):
        """Check everything that can be checked before any training, so a bad name or path
        fails in seconds, not after the pre-trained row has trained.

        Raises:
            ValueError: unknown rows, enhancers or dataset names; non-positive settings.
            FileNotFoundError: ``weights`` or ``zero_dce_weights`` names a missing local file.
        """
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown:
            raise ValueError(f"Unknown experiment rows {unknown}; expected a subset of {ROWS}")
        if not self.weights and not self.pretrain_data:
            raise ValueError("Give either weights (normal-light checkpoint) or pretrain_data to pre-train on")
        for name in ("pretrain_iters", "finetune_iters"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.finetune_lr > 0:
            raise ValueError(f"finetune_lr must be positive, got {self.finetune_lr}")
        if not self.wnlb_lr_factor > 0:
            raise ValueError(f"wnlb_lr_factor must be positive, got {self.wnlb_lr_factor}")
        from ..enhance.experiment import check_enhancer_names

        check_enhancer_names(self.enhancers)
        if self.zero_dce_iters <= 0:
            raise ValueError(f"zero_dce_iters must be positive, got {self.zero_dce_iters}")
        self._check_datasets()
        for name in ("weights", "zero_dce_weights"):
            path = getattr(self, name)
            # URLs (detectron2://, https://, ...) are fetched when used; local files must exist now.
            if path and "://" not in path and not os.path.isfile(path):
                raise FileNotFoundError(f"{name} (--{name.replace('_', '-')}) {path!r}: no such file; "
                                        "expected a checkpoint file or a URL")

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


def _row_opts(spec, row, weights):
    ll = ["INPUT.LOW_LIGHT.ENABLED", "True",
          "INPUT.LOW_LIGHT.TRAIN", str(spec.low_light_train), "INPUT.LOW_LIGHT.TEST", str(spec.low_light_test)]
    if row == "pretrained":
        # DATASETS.TEST empty: the rows are evaluated once, afterwards, by run_experiment.
        return ["DATASETS.TRAIN", f"('{spec.pretrain_data}',)", "DATASETS.TEST", "()",
                "SOLVER.MAX_ITER", str(spec.pretrain_iters),
                # one LR drop at 80 % of whatever length is asked for
                "SOLVER.STEPS", f"({max(1, int(0.8 * spec.pretrain_iters))},)", "INPUT.LOW_LIGHT.ENABLED", "False"]
    opts = ["DATASETS.TRAIN", f"('{spec.finetune_data}',)", "DATASETS.TEST", "()",
            "SOLVER.MAX_ITER", str(spec.finetune_iters), "SOLVER.BASE_LR", str(spec.finetune_lr),
            "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", str(min(20, spec.finetune_iters // 5)),
            "SOLVER.FINETUNE_POLICY", spec.finetune_policy, "SOLVER.WNLB_LR_FACTOR", str(float(spec.wnlb_lr_factor)),
            "MODEL.WEIGHTS", weights] + ll
    return opts


def _backbone_opts(base_cfg, row):
    if row not in ("nlb", "wnlb"):
        return []
    name = base_cfg.MODEL.BACKBONE.NAME
    wnlb_name = _WNLB_BACKBONES.get(name, name)
    return ["MODEL.BACKBONE.NAME", wnlb_name, "MODEL.WNLB.FUSION", "residual" if row == "nlb" else "weighted"]


def _evaluate(cfg, model, dataset, low_light):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (dataset,)
    cfg.INPUT.LOW_LIGHT.ENABLED = bool(low_light)
    cfg.INPUT.LOW_LIGHT.TEST = bool(low_light)
    cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, f"eval_{dataset}")
    cfg.freeze()
    return LowLightTrainer.test(cfg, model)


def _train_row(spec, row, weights):
    out = os.path.join(spec.output_dir, row)
    base = setup_cfg(spec.config_file, spec.opts)
    opts = list(spec.opts) + _row_opts(spec, row, weights) + _backbone_opts(base, row) + ["OUTPUT_DIR", out]
    cfg = setup_cfg(spec.config_file, opts)
    logger.info(f"[{row}] training {cfg.SOLVER.MAX_ITER} iterations on {cfg.DATASETS.TRAIN} -> {out}")
    t0 = time.perf_counter()
    trainer = LowLightTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    seconds = time.perf_counter() - t0
    model = getattr(trainer.model, "module", trainer.model)
    return cfg, model, seconds, os.path.join(out, "model_final.pth")


def run_experiment(spec: ExperimentSpec):
    """Train and evaluate the requested rows; write ``results.json`` and ``results.md``.

    Returns:
        dict: ``{row: {"segm": {...}, "bbox": {...}}, ..., "pretrained_normal_light": {...},
        "meta": {...}}`` with COCOEvaluator's results as detectron2 returns them.
    """
    spec.validate()
    os.makedirs(spec.output_dir, exist_ok=True)
    results, seconds, models = {}, {}, {}
    t_start = time.perf_counter()

    if spec.weights:
        cfg = setup_cfg(spec.config_file, list(spec.opts) + ["MODEL.WEIGHTS", spec.weights,
                                                               "OUTPUT_DIR", os.path.join(spec.output_dir, "pretrained")])
        model = LowLightTrainer.build_model(cfg)
        LowLightTrainer.load_for_inference(cfg, model)
        pre_weights, seconds["pretrained"] = spec.weights, 0.0
    else:
        cfg, model, seconds["pretrained"], pre_weights = _train_row(spec, "pretrained", "")
    models["pretrained"] = (cfg, model)
    results["pretrained"] = _evaluate(cfg, model, spec.test_data, spec.low_light_test)
    if spec.normal_test_data:
        results["pretrained_normal_light"] = _evaluate(cfg, model, spec.normal_test_data, False)
    if spec.enhancers:
        from ..enhance.experiment import enhancer_row_configs

        row_cfgs, zero_dce_weights = enhancer_row_configs(spec, cfg, spec.finetune_data)
        for row, row_cfg in row_cfgs:
            results[row] = _evaluate(row_cfg, model, spec.test_data, spec.low_light_test)
        if zero_dce_weights:
            results.setdefault("meta", {})["zero_dce_weights"] = zero_dce_weights

    for row in [r for r in ROWS[1:] if r in spec.rows]:
        cfg, model, seconds[row], _ = _train_row(spec, row, pre_weights)
        models[row] = (cfg, model)
        results[row] = _evaluate(cfg, model, spec.test_data, spec.low_light_test)
        if row == "wnlb":
            from .hooks import wnlb_weights

            results.setdefault("meta", {})["wnlb_weights"] = wnlb_weights(model)

    meta = results.setdefault("meta", {})
    meta.update({"spec": asdict(spec), "train_seconds": seconds,
                 "total_seconds": time.perf_counter() - t_start, "pretrained_weights": pre_weights})
    if comm.is_main_process():
        _write(spec.output_dir, "results.json", json.dumps(results, indent=1, default=float))
        _write(spec.output_dir, "results.md", results_markdown(results))
    return results, models


def _write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def results_markdown(results):
    """A Table-I-style Markdown table (segm and bbox AP columns, one line per row).

    Two-stage rows ("<enhancer>+pretrained") follow the pretrained row.
    """
    from ..enhance.experiment import enhancer_rows

    order = [ROWS[0]] + enhancer_rows(results) + list(ROWS[1:]) + ["pretrained_normal_light"]
    rows = [r for r in order if r in results]
    head = "| row | " + " | ".join(f"segm {m}" for m in METRICS) + " | " + " | ".join(f"bbox {m}" for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(METRICS))]
    for r in rows:
        cells = []
        for task in ("segm", "bbox"):
            res = results[r].get(task, {})
            cells += [f"{res[m]:.1f}" if m in res and res[m] == res[m] else "-" for m in METRICS]
        label = "pretrained (normal-light test)" if r == "pretrained_normal_light" else r
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
