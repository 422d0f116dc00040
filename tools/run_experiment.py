#!/usr/bin/env python
"""Run the paper's Table I experiment (pre-trained / fine-tuned / NLB / wNLB) on any datasets.

Presets:

* ``--preset demo``: the embedded demo dataset (no download): pre-trains a lean R18-FPN Mask
  R-CNN on normal-light shapes, fine-tunes the three low-light rows, evaluates on the low-light
  val set, writes ``output/demo/results.{json,md}``, ``ap.png`` and side-by-side pictures.
* ``--preset quick``: the same, far shorter (a smoke test, AP not meaningful).

Or name everything yourself, e.g. with COCO and a model-zoo checkpoint::

    python tools/run_experiment.py --config-file model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml \\
        --weights detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl \\
        --finetune-data coco_2017_train_lowlight --test-data coco_2017_val_lowlight \\
        --normal-test-data coco_2017_val --finetune-iters 90000 --output output/coco_table1

Two-stage baselines (the paper's Table II): ``--enhancers nlm clahe nlm+clahe zero_dce`` adds a
row "<enhancer>+pretrained" per name: the pre-trained model on enhanced low-light test images
(``INPUT.ENHANCER``; Zero-DCE++ is trained on the low-light training images unless
``--zero-dce-weights`` gives weights, e.g. the authors' Epoch99.pth).
"""

import argparse
import logging
import os
import sys
import time

PRESETS = {
    "demo": dict(config_file="configs/demo/Base-Demo-R18-FPN.yaml", pretrain_data="wnlb_demo_train",
                 finetune_data="wnlb_demo_train_lowlight", test_data="wnlb_demo_val_lowlight",
                 normal_test_data="wnlb_demo_val", pretrain_iters=800, finetune_iters=80,
                 finetune_lr=2e-4, output_dir="output/demo"),
    "quick": dict(config_file="configs/demo/Base-Demo-R18-FPN.yaml", pretrain_data="wnlb_demo_train",
                  finetune_data="wnlb_demo_train_lowlight", test_data="wnlb_demo_val_lowlight",
                  normal_test_data="wnlb_demo_val", pretrain_iters=20, finetune_iters=5,
                  finetune_lr=2e-4, output_dir="output/demo"),
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="fill every option below from a preset")
    p.add_argument("--config-file", help="detector config with the stock backbone (YAML or model_zoo://NAME)")
    p.add_argument("--output", dest="output_dir", help="output folder (results.json, results.md, ap.png, runs)")
    p.add_argument("--weights", default=None, help="normal-light weights (file or URL); default: pre-train here")
    p.add_argument("--pretrain-data", help="normal-light training dataset (used when no --weights)")
    p.add_argument("--finetune-data", help="low-light training dataset of the fine-tuning rows")
    p.add_argument("--test-data", help="low-light test dataset")
    p.add_argument("--normal-test-data", help="normal-light test dataset for the pre-trained row (optional)")
    p.add_argument("--pretrain-iters", type=int)
    p.add_argument("--finetune-iters", type=int)
    p.add_argument("--finetune-lr", type=float, help="learning rate of the fine-tuning rows (paper: 5e-4)")
    p.add_argument("--finetune-policy", choices=["all", "backbone", "wnlb"],
                   help="what learns in the fine-tuning rows (paper: backbone)")
    p.add_argument("--wnlb-lr-factor", type=float,
                   help="learning-rate factor of the blocks in the fine-tuning rows (SOLVER.WNLB_LR_FACTOR; paper: 1)")
    p.add_argument("--rows", nargs="+", help="rows to run (default: pretrained finetuned nlb wnlb)")
    p.add_argument("--low-light-train", action="store_const", const=True,
                   help="degrade --finetune-data on the fly (INPUT.LOW_LIGHT); off for low-light datasets")
    p.add_argument("--low-light-test", action="store_const", const=True, help="degrade --test-data on the fly")
    p.add_argument("--pictures", type=int, default=3, help="side-by-side prediction pictures to save")
    p.add_argument("--enhancers", nargs="+", metavar="NAME",
                   help="two-stage rows <NAME>+pretrained: gamma, clahe, histeq, nlm, zero_dce or chains like nlm+clahe")
    p.add_argument("--zero-dce-weights", help="Zero-DCE++ weights for zero_dce rows (default: trained on --finetune-data)")
    p.add_argument("--zero-dce-iters", type=int, help="training steps of Zero-DCE++ when no weights are given (default 300)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    values = dict(PRESETS[args.preset]) if args.preset else {}
    for k, v in vars(args).items():
        if k not in ("preset", "pictures", "opts") and v is not None:  # given on the command line
            values[k] = v
    values["opts"] = args.opts
    # Spec field -> the flag that sets it (output_dir is --output).
    flags = {"config_file": "--config-file", "output_dir": "--output", "test_data": "--test-data",
             "finetune_data": "--finetune-data"}
    missing = [k for k in flags if not values.get(k)]
    if missing:
        sys.exit(f"run_experiment.py: error: missing {', '.join(flags[m] for m in missing)} "
                 "(or use --preset demo)")

    from detectron2.utils.logger import setup_logger

    import wnlb_d2  # noqa: F401  (registers backbones and datasets)
    from wnlb_d2.data.mapper import worker_error_message
    from wnlb_d2.engine.experiment import ExperimentSpec, ROWS, results_markdown, run_experiment
    from wnlb_d2.engine.report import plot_results, save_side_by_side
    from wnlb_d2.enhance.experiment import enhancer_rows

    spec = ExperimentSpec(**values)
    try:
        # Every dataset name, weights path and enhancer name, before anything trains or is written.
        spec.validate()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"run_experiment.py: error: {type(e).__name__}: {e}")
    os.makedirs(values["output_dir"], exist_ok=True)
    setup_logger(output=os.path.join(values["output_dir"], "log.txt"), name="detectron2", abbrev_name="d2")
    setup_logger(output=os.path.join(values["output_dir"], "log.txt"), name="wnlb_d2")
    t0 = time.perf_counter()
    try:
        results, models = run_experiment(spec)
    except (FileNotFoundError, KeyError, ValueError, PermissionError, FloatingPointError) as e:
        # An unreadable image raised in a data-loader worker: its message, not the worker's traceback.
        sys.exit(f"run_experiment.py: error: {type(e).__name__}: {worker_error_message(e)}")
    plot_results(results, [ROWS[0]] + enhancer_rows(results) + list(ROWS[1:]), os.path.join(spec.output_dir, "ap.png"))
    if args.pictures > 0:
        cfg_test = models["pretrained"][0]
        save_side_by_side(models, cfg_test, spec.test_data, os.path.join(spec.output_dir, "pictures"),
                          num_images=args.pictures, low_light=spec.low_light_test)
    print()
    print(f"Low-light test set: {spec.test_data}; results in {spec.output_dir}/results.json "
          f"({time.perf_counter() - t0:.0f} s)")
    print(results_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
