"""The study runner: every row of Table I (and II), once per seed, with statistics and severity curves.

Steps, in order (everything that can fail on bad input is checked before the first one):

1. the pre-trained row: the user's normal-light weights, or trained here on ``pretrain_data``;
   evaluated on the low-light test set and, when given, the normal-light one;
2. two-stage rows (``enhancers``): Zero-DCE++ weights are obtained first (given, or trained),
   then the pre-trained model is evaluated behind each enhancer;
3. for each seed, each fine-tuning row (finetuned, nlb, wnlb) from the pre-trained weights;
4. every row at every severity level (evaluation only);
5. summaries, paired differences with 95 % intervals, ``results.json`` and ``results.md``.

``results.json`` layout (see the README): per-row entries (COCOEvaluator's results; for
fine-tuning rows the mean over seeds), ``runs``, ``summary``, ``paired``, ``severity``,
``severity_levels`` and ``meta``.
"""

import json
import logging
import os
import time
from dataclasses import asdict

from detectron2.utils import comm

from ..utils.io import atomic_write_json, atomic_write_text
from .family import build_detector_family
from .report import results_markdown
from .severity import severity_levels
from .spec import FINETUNE_ROWS, METRICS, PAIRS, TASKS, pair_name
from .stats import paired_difference, summarise
from .two_stage import enhancer_overrides, enhancer_row_name, zero_dce_weights_for

__all__ = ["run_experiment", "check_output_folder", "summarise_runs", "paired_differences", "RESULTS_VERSION"]

logger = logging.getLogger(__name__)

#: Version of the results.json layout written here (2: runs, summary, paired, severity).
RESULTS_VERSION = 2


def check_output_folder(spec, overwrite=False):
    """Refuse to replace the results of a different experiment in ``spec.output_dir``.

    A folder whose ``results.json`` was written by a run with another identity (preset,
    detector, config, data), or by an older version without one, is left alone unless
    ``overwrite``.

    Raises:
        FileExistsError: naming the file, what it holds and how to proceed.
    """
    path = os.path.join(spec.output_dir, "results.json")
    if overwrite or not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
        identity = old.get("meta", {}).get("identity")
    except (OSError, ValueError, AttributeError):
        identity = None
    if identity == spec.identity():
        return
    what = "an older results layout without a recorded experiment" if identity is None \
        else f"another experiment ({identity})"
    raise FileExistsError(f"{path} holds the results of {what}; choose another --output, or pass "
                          "--overwrite to replace them")


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


def run_experiment(spec, overwrite=False):
    """Train and evaluate the requested rows; write ``results.json`` and ``results.md``.

    Args:
        spec (ExperimentSpec): the study.
        overwrite (bool): replace the results of another experiment in ``spec.output_dir``.

    Returns:
        tuple[dict, dict]: the results (the layout of ``results.json``) and the trained rows
        ``{row: TrainedRow}`` of the last seed (plus "pretrained"), for pictures.
    """
    spec.validate()
    family = build_detector_family(spec)
    family.validate()
    levels = severity_levels(family.low_light_config(), spec.severities) if spec.severities else []
    check_output_folder(spec, overwrite)
    os.makedirs(spec.output_dir, exist_ok=True)
    t_start = time.perf_counter()
    results = {"version": RESULTS_VERSION}
    seconds = {}
    out = spec.output_dir

    def evaluate(trained, dataset, low_light, name, overrides=None):
        return family.evaluate(trained, dataset, low_light=low_light, overrides=overrides,
                               output_dir=os.path.join(trained.output_dir, f"eval_{name}"))

    # 1. pre-trained
    if spec.weights:
        pretrained = family.load(spec.weights, os.path.join(out, "pretrained"))
    else:
        pretrained = family.pretrain(os.path.join(out, "pretrained"))
    seconds["pretrained"] = pretrained.seconds
    results["pretrained"] = evaluate(pretrained, spec.test_data, spec.low_light_test, spec.test_data)
    if spec.normal_test_data:
        results["pretrained_normal_light"] = evaluate(pretrained, spec.normal_test_data, False, spec.normal_test_data)

    # 2. two-stage rows
    zero_dce = zero_dce_weights_for(spec, family.low_light_config())
    for name in spec.enhancers:
        results[enhancer_row_name(name)] = evaluate(pretrained, spec.test_data, spec.low_light_test,
                                                    f"{spec.test_data}_{name}", enhancer_overrides(name, zero_dce))

    # 3. fine-tuning rows, once per seed
    runs, trained_rows, severity_runs = [], {"pretrained": pretrained}, []
    for seed in spec.seeds:
        for row in spec.finetune_rows():
            run_dir = os.path.join(out, row if len(spec.seeds) == 1 else f"{row}_seed{seed}")
            trained = family.finetune(row, pretrained, seed, run_dir)
            seconds[f"{row}_seed{seed}"] = trained.seconds
            res = evaluate(trained, spec.test_data, spec.low_light_test, spec.test_data)
            run = {"row": row, "seed": seed, **{t: res[t] for t in TASKS if t in res},
                   "w": family.block_weights(trained), "w_trajectory": trained.w_trajectory,
                   "seconds": trained.seconds}
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
            sev = {}
            for level, values in levels:
                res = evaluate(pretrained, spec.normal_test_data, True, f"severity_{level}_{name}",
                               {**values, **enhancer_overrides(name, zero_dce)})
                sev[level] = _ap_only(res)
            severity_runs.append((enhancer_row_name(name), sev))

    # 4. tables
    for row in FINETUNE_ROWS:
        if any(r["row"] == row for r in runs):
            results[row] = _row_means(runs, row)
    results["runs"] = runs
    results["summary"] = summarise_runs(runs)
    results["paired"] = paired_differences(runs)
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
                       "pretrained_weights": pretrained.weights, "zero_dce_weights": zero_dce,
                       "wnlb_weights": {f"seed{r['seed']}": r["w"] for r in runs if r["row"] == "wnlb"}}
    if comm.is_main_process():
        atomic_write_json(os.path.join(out, "results.json"), results, indent=1, default=float)
        atomic_write_text(os.path.join(out, "results.md"), results_markdown(results))
    return results, trained_rows


def _severity_of(evaluate, trained, spec, levels):
    return {level: _ap_only(evaluate(trained, spec.normal_test_data, True, f"severity_{level}", values))
            for level, values in levels}

