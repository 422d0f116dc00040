#!/usr/bin/env python
"""What does it take for the non-local blocks' non-local path to learn in a short fine-tune? Recipes x seeds.

Every recipe fine-tunes the wNLB row from the same normal-light weights, once per seed, next to a
plain fine-tuned row with the same optimizer, learning rate and length (its paired reference),
and reports per recipe: the learned w per stage (mean ± std over seeds), the blocks' non-local
share ||w W_z(y)|| / ||(1 - w) x|| (0: the block only rescales its input), the normalised feature
error (NFE) of the passed-on features per stage with the paired wnlb - finetuned difference,
and the segm/bbox AP with the paired wnlb - finetuned difference and its 95 % interval.

    python tools/study_blocks.py --weights output/study/pretrained/model_final.pth --seeds 0 1 2 \
        --output output/blocks_study

The recipes (``--list`` prints them) vary one thing at a time from the paper-like fine-tuning:
the optimizer, a learning-rate factor on w alone (``SOLVER.WNLB_WEIGHT_LR_FACTOR``) or on the
whole block (``SOLVER.WNLB_LR_FACTOR``: the non-local path, W_z, theta, phi, g, and w), w
initialised per stage as the paper's Table III (0, 0, 0.5, 0), the authors' released
initialisation (``MODEL.WNLB.ZERO_INIT conv_and_norm``), the fine-tuning length. Each recipe is
a study of its own in ``<output>/<recipe>``: a rerun keeps its finished runs (the runner's
records), so an interrupted table resumes. Results go to ``<output>/blocks_study.{json,md}``.
"""

import argparse
import os
import sys
import time

TABLE_III_W = ["MODEL.WNLB.WEIGHT_INIT", "[0.0, 0.0, 0.5, 0.0]"]

#: Recipe -> ExperimentSpec fields that differ from the paper-like fine-tuning of the demo (AdamW, lr 2e-4,
#: 80 iterations, block learning-rate factors 1). "adamw-path100-wlr100" is what `make demo` runs. w's
#: learning rate is the block's factor times w's own factor.
RECIPES = {
    "adamw": {},
    "sgd": {"finetune_optimizer": "SGD", "finetune_lr": 5e-4},
    "sgd-lr2e-3": {"finetune_optimizer": "SGD", "finetune_lr": 2e-3},
    "adamw-wlr100": {"wnlb_weight_lr_factor": 100.0},
    "adamw-wlr300": {"wnlb_weight_lr_factor": 300.0},
    "adamw-blocklr10": {"wnlb_lr_factor": 10.0},
    "adamw-path10-wlr100": {"wnlb_lr_factor": 10.0, "wnlb_weight_lr_factor": 10.0},
    "adamw-path100-wlr100": {"wnlb_lr_factor": 100.0},
    "adamw-wlr100-tableIII-w": {"wnlb_weight_lr_factor": 100.0, "block_opts": TABLE_III_W},
    "adamw-wlr100-authors-init": {"wnlb_weight_lr_factor": 100.0, "block_opts": ["MODEL.WNLB.ZERO_INIT", "conv_and_norm"]},
    "sgd-wlr100": {"finetune_optimizer": "SGD", "finetune_lr": 5e-4, "wnlb_weight_lr_factor": 100.0},
    "adamw-long": {"finetune_iters": 320},
    "adamw-long-wlr100": {"finetune_iters": 320, "wnlb_weight_lr_factor": 100.0},
}
#: The recipes of the mechanism table (issue 21): the demo's, the non-local path x10 / x100, Table III's w,
#: the authors' initialisation, 4x longer.
DEFAULT_RECIPES = ["adamw-wlr100", "adamw-path10-wlr100", "adamw-path100-wlr100", "adamw-wlr100-tableIII-w",
                   "adamw-wlr100-authors-init", "adamw-long-wlr100"]

# What makes two recipes share their plain fine-tuned reference runs (block settings do not touch it).
_REFERENCE_KEYS = ("finetune_optimizer", "finetune_lr", "finetune_iters")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="normal-light weights to fine-tune from (e.g. the demo's pre-trained model)")
    p.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES),
                   help=f"recipes to run (default: {' '.join(DEFAULT_RECIPES)}; --list shows all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--output", default="output/blocks_study")
    p.add_argument("--feature-images", type=int, default=50,
                   help="low-light test images for the NFE and the non-local share (their clean twins are known)")
    p.add_argument("--list", action="store_true", help="print the recipes and exit")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    return p


def _spec_values(recipe, args):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run_experiment import preset_values

    values = preset_values("demo", "maskrcnn")
    # Every recipe starts from the demo's fine-tuning with both block factors at 1 (the paper's),
    # then changes what its entry says (the demo itself uses adamw-path100-wlr100).
    values.update(wnlb_lr_factor=1.0, wnlb_weight_lr_factor=1.0)
    values.update(weights=args.weights, seeds=list(args.seeds), severities=[], bootstrap_samples=0,
                  opts=list(args.opts), preset=f"blocks-study-{recipe}", feature_images=args.feature_images)
    values.update(RECIPES[recipe])
    return values


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list:
        for name, fields in RECIPES.items():
            print(f"{name}: {fields or 'AdamW, lr 2e-4, 80 iterations, block factors 1'}")
        return 0
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown or not args.weights:
        sys.exit(f"study_blocks.py: error: {'unknown recipe(s) ' + str(unknown) if unknown else 'give --weights'}; "
                 f"recipes: {', '.join(RECIPES)}")
    if len(set(args.seeds)) != len(args.seeds):
        sys.exit(f"study_blocks.py: error: --seeds {args.seeds} repeat a seed")

    from detectron2.utils.logger import setup_logger

    import wnlb_d2  # noqa: F401
    from wnlb_d2.experiment import ExperimentSpec, run_experiment
    from wnlb_d2.utils.io import atomic_write_json, atomic_write_text

    os.makedirs(args.output, exist_ok=True)
    setup_logger(output=os.path.join(args.output, "log.txt"), name="wnlb_d2")
    references, table = {}, {}
    t0 = time.perf_counter()
    for recipe in args.recipes:
        values = _spec_values(recipe, args)
        ref_key = tuple(values.get(k) for k in _REFERENCE_KEYS)
        rows = ["pretrained", "wnlb"] if ref_key in references else ["pretrained", "finetuned", "wnlb"]
        values.update(rows=rows, output_dir=os.path.join(args.output, recipe))
        results, _ = run_experiment(ExperimentSpec(**values), overwrite=True)
        runs = results["runs"]
        if "finetuned" in rows:
            references[ref_key] = [r for r in runs if r["row"] == "finetuned"]
        reference = {r["seed"]: r for r in references[ref_key]}
        wnlb_runs = [r for r in runs if r["row"] == "wnlb"]
        table[recipe] = recipe_entry(recipe, wnlb_runs, reference)
        atomic_write_json(os.path.join(args.output, "blocks_study.json"), table, indent=1, default=float)
    md = markdown(table)
    atomic_write_text(os.path.join(args.output, "blocks_study.md"), md)
    print(md)
    print(f"({time.perf_counter() - t0:.0f} s; {os.path.join(args.output, 'blocks_study.json')})")
    return 0


def recipe_entry(recipe, wnlb_runs, reference):
    """One line of the table from a recipe's wNLB runs and the plain fine-tuned runs of the same seeds.

    Args:
        recipe (str): the recipe's name.
        wnlb_runs (list[dict]): the recipe's wnlb runs (``results["runs"]`` entries, one per seed).
        reference (dict[int, dict]): seed -> the paired plain fine-tuned run.

    Returns:
        dict: ``fields``, ``w[stage]``, ``share[stage]`` (mean ± std over seeds of each seed's mean
        over images), ``nfe[stage]`` (wnlb and finetuned summaries and their paired difference,
        on the features each row passes on), ``segm``/``bbox`` AP summaries and paired differences.
    """
    import numpy as np

    from wnlb_d2.experiment.feature_tables import effective_place
    from wnlb_d2.experiment.stats import paired_difference, summarise

    def image_mean(values):
        v = [x for x in values if x == x]
        return float(np.mean(v)) if v else float("nan")

    stages = sorted(wnlb_runs[0]["w"]) or sorted(wnlb_runs[0].get("feature_errors", {}).get("nonlocal_share", {}))
    entry = {"fields": RECIPES.get(recipe, {}), "w": {s: summarise([r["w"][s] for r in wnlb_runs]) for s in wnlb_runs[0]["w"]}}
    refs = [reference[r["seed"]] for r in wnlb_runs]
    if all(r.get("feature_errors") for r in wnlb_runs + refs):
        entry["share"] = {s: summarise([image_mean(r["feature_errors"]["nonlocal_share"][s]) for r in wnlb_runs])
                          for s in stages}
        entry["nfe"] = {}
        for s in stages:
            a = [image_mean(r["feature_errors"]["nfe"][effective_place(r["feature_errors"]["nfe"], s)]) for r in wnlb_runs]
            b = [image_mean(r["feature_errors"]["nfe"][s]) for r in refs]
            entry["nfe"][s] = {"wnlb": summarise(a), "finetuned": summarise(b), "wnlb-vs-finetuned": paired_difference(a, b)}
    for task in ("segm", "bbox"):
        a, b = [r[task]["AP"] for r in wnlb_runs], [r[task]["AP"] for r in refs]
        entry[task] = {"wnlb": summarise(a), "finetuned": summarise(b), "wnlb-vs-finetuned": paired_difference(a, b)}
    return entry


def _pm(s, digits=1):
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _ci(d, digits=1):
    return f"{d['mean_diff']:+.{digits}f} [{d['ci95'][0]:+.{digits}f}, {d['ci95'][1]:+.{digits}f}]"


def markdown(table):
    """The study tables: w and AP per recipe, then the non-local share and NFE per recipe and stage."""
    stages = sorted({s for e in table.values() for s in e["w"]})
    lines = ["| recipe | " + " | ".join(f"w {s}" for s in stages)
             + " | wnlb segm AP | finetuned segm AP | wnlb - finetuned segm AP [95 %] | wnlb - finetuned bbox AP [95 %] |",
             "|" + "---|" * (5 + len(stages))]
    for recipe, e in table.items():
        cells = [_pm(e["w"][s], 3) if s in e["w"] else "-" for s in stages]
        cells += [_pm(e["segm"]["wnlb"]), _pm(e["segm"]["finetuned"]),
                  _ci(e["segm"]["wnlb-vs-finetuned"]), _ci(e["bbox"]["wnlb-vs-finetuned"])]
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    if any("share" in e for e in table.values()):
        lines += ["", "| recipe | stage | non-local share | NFE wnlb | NFE finetuned | wnlb - finetuned NFE [95 %] |",
                  "|---|---|---|---|---|---|"]
        for recipe, e in table.items():
            for s in e.get("share", {}):
                n = e["nfe"][s]
                lines.append(f"| {recipe} | {s} | {_pm(e['share'][s], 4)} | {_pm(n['wnlb'], 3)} | "
                             f"{_pm(n['finetuned'], 3)} | {_ci(n['wnlb-vs-finetuned'], 3)} |")
    n = max((e["segm"]["wnlb"]["n"] for e in table.values()), default=0)
    lines.append("")
    lines.append(f"Mean ± std over {n} seeds; intervals: paired by seed, Student t. Non-local share: "
                 "||w W_z(y)|| / ||(1 - w) x|| per image, mean over the feature images (0: the block only "
                 "rescales). NFE: normalised feature error of the features each row passes on at that stage "
                 "(after the block for wnlb), lower is nearer the clean image's features.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    sys.exit(main_reporting_os_errors("study_blocks.py", main))
