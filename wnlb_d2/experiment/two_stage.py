"""Two-stage rows of the study (the paper's Table II): an image enhancer, then the pre-trained detector.

Row ``"<enhancer>+pretrained"`` evaluates the pre-trained (normal-light) model on the low-light
test images after the enhancer, e.g. ``"nlm+clahe+pretrained"`` or ``"retinexformer+pretrained"``.

Enhancers with weights (:data:`~wnlb_d2.enhance.trainable.TRAINABLE_ENHANCERS`: Zero-DCE++,
RetinexFormer, AGLLNet, EnlightenGAN) use the user's file (``enhancer_weights``, e.g. the
authors' released weights), or are trained here, once per seed of the study, on the fine-tuning
images (:func:`~wnlb_d2.enhance.trainable.train_enhancer_on_dataset`): such a row is evaluated
once per seed, so it has a spread and pairs with the fine-tuning rows by seed.
"""

import logging
import os

from detectron2.utils import comm

from ..enhance.trainable import TRAINABLE_ENHANCERS, train_enhancer_on_dataset, trainable_parts
from .stats import paired_difference, summarise
from .spec import METRICS, TASKS

__all__ = ["ENHANCER_ROW_SUFFIX", "enhancer_row_name", "enhancer_rows", "enhancer_run_folder",
           "planned_enhancer_folders", "EnhancerWeights", "enhancer_overrides", "two_stage_statistics"]

logger = logging.getLogger(__name__)

#: Row names are ``<enhancer name> + ENHANCER_ROW_SUFFIX``.
ENHANCER_ROW_SUFFIX = "+pretrained"


def enhancer_row_name(enhancer):
    """``"nlm+clahe"`` -> ``"nlm+clahe+pretrained"``."""
    return enhancer + ENHANCER_ROW_SUFFIX


def enhancer_rows(results):
    """The two-stage row names present in ``results``, in insertion order."""
    return [k for k in results if isinstance(k, str) and k.endswith(ENHANCER_ROW_SUFFIX)]


def enhancer_run_folder(method, seed):
    """The run folder (in the study's output) of ``method``'s weights trained with ``seed``."""
    return f"enhancer_{method}_seed{seed}"


def planned_enhancer_folders(spec):
    """The run folders of the enhancers this study trains (those without given weights)."""
    methods = {m for name in spec.enhancers for m in trainable_parts(name) if not spec.enhancer_weights_file(m)}
    return [enhancer_run_folder(m, s) for m in sorted(methods) for s in spec.seeds]


class EnhancerWeights:
    """The weights of a study's enhancers: given by the user, or trained here per seed.

    Weights trained by an earlier run of the same training (its ``run.json`` identity: method,
    data, degradation, steps, seed) are kept; anything else in that folder is trained afresh.

    Args:
        spec (ExperimentSpec): the study.
        low_light_cfg (CfgNode): its ``INPUT.LOW_LIGHT`` degrades the training images.
        write (bool): whether this process trains and writes (the main process).
    """

    def __init__(self, spec, low_light_cfg, write=True):
        self.spec = spec
        self.low_light_cfg = low_light_cfg
        self.write = write

    def seeded(self, name):
        """Whether row ``name`` uses weights trained here (then it is evaluated once per seed)."""
        return any(not self.spec.enhancer_weights_file(m) for m in trainable_parts(name))

    def _iters(self, method):
        return self.spec.zero_dce_iters if method == "zero_dce" else self.spec.enhancer_iters

    def _trained(self, method, seed):
        from .records import RunRecord

        spec = self.spec
        folder = os.path.join(spec.output_dir, enhancer_run_folder(method, seed))
        identity = {"method": method, "dataset": spec.finetune_data, "degrade": bool(spec.low_light_train),
                    "low_light": self.low_light_cfg.INPUT.LOW_LIGHT.dump() if spec.low_light_train else "",
                    "iters": self._iters(method), "seed": seed}
        record = RunRecord(folder, identity, write=self.write)
        weights = os.path.join(folder, TRAINABLE_ENHANCERS[method].weights_file)
        if record.trained is not None:
            logger.info(f"Using the {method} weights trained by an earlier run of this training: {weights}")
            return weights, identity
        record.start(can_resume=False)
        if self.write:
            train_enhancer_on_dataset(method, spec.finetune_data, self.low_light_cfg, weights,
                                      degrade=spec.low_light_train, iters=self._iters(method), seed=seed)
        comm.synchronize()
        record.finish(weights=weights)
        return weights, identity

    def for_row(self, name, seed):
        """The weights of row ``name``'s enhancers with ``seed``, training what is missing.

        Returns:
            tuple[dict, dict]: method -> weights file, and what identifies them (recorded with
            every evaluation that uses them).
        """
        files, identity = {}, {}
        for method in trainable_parts(name):
            given = self.spec.enhancer_weights_file(method)
            if given:
                files[method], identity[method] = given, {"weights": given}
            else:
                files[method], identity[method] = self._trained(method, seed)
        return files, identity


def enhancer_overrides(name, weights):
    """The config overrides that put enhancer ``name`` in front of the detector at test time.

    Args:
        name (str): the enhancer name, e.g. "nlm+retinexformer".
        weights (dict): method -> weights file, for its parts with weights.
    """
    out = {"INPUT.ENHANCER.NAME": name, "INPUT.ENHANCER.TEST": True}
    for method, path in weights.items():
        out[f"INPUT.ENHANCER.{method.upper()}.WEIGHTS"] = path
    return out


def two_stage_statistics(results, two_stage_runs, finetune_runs):
    """Means, spreads and paired differences of the seeded two-stage rows.

    Args:
        results (dict): the study's results (``results["pretrained"]`` is read).
        two_stage_runs (list[dict]): ``{"row", "seed", <task>: {metric: value}}`` per evaluation.
        finetune_runs (list[dict]): the fine-tuning runs (``row``, ``seed``, tasks).

    Returns:
        tuple[dict, dict]: ``summary[row][task][metric]`` (mean, std, n) and
        ``paired["<row>-vs-pretrained" | "<row>-vs-wnlb"][task][metric]`` (mean_diff, ci95, std, n):
        against the pre-trained row (one model: each seed's difference to it) and against the
        wNLB row by seed.
    """
    summary, paired = {}, {}
    wnlb = {r["seed"]: r for r in finetune_runs if r["row"] == "wnlb"}
    for row in dict.fromkeys(r["row"] for r in two_stage_runs):
        runs = [r for r in two_stage_runs if r["row"] == row]
        summary[row] = {t: {m: summarise([r[t].get(m, float("nan")) for r in runs]) for m in METRICS}
                        for t in TASKS if all(t in r for r in runs)}
        base = results.get("pretrained", {})
        paired[f"{row}-vs-pretrained"] = {
            t: {m: paired_difference([r[t].get(m, float("nan")) for r in runs],
                                     [base[t].get(m, float("nan"))] * len(runs)) for m in METRICS}
            for t in summary[row] if t in base}
        seeds = [r["seed"] for r in runs if r["seed"] in wnlb]
        if seeds:
            by = {r["seed"]: r for r in runs}
            paired[f"{row}-vs-wnlb"] = {
                t: {m: paired_difference([by[s][t].get(m, float("nan")) for s in seeds],
                                         [wnlb[s][t].get(m, float("nan")) for s in seeds]) for m in METRICS}
                for t in summary[row] if all(t in wnlb[s] for s in seeds)}
    return summary, paired
