#!/usr/bin/env python
"""What does it take for the non-local blocks to learn in a short fine-tune? Recipes x seeds.

Every recipe fine-tunes the wNLB row from the same normal-light weights, once per seed, next to a
plain fine-tuned row with the same optimizer, learning rate and length (its paired reference),
and reports per recipe: the learned w per stage (mean ± std over seeds), how much the blocks
change the features (mean |after - before| / mean |before| on low-light test images, per stage),
and the segm/bbox AP with the paired wnlb - finetuned difference and its 95 % interval.

    python tools/study_blocks.py --weights output/demo/pretrained/model_final.pth --seeds 0 1 2 \\
        --recipes adamw sgd adamw-wlr100 adamw-blocklr10 --output output/blocks_study

The recipes (``--list`` prints them) vary one thing at a time from the demo's: the optimizer
(AdamW as in the demo, SGD as in the paper), a learning-rate factor on w alone
(``SOLVER.WNLB_WEIGHT_LR_FACTOR``) or on the whole block (``SOLVER.WNLB_LR_FACTOR``), the
fine-tuning length. Results go to ``<output>/blocks_study.{json,md}``.
"""

import argparse
import os
import sys
import time

#: Recipe -> ExperimentSpec fields that differ from the paper-like fine-tuning of the demo (AdamW, lr 2e-4,
#: 80 iterations, block learning-rate factors 1). "adamw-wlr100" is what `make demo` runs.
RECIPES = {
    "adamw": {},
    "sgd": {"finetune_optimizer": "SGD", "finetune_lr": 5e-4},
    "sgd-lr2e-3": {"finetune_optimizer": "SGD", "finetune_lr": 2e-3},
    "adamw-wlr100": {"wnlb_weight_lr_factor": 100.0},
    "adamw-wlr300": {"wnlb_weight_lr_factor": 300.0},
    "adamw-blocklr10": {"wnlb_lr_factor": 10.0},
    "sgd-wlr100": {"finetune_optimizer": "SGD", "finetune_lr": 5e-4, "wnlb_weight_lr_factor": 100.0},
    "adamw-long": {"finetune_iters": 320},
    "adamw-long-wlr100": {"finetune_iters": 320, "wnlb_weight_lr_factor": 100.0},
}

# What makes two recipes share their plain fine-tuned reference runs (w factors do not touch it).
_REFERENCE_KEYS = ("finetune_optimizer", "finetune_lr", "finetune_iters")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="normal-light weights to fine-tune from (e.g. the demo's pre-trained model)")
    p.add_argument("--recipes", nargs="+", default=["adamw", "sgd", "adamw-wlr100", "adamw-blocklr10"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--output", default="output/blocks_study")
    p.add_argument("--feature-images", type=int, default=8, help="low-light test images for the feature change")
    p.add_argument("--list", action="store_true", help="print the recipes and exit")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    return p


def feature_change(cfg, model, dataset, num_images):
    """Per stage with a block: mean over images of mean|after - before| / mean|before|."""
    import torch
    from detectron2.data import DatasetCatalog

    from wnlb_d2.data.mapper import LowLightDatasetMapper
    from wnlb_d2.visualization.features import capture_backbone_features

    mapper = LowLightDatasetMapper(cfg, is_train=False)
    ratios = {}
    model.eval()
    for d in DatasetCatalog.get(dataset)[:num_images]:
        image = mapper(dict(d))["image"]
        with torch.no_grad():
            feats = capture_backbone_features(model, image)
        for stage, f in feats.items():
            if f["after"] is not None:
                r = float((f["after"] - f["before"]).abs().mean() / f["before"].abs().mean().clamp_min(1e-12))
                ratios.setdefault(stage, []).append(r)
    return {s: sum(v) / len(v) for s, v in ratios.items()}


def _spec_values(recipe, args):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run_experiment import preset_values

    values = preset_values("demo", "maskrcnn")
    # Every recipe starts from the demo's fine-tuning with both block factors at 1 (the paper's),
    # then changes what its entry says (the demo itself uses adamw-wlr100).
    values.update(wnlb_lr_factor=1.0, wnlb_weight_lr_factor=1.0)
    values.update(weights=args.weights, seeds=list(args.seeds), severities=[], bootstrap_samples=0,
                  opts=list(args.opts), preset=f"blocks-study-{recipe}")
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
    from wnlb_d2.experiment.stats import paired_difference, summarise
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
        results, trained = run_experiment(ExperimentSpec(**values), overwrite=True)
        runs = results["runs"]
        if "finetuned" in rows:
            references[ref_key] = [r for r in runs if r["row"] == "finetuned"]
        reference = {r["seed"]: r for r in references[ref_key]}
        wnlb_runs = [r for r in runs if r["row"] == "wnlb"]
        change = {}
        wnlb = trained["wnlb"]
        cfg, model = wnlb.handle
        # Feature change of the last seed's model on the low-light test images it was evaluated on.
        change = feature_change(cfg, model, values["test_data"], args.feature_images)
        stages = sorted(wnlb_runs[0]["w"])
        entry = {"fields": RECIPES[recipe], "w": {s: summarise([r["w"][s] for r in wnlb_runs]) for s in stages},
                 "feature_change_last_seed": change}
        for task in ("segm", "bbox"):
            entry[task] = {"wnlb": summarise([r[task]["AP"] for r in wnlb_runs]),
                           "finetuned": summarise([reference[r["seed"]][task]["AP"] for r in wnlb_runs]),
                           "wnlb-vs-finetuned": paired_difference(
                               [r[task]["AP"] for r in wnlb_runs], [reference[r["seed"]][task]["AP"] for r in wnlb_runs])}
        table[recipe] = entry
        atomic_write_json(os.path.join(args.output, "blocks_study.json"), table, indent=1, default=float)
    md = markdown(table)
    atomic_write_text(os.path.join(args.output, "blocks_study.md"), md)
    print(md)
    print(f"({time.perf_counter() - t0:.0f} s; {os.path.join(args.output, 'blocks_study.json')})")
    return 0


def markdown(table):
    """The study table: one line per recipe."""
    stages = sorted({s for e in table.values() for s in e["w"]})
    head = ("| recipe | " + " | ".join(f"w {s}" for s in stages) + " | feature change " + "/".join(stages)
            + " | wnlb segm AP | finetuned segm AP | wnlb - finetuned segm AP [95 %] | wnlb - finetuned bbox AP [95 %] |")
    lines = [head, "|" + "---|" * (5 + len(stages))]
    for recipe, e in table.items():
        ws = [f"{e['w'][s]['mean']:.3f} ± {e['w'][s]['std']:.3f}" for s in stages]
        ch = "/".join(f"{100 * e['feature_change_last_seed'].get(s, float('nan')):.1f}%" for s in stages)
        cells = [f"{e['segm']['wnlb']['mean']:.1f} ± {e['segm']['wnlb']['std']:.1f}",
                 f"{e['segm']['finetuned']['mean']:.1f} ± {e['segm']['finetuned']['std']:.1f}"]
        for task in ("segm", "bbox"):
            d = e[task]["wnlb-vs-finetuned"]
            cells.append(f"{d['mean_diff']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]")
        lines.append(f"| {recipe} | " + " | ".join(ws) + f" | {ch} | " + " | ".join(cells) + " |")
    n = max((e["segm"]["wnlb"]["n"] for e in table.values()), default=0)
    lines.append("")
    lines.append(f"Mean ± std over {n} seeds; feature change: mean |after - before| / mean |before| of each block "
                 "(last seed's model, low-light test images).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
