"""The study runner: every row of Table I (and II), once per seed, with statistics and severity curves.

Steps, in order (everything that can fail on bad input is checked before the first one):

1. the pre-trained row: the user's normal-light weights, or trained here on ``pretrain_data``;
   evaluated on the low-light test set and, when given, the normal-light one;
2. two-stage rows (``enhancers``): Zero-DCE++ weights are obtained first (given, or trained),
   then the pre-trained model is evaluated behind each enhancer;
3. for each seed, each fine-tuning row (finetuned, nlb, wnlb) from the pre-trained weights;
4. every row at every severity level (evaluation only);
5. summaries, paired differences with 95 % intervals, ``results.json`` and ``results.md``.

``results.json`` layout (see docs/experiments.md): per-row entries (COCOEvaluator's results; for
fine-tuning rows the mean over seeds), ``runs``, ``summary``, ``paired``, ``severity``,
``severity_levels`` and ``meta``.
"""

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict

from detectron2.utils import comm

from ..utils.io import atomic_write_json, atomic_write_text, folder_lock
from .family import TrainedRow, build_detector_family
from ..analysis.clean_pairs import NoCleanCounterpartError, has_clean_counterpart
from .feature_tables import feature_sections
from .records import RunRecord, claim_output_folder
from .report import results_markdown
from .severity import severity_levels
from .spec import FINETUNE_ROWS, METRICS, PAIRS, TASKS, pair_name
from .stats import paired_difference, summarise
from .two_stage import (EnhancerWeights, enhancer_overrides, enhancer_row_name, planned_enhancer_folders,
                        two_stage_statistics)

__all__ = ["run_experiment", "check_output_folder", "planned_run_folders", "summarise_runs", "paired_differences",
           "RESULTS_VERSION"]

logger = logging.getLogger(__name__)

#: Version of the results.json layout written here (2: runs, summary, paired, severity).
RESULTS_VERSION = 2


def _metric_values(runs, row, task, metric):
    return [r[task].get(metric, float("nan")) for r in runs if r["row"] == row and task in r]


def summarise_runs(runs):
    """``summary[row][task][metric] = {"mean", "std", "n"}`` over the runs (seeds) of each row."""
    summary = {}
    for row in dict.fromkeys(r["row"] for r in runs):
        summary[row] = {}
        for task in TASKS:
            if not any(task in r for r in runs if r["row"] == row):
                continue
            summary[row][task] = {m: summarise(_metric_values(runs, row, task, m)) for m in METRICS}
    return summary


def paired_differences(runs):
    """``paired["wnlb-vs-finetuned"][task][metric] = {"mean_diff", "ci95", "std", "n"}``, paired by seed."""
    by = {(r["row"], r["seed"]): r for r in runs}
    rows = {r["row"] for r in runs}
    out = {}
    for first, second in PAIRS:
        if first not in rows or second not in rows:
            continue
        seeds = [s for (row, s) in by if row == first and (second, s) in by]
        entry = {}
        for task in TASKS:
            if not all(task in by[(first, s)] and task in by[(second, s)] for s in seeds) or not seeds:
                continue
            entry[task] = {m: paired_difference([by[(first, s)][task].get(m, float("nan")) for s in seeds],
                                                [by[(second, s)][task].get(m, float("nan")) for s in seeds])
                           for m in METRICS}
        out[pair_name(first, second)] = entry
    return out


def _row_means(runs, row):
    """A per-row entry in COCOEvaluator's layout: each metric's mean over the row's runs."""
    tasks = [t for t in TASKS if any(t in r for r in runs if r["row"] == row)]
    return {t: {m: summarise(_metric_values(runs, row, t, m))["mean"] for m in METRICS} for t in tasks}


def _ap_only(result):
    return {t: {"AP": result[t]["AP"]} for t in TASKS if t in result}


def _bootstrap_of(result):
    out = {}
    for task in TASKS:
        res = result.get(task, {})
        if "AP-ci95-lo" in res:
            out[task] = {"AP": res.get("AP"), "ci95": [res["AP-ci95-lo"], res["AP-ci95-hi"]]}
    return out


def _run_folder(spec, row, seed):
    return row if len(spec.seeds) == 1 else f"{row}_seed{seed}"


def planned_run_folders(spec):
    """The run folders (names in ``spec.output_dir``) that ``spec`` trains or evaluates in."""
    names = ["pretrained"] + [_run_folder(spec, row, seed) for seed in spec.seeds for row in spec.finetune_rows()]
    return names + planned_enhancer_folders(spec)


def check_output_folder(spec, overwrite=False):
    """Refuse, before anything is written, a folder that holds another experiment's results.

    Raises:
        FileExistsError: naming the file, the fields that differ and how to proceed.
    """
    claim_output_folder(spec.output_dir, spec.identity(), planned_run_folders(spec), overwrite, dry_run=True)


def _pretrain_identity(spec, family):
    """Everything that changes the pre-trained row's weights."""
    base = {"detector": spec.detector, "config_file": spec.config_file, "opts": list(spec.opts),
            **family.train_identity()}
    if spec.weights:
        return {**base, "weights": spec.weights}
    return {**base, "pretrain_data": spec.pretrain_data, "pretrain_iters": spec.pretrain_iters, "seed": spec.seeds[0]}


def _finetune_identity(spec, row, seed, pretrained_identity):
    """Everything that changes a fine-tuning row's weights (the pre-trained row's included)."""
    out = {"row": row, "seed": seed, "pretrained": pretrained_identity, "finetune_data": spec.finetune_data,
           "finetune_iters": spec.finetune_iters, "finetune_lr": spec.finetune_lr,
           "finetune_optimizer": spec.finetune_optimizer, "finetune_policy": spec.finetune_policy,
           "low_light_train": spec.low_light_train}
    if row in ("nlb", "wnlb"):
        out.update(wnlb_lr_factor=spec.wnlb_lr_factor, wnlb_weight_lr_factor=spec.wnlb_weight_lr_factor,
                   block_opts=list(spec.block_opts))
    if row == "wnlb":
        out["wnlb_weight_init"] = spec.wnlb_weight_init
    return out


class _Runs:
    """Training and evaluation through the runs' records: what a record holds is not redone.

    Args:
        spec (ExperimentSpec), family (DetectorFamily): the study.
        write (bool): whether this process writes records (the main process).
    """

    def __init__(self, spec, family, write):
        self.spec, self.family, self.write = spec, family, write
        self.records = {}
        self.features_note = ""
        if not spec.feature_images:
            self.features_note = "not measured (feature_images 0)"
        elif not has_clean_counterpart(spec.test_data, spec.low_light_test):
            self.features_note = (f"not measured: the test set {spec.test_data} has no clean counterparts (it is not "
                                  "degraded on the fly and its metadata names no 'clean_counterpart')")
        if self.features_note:
            logger.info(f"Normalised feature error: {self.features_note}")

    def train(self, name, identity, row, seed, train_fn):
        """The run in folder ``name``: from its record when it finished with ``identity``, else
        trained by ``train_fn(output_dir, resume)`` (resumed from its last checkpoint when a run of
        the same identity was interrupted and the family can resume)."""
        folder = os.path.join(self.spec.output_dir, name)
        record = RunRecord(folder, identity, write=self.write)
        self.records[folder] = record
        done = record.trained
        if done is not None:
            logger.info(f"[{row}] seed {seed}: kept from an earlier run of this experiment ({folder}/run.json)")
            return TrainedRow(row=row, seed=seed, weights=done["weights"], output_dir=folder,
                              seconds=done["seconds"], w_trajectory=done["w_trajectory"]), done["w"]
        resume = record.start(can_resume=self.family.can_resume)
        if resume:
            logger.info(f"[{row}] seed {seed}: resuming the interrupted run in {folder}")
        trained = train_fn(folder, resume)
        w = self.family.block_weights(trained)
        record.finish(weights=trained.weights, seconds=trained.seconds, w=w, w_trajectory=trained.w_trajectory)
        return trained, w

    def evaluate(self, trained, dataset, low_light, name, overrides=None, extra_identity=None):
        """COCO results of ``trained`` on ``dataset``; from its run's record when made the same way."""
        record = self.records[trained.output_dir]
        identity = {"dataset": dataset, "low_light": bool(low_light), "overrides": overrides or {},
                    "bootstrap_samples": self.spec.bootstrap_samples, **(extra_identity or {})}
        result = record.evaluation(name, identity)
        if result is not None:
            return result
        if trained.handle is None:
            self.family.reload(trained)
        result = self.family.evaluate(trained, dataset, low_light=low_light, overrides=overrides,
                                      output_dir=os.path.join(trained.output_dir, f"eval_{name}"))
        result = json.loads(json.dumps(dict(result), default=float))  # as the record gives it back
        record.add_evaluation(name, identity, result)
        return result

    def image_quality(self, trained, name, files, tag, identity, low_light_cfg):
        """PSNR/SSIM of enhancer ``name`` (None: the dark images) on the test set's clean pairs, or None.

        Kept in ``trained``'s run record (the pre-trained run, which every two-stage row uses), so
        a rerun of the study does not enhance the images again.

        Args:
            trained (TrainedRow): the run whose record keeps the result.
            name (str or None): the enhancer; None measures the dark images themselves.
            files (dict): method -> weights file of the enhancer's parts.
            tag (str): the evaluation's name in the record.
            identity: what makes the enhancer (its weights' identity), compared on a rerun.
            low_light_cfg (CfgNode): the study's ``INPUT.LOW_LIGHT``.
        """
        spec = self.spec
        if not spec.quality_images or not has_clean_counterpart(spec.test_data, spec.low_light_test):
            return None
        record = self.records[trained.output_dir]
        key = {"dataset": spec.test_data, "low_light": bool(spec.low_light_test), "images": spec.quality_images,
               "enhancers": identity}
        result = record.evaluation(f"quality_{tag}", key)
        if result is None:
            result = json.loads(json.dumps(_image_quality(spec, low_light_cfg, name, files), default=float))
            record.add_evaluation(f"quality_{tag}", key, result)
        return result

    def feature_errors(self, trained):
        """Per-image NFE and non-local shares of ``trained`` on the test set (None when not measured)."""
        if self.features_note:
            return None
        spec = self.spec
        record = self.records[trained.output_dir]
        identity = {"dataset": spec.test_data, "low_light": bool(spec.low_light_test), "images": spec.feature_images}
        result = record.evaluation("features", identity)
        if result is not None:
            return result
        if trained.handle is None:
            self.family.reload(trained)
        try:
            result = self.family.feature_errors(trained, spec.test_data, low_light=spec.low_light_test,
                                                num_images=spec.feature_images)
        except (NotImplementedError, NoCleanCounterpartError) as e:
            self.features_note = f"not measured: {e}"
            logger.warning(f"Normalised feature error {self.features_note}")
            return None
        result = json.loads(json.dumps(result, default=float))
        record.add_evaluation("features", identity, result)
        return result


def run_experiment(spec, overwrite=False):
    """Train and evaluate the requested rows; write ``results.json`` and ``results.md``.

    The output folder is locked for the whole run (a second run on it stops at once), belongs to
    one experiment (another one is refused unless ``overwrite``), and every run keeps a record:
    a rerun of the same experiment keeps what finished and resumes what was interrupted
    (:mod:`wnlb_d2.experiment.records`).

    Args:
        spec (ExperimentSpec): the study.
        overwrite (bool): replace the results of another experiment in ``spec.output_dir``.

    Returns:
        tuple[dict, dict]: the results (the layout of ``results.json``) and the trained rows
        ``{row: TrainedRow}`` of the last seed (plus "pretrained"), for pictures.

    Raises:
        FolderLockedError: another process runs in ``spec.output_dir``.
        FileExistsError: another experiment's results are there (without ``overwrite``).
    """
    spec.validate()
    family = build_detector_family(spec)
    family.validate()
    levels = severity_levels(family.low_light_config(), spec.severities) if spec.severities else []
    write = comm.is_main_process()
    with folder_lock(spec.output_dir) if write else contextlib.nullcontext():
        claim_output_folder(spec.output_dir, spec.identity(), planned_run_folders(spec), overwrite, dry_run=not write)
        return _run(spec, family, levels, _Runs(spec, family, write), write)


def _run(spec, family, levels, runs_io, write):
    t_start = time.perf_counter()
    results = {"version": RESULTS_VERSION}
    seconds = {}
    out = spec.output_dir
    evaluate = runs_io.evaluate

    # 1. pre-trained
    pre_identity = _pretrain_identity(spec, family)
    if spec.weights:
        pretrained, _ = runs_io.train("pretrained", pre_identity, "pretrained", None,
                                      lambda folder, resume: family.load(spec.weights, folder))
    else:
        pretrained, _ = runs_io.train("pretrained", pre_identity, "pretrained", None,
                                      lambda folder, resume: family.pretrain(folder, resume=resume))
    seconds["pretrained"] = pretrained.seconds
    results["pretrained"] = evaluate(pretrained, spec.test_data, spec.low_light_test, spec.test_data)
    if spec.normal_test_data:
        results["pretrained_normal_light"] = evaluate(pretrained, spec.normal_test_data, False, spec.normal_test_data)
    pretrained_features = runs_io.feature_errors(pretrained)

    # 2. two-stage rows: once, or once per seed for enhancers trained here
    low_light_cfg = family.low_light_config()
    enhancer_weights = EnhancerWeights(spec, low_light_cfg, write=write)
    two_stage_runs, quality, weights_used = [], {}, {}
    for name in spec.enhancers:
        row = enhancer_row_name(name)
        for seed in (spec.seeds if enhancer_weights.seeded(name) else [None]):
            files, identity = enhancer_weights.for_row(name, spec.seeds[0] if seed is None else seed)
            tag = f"{spec.test_data}_{name}" + ("" if seed is None else f"_seed{seed}")
            weights_used[name if seed is None else f"{name} seed {seed}"] = files
            res = evaluate(pretrained, spec.test_data, spec.low_light_test, tag, enhancer_overrides(name, files),
                           {"enhancers": identity})
            if seed is None:
                results[row] = res
            else:
                two_stage_runs.append({"row": row, "seed": seed, **{t: res[t] for t in TASKS if t in res}})
            if write:
                quality.setdefault(row, []).append(
                    runs_io.image_quality(pretrained, name, files, tag, identity, low_light_cfg))
        if enhancer_weights.seeded(name):
            results[row] = _row_means(two_stage_runs, row)
    if write and spec.enhancers:
        quality["pretrained"] = [runs_io.image_quality(pretrained, None, {}, spec.test_data, None, low_light_cfg)]
        results["image_quality"] = {row: _mean_quality(q) for row, q in quality.items() if q[0] is not None}

    # 3. fine-tuning rows, once per seed
    runs, trained_rows, severity_runs = [], {"pretrained": pretrained}, []
    for seed in spec.seeds:
        for row in spec.finetune_rows():
            trained, w = runs_io.train(
                _run_folder(spec, row, seed), _finetune_identity(spec, row, seed, pre_identity), row, seed,
                lambda folder, resume, row=row, seed=seed: family.finetune(row, pretrained, seed, folder,
                                                                           resume=resume))
            seconds[f"{row}_seed{seed}"] = trained.seconds
            res = evaluate(trained, spec.test_data, spec.low_light_test, spec.test_data)
            run = {"row": row, "seed": seed, **{t: res[t] for t in TASKS if t in res},
                   "w": w, "w_trajectory": trained.w_trajectory, "seconds": trained.seconds}
            features = runs_io.feature_errors(trained)
            if features:
                run["feature_errors"] = features
            if levels:
                run["severity"] = _severity_of(evaluate, trained, spec, levels)
            runs.append(run)
            if row in trained_rows and trained_rows[row] is not pretrained:
                family.release(trained_rows[row])
            trained_rows[row] = trained
    if levels:
        pre_sev = _severity_of(evaluate, pretrained, spec, levels)
        severity_runs.append(("pretrained", pre_sev))
        for name in spec.enhancers:
            # A two-stage row at each level: that level's images, then the enhancer.
            # Enhancers trained here: the first seed's weights (one curve per row).
            files, identity = enhancer_weights.for_row(name, spec.seeds[0])
            sev = {}
            for level, values in levels:
                res = evaluate(pretrained, spec.normal_test_data, True, f"severity_{level}_{name}",
                               {**values, **enhancer_overrides(name, files)}, {"enhancers": identity})
                sev[level] = _ap_only(res)
            severity_runs.append((enhancer_row_name(name), sev))
    for trained in trained_rows.values():  # the pictures draw them
        if trained.handle is None:
            family.reload(trained)
    # 4. tables
    for row in FINETUNE_ROWS:
        if any(r["row"] == row for r in runs):
            results[row] = _row_means(runs, row)
    results["runs"] = runs
    results["summary"] = summarise_runs(runs)
    results["paired"] = paired_differences(runs)
    if two_stage_runs:
        results["two_stage_runs"] = two_stage_runs
        two_summary, two_paired = two_stage_statistics(results, two_stage_runs, runs)
        results["summary"].update(two_summary)
        results["paired"].update(two_paired)
    if runs_io.features_note:
        results["features_note"] = runs_io.features_note
    else:
        results.update(feature_sections(runs, pretrained_features, spec.bootstrap_samples))
    results["bootstrap"] = {row: _bootstrap_of(results[row]) for row in ("pretrained",) if row in results}
    for r in runs:
        r["bootstrap"] = _bootstrap_of(r)
    if levels:
        results["severity_levels"] = {name: values for name, values in levels}
        severity = {row: sev for row, sev in severity_runs}
        for row in FINETUNE_ROWS:
            row_runs = [r["severity"] for r in runs if r["row"] == row]
            if row_runs:
                severity[row] = {level: {t: {"AP": summarise([rr[level][t]["AP"] for rr in row_runs])["mean"],
                                             "std": summarise([rr[level][t]["AP"] for rr in row_runs])["std"]}
                                         for t in TASKS if t in row_runs[0][level]}
                                 for level, _ in levels}
        results["severity"] = severity
    results["meta"] = {"spec": asdict(spec), "identity": spec.identity(), "train_seconds": seconds,
                       "total_seconds": time.perf_counter() - t_start,
                       "pretrained_weights": pretrained.weights, "enhancer_weights": weights_used,
                       "wnlb_weights": {f"seed{r['seed']}": r["w"] for r in runs if r["row"] == "wnlb"}}
    if write:
        atomic_write_json(os.path.join(out, "results.json"), results, indent=1, default=float)
        atomic_write_text(os.path.join(out, "results.md"), results_markdown(results))
    return results, trained_rows


def _image_quality(spec, low_light_cfg, name, weights):
    """PSNR/SSIM of enhancer ``name`` (None: the dark images) on ``spec.quality_images`` clean pairs."""
    from ..enhance import build_enhancer
    from ..enhance.quality import enhancer_quality, evaluation_pairs

    enhancer = build_enhancer(name, {m: {"weights": w} for m, w in weights.items()}) if name else None
    pairs = evaluation_pairs(spec.test_data, degraded_on_the_fly=spec.low_light_test, low_light_cfg=low_light_cfg,
                             num_images=spec.quality_images)
    return enhancer_quality(enhancer, pairs, progress=False)


def _mean_quality(per_seed):
    """``{"psnr": {"mean", "std", "n"}, "ssim": ...}``: the mean over seeds of the per-image means;
    ``std`` across seeds when several, else across images."""
    if len(per_seed) == 1:
        return per_seed[0]
    return {k: summarise([q[k]["mean"] for q in per_seed]) for k in ("psnr", "ssim")}


def _severity_of(evaluate, trained, spec, levels):
    return {level: _ap_only(evaluate(trained, spec.normal_test_data, True, f"severity_{level}", values))
            for level, values in levels}

