"""Tables and plots of a study: results.md, ap.png, severity.png, w_trajectory.png.

Everything reads the ``results.json`` layout of :func:`wnlb_d2.experiment.run_experiment`;
figures are written atomically. Side-by-side prediction pictures are drawn by
:mod:`wnlb_d2.visualization` (one drawing code for the demo tool and the study).
"""

import logging

import numpy as np

from ..utils.io import atomic_write
from .feature_tables import features_in_words
from .spec import FINETUNE_ROWS, METRICS, ROWS, TASKS
from .stats import differs_from_zero
from .two_stage import enhancer_rows

__all__ = ["table_rows", "results_markdown", "differences_in_words", "plot_results", "plot_severity",
           "plot_w_trajectory"]

logger = logging.getLogger(__name__)


def table_rows(results):
    """Row names of the table in order: pretrained, two-stage rows, fine-tuning rows, normal light."""
    order = [ROWS[0]] + enhancer_rows(results) + list(FINETUNE_ROWS) + ["pretrained_normal_light"]
    return [r for r in order if r in results]


def _fmt(x, digits=1):
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def _cell(results, row, task, metric):
    summary = results.get("summary", {}).get(row, {}).get(task, {}).get(metric)
    if summary and summary["n"] > 1:
        return f"{_fmt(summary['mean'])} ± {_fmt(summary['std'])}"
    return _fmt(results[row].get(task, {}).get(metric))


def differences_in_words(results):
    """One line per compared pair and task: is the AP difference larger than the noise?"""
    lines = []
    for pair, entry in results.get("paired", {}).items():
        for task, metrics in entry.items():
            d = metrics["AP"]
            if d["mean_diff"] != d["mean_diff"]:  # NaN: a row has no AP (nothing detected)
                lines.append(f"- {pair}, {task} AP: no AP to compare (a row detected nothing on the test set).")
                continue
            if d["n"] < 2:
                lines.append(f"- {pair}, {task} AP: {d['mean_diff']:+.1f} from one seed: no interval, so "
                             "this difference cannot be told apart from run-to-run noise.")
                continue
            lo, hi = d["ci95"]
            verdict = ("larger than the run-to-run noise (the 95 % interval excludes 0)"
                       if differs_from_zero(d["ci95"])
                       else "within the run-to-run noise (the 95 % interval contains 0)")
            lines.append(f"- {pair}, {task} AP: {d['mean_diff']:+.1f} [{lo:+.1f}, {hi:+.1f}] over {d['n']} seeds: "
                         f"{verdict}.")
    return lines


def results_markdown(results):
    """The study as Markdown: Table I (mean ± std over seeds where n > 1), the paired differences
    in numbers and words, bootstrap intervals, the learned w and the severity table."""
    rows = table_rows(results)
    head = "| row | n | " + " | ".join(f"{t} {m}" for t in TASKS for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (2 + len(TASKS) * len(METRICS))]
    for r in rows:
        n = next((s["AP"]["n"] for s in results.get("summary", {}).get(r, {}).values()), 1)
        cells = [_cell(results, r, t, m) for t in TASKS for m in METRICS]
        label = "pretrained (normal-light test)" if r == "pretrained_normal_light" else r
        lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    quality = results.get("image_quality")
    if quality:
        lines += ["", "Image quality of what the detector sees, against the clean test images ('pretrained': the dark "
                  "images themselves; mean ± std over seeds for enhancers trained here, else over images):", "",
                  "| row | PSNR (dB) | SSIM | segm AP |", "|---|---|---|---|"]
        for row, q in quality.items():
            ap = _cell(results, row, "segm", "AP") if "segm" in results.get(row, {}) else _cell(results, row, "bbox", "AP")
            lines.append(f"| {row} | {_fmt(q['psnr']['mean'], 2)} ± {_fmt(q['psnr']['std'], 2)} | "
                         f"{_fmt(q['ssim']['mean'], 3)} ± {_fmt(q['ssim']['std'], 3)} | {ap} |")
    words = differences_in_words(results)
    if words:
        lines += ["", "Paired differences (first row minus second, same seeds), mean [95 % interval]:", ""] + words
    boot = [(run["row"], run["seed"], run.get("bootstrap", {})) for run in results.get("runs", [])]
    boot = [("pretrained", None, results.get("bootstrap", {}).get("pretrained", {}))] + boot
    if any(b for _, _, b in boot):
        lines += ["", "Evaluation noise of single runs (image-level bootstrap of the test set, 95 % interval of AP):",
                  "", "| run | " + " | ".join(f"{t} AP [95 %]" for t in TASKS) + " |", "|---|" + "---|" * len(TASKS)]
        for row, seed, b in boot:
            if not b:
                continue
            name = row if seed is None else f"{row} seed {seed}"
            cells = [f"{_fmt(b[t]['AP'])} [{_fmt(b[t]['ci95'][0])}, {_fmt(b[t]['ci95'][1])}]" if t in b else "-"
                     for t in TASKS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += features_in_words(results)
    ws = [(run["seed"], run["w"]) for run in results.get("runs", []) if run["row"] == "wnlb" and run.get("w")]
    if ws:
        stages = sorted(ws[0][1])
        lines += ["", "Learned w of the wNLB blocks (end of fine-tuning):", "",
                  "| seed | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
        lines += [f"| {seed} | " + " | ".join(f"{w[s]:.4f}" for s in stages) + " |" for seed, w in ws]
    severity = results.get("severity")
    if severity:
        levels = list(results.get("severity_levels", {}))
        lines += ["", "AP against darkness (normal-light test images degraded at fixed levels, increasing "
                  "darkness; mean over seeds for fine-tuning rows):", "",
                  "| row | task | " + " | ".join(levels) + " |", "|---|---|" + "---|" * len(levels)]
        for row, sev in severity.items():
            for task in TASKS:
                if task in sev.get(levels[0], {}):
                    lines.append(f"| {row} | {task} AP | " + " | ".join(_fmt(sev[l][task]['AP']) for l in levels) + " |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi=120):
    plt = _pyplot()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


def plot_results(results, path):
    """Bar plot of segm and bbox AP per row, with the standard deviation over seeds as error bars."""
    plt = _pyplot()
    rows = [r for r in table_rows(results) if r != "pretrained_normal_light"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(2.1 * len(rows) + 2.5, 3.2))
    for i, task in enumerate(TASKS):
        ap = [results[r].get(task, {}).get("AP", float("nan")) for r in rows]
        std = [results.get("summary", {}).get(r, {}).get(task, {}).get("AP", {}).get("std", float("nan")) for r in rows]
        err = [s if s == s else 0.0 for s in std]
        bars = ax.bar(x + (i - 0.5) * 0.38, ap, width=0.38, yerr=err if any(err) else None, capsize=3,
                      label=f"{task} AP")
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xticks(x, rows)
    ax.set_ylabel("AP (low-light test)")
    # Outside the axes: no bar is ever hidden behind it.
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    n = max([results["summary"][r]["segm"]["AP"]["n"] for r in results.get("summary", {}) if "segm" in results["summary"][r]] or [1])
    ax.set_title("Low-light instance segmentation" + (f" (mean ± std over {n} seeds)" if n > 1 else " (one run)"))
    fig.tight_layout()
    _save(fig, path)


def plot_severity(results, path):
    """AP (segm and bbox, side by side) against the severity level, one line per row."""
    severity = results.get("severity")
    if not severity:
        raise ValueError("results have no 'severity' entry: run the study with severities")
    plt = _pyplot()
    levels = list(results["severity_levels"])
    tasks = [t for t in TASKS if any(t in sev[levels[0]] for sev in severity.values())]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks) + 1.5, 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for row, sev in severity.items():
            if task not in sev[levels[0]]:
                continue
            ap = [sev[level][task]["AP"] for level in levels]
            std = [sev[level][task].get("std", float("nan")) for level in levels]
            style = "--" if row.endswith("+pretrained") else "-"
            line, = ax.plot(range(len(levels)), ap, style, marker="o", label=row)
            if all(s == s for s in std):
                lo = [a - s for a, s in zip(ap, std)]
                hi = [a + s for a, s in zip(ap, std)]
                ax.fill_between(range(len(levels)), lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_xticks(range(len(levels)), levels, rotation=30)
        ax.set_xlabel("severity (position along the training range; > 1: beyond it)")
        ax.set_ylabel(f"{task} AP")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle("AP against darkness")
    fig.tight_layout()
    _save(fig, path)


def plot_w_trajectory(results, path):
    """The learned w of each stage over fine-tuning, one panel per weighted-block row run."""
    runs = [r for r in results.get("runs", []) if r.get("w_trajectory")]
    if not runs:
        raise ValueError("results have no w trajectory (no weighted-block run logged w)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for run in runs:
        traj = run["w_trajectory"]
        stages = [k for k in traj[0] if k != "iteration"]
        its = [t["iteration"] for t in traj]
        for stage in stages:
            ax.plot(its, [t[stage] for t in traj], label=f"{run['row']} seed {run['seed']} {stage}")
    ax.set_xlabel("fine-tuning iteration")
    ax.set_ylabel("w")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=7)
    ax.set_title("Learned fusion weight w of each block")
    fig.tight_layout()
    _save(fig, path)
