"""Run the paper's Table I study (pre-trained / fine-tuned / NLB / wNLB) for a detector, on any datasets.

Presets (each writes its own folder, output/<preset>[-<detector>], and never replaces the
results of another preset there):

* ``--preset demo``: the embedded demo dataset (no download): pre-trains a lean model on
  normal-light shapes, fine-tunes the three low-light rows (one seed), evaluates them on the
  low-light val set and at six fixed severities; writes results.{json,md}, ap.png,
  severity.png, w_trajectory.png and side-by-side pictures.
* ``--preset study``: the same with three seeds per fine-tuning row (mean, spread, paired 95 %
  intervals); ``make study``.
* ``--preset quick``: the same, far shorter (a smoke test, AP not meaningful).

``--detector`` selects the family: ``maskrcnn`` (default), ``solov2`` or ``yolov8`` (needs the
``yolo`` extra). Or name everything yourself, e.g. with COCO and a model-zoo checkpoint (wnlb-study,
or python tools/run_experiment.py in a checkout)::

    wnlb-study --config-file model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml \\
        --weights detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl \\
        --finetune-data coco_2017_train_lowlight --test-data coco_2017_val_lowlight \\
        --normal-test-data coco_2017_val --finetune-iters 90000 --seeds 0 1 2 --output output/coco_table1

Two-stage baselines (the paper's Table II): ``--enhancers nlm clahe zero_dce retinexformer agllnet
enlightengan`` adds a row "<enhancer>+pretrained" per name: the pre-trained model on enhanced
low-light test images (``INPUT.ENHANCER``), with the enhancer's PSNR/SSIM against the clean test
images beside its AP. Enhancers with weights are trained here on --finetune-data, once per seed
(so their rows have a spread and pair with the wNLB row by seed), unless ``--enhancer-weights
retinexformer=LOL_v1.pth agllnet=AgLLNet.h5 enlightengan=200_net_G_A.pth`` (or
``--zero-dce-weights``) gives the authors' released files.
"""

import argparse
import logging
import os
import sys
import time

from . import tool_name

#: The name this command's messages start with: ``run_experiment.py``, or ``wnlb-study`` when run as that.
TOOL = tool_name("run_experiment.py")

DEMO_DATA = dict(pretrain_data="wnlb_demo_train", finetune_data="wnlb_demo_train_lowlight",
                 test_data="wnlb_demo_val_lowlight", normal_test_data="wnlb_demo_val")
SEVERITIES = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]

#: Per detector, the demo model and its training lengths; the presets scale them.
DETECTOR_DEMOS = {
    # The non-local path's learning rate x100 (every block parameter, w included): of the recipes measured
    # from the same weights (docs/results.md, "The mechanism recipes"), the one whose non-local term learns
    # most (2.6-6.0 % of the blocks' output after 80 iterations) with no AP cost beyond the noise. The
    # finetuned row has no blocks, so it is unchanged; the nlb row's path gets the same factor.
    "maskrcnn": dict(config_file="configs/demo/Base-Demo-R18-FPN.yaml", pretrain_iters=800, finetune_iters=80,
                     finetune_lr=2e-4, wnlb_lr_factor=100.0),
    "solov2": dict(config_file="configs/demo/SOLOv2-Demo-R18-FPN.yaml", pretrain_iters=1500, finetune_iters=80,
                   finetune_lr=2e-4, wnlb_lr_factor=100.0),
    # yolov8n-seg at 128 px, batch 16 (25 steps an epoch on the 400 demo images): 375 iterations =
    # 15 epochs from scratch, 125 = 5 fine-tuning epochs at AdamW lr 1e-3 (what learned in the
    # hand-run, docs/yolov8.md); mosaic off for the last 3 epochs. The blocks: the same absolute
    # learning rate on the non-local path as the detectron2 families (1e-3 x 20 = 2e-2 = 2e-4 x 100),
    # w's x100 as before (20 x 5; at x1 |w| stayed under 0.013). opts: Ultralytics arguments, before
    # those of the command line (which win).
    "yolov8": dict(config_file="yolov8n-seg.yaml", pretrain_iters=375, finetune_iters=125, finetune_lr=1e-3,
                   wnlb_lr_factor=20.0, wnlb_weight_lr_factor=5.0, opts=["close_mosaic", "3"]),
}


def preset_values(preset, detector):
    """The ExperimentSpec fields of a preset for a detector family."""
    demo = dict(DETECTOR_DEMOS[detector])
    out = f"output/{preset}" + ("" if detector == "maskrcnn" else f"-{detector}")
    values = dict(DEMO_DATA, **demo, output_dir=out, detector=detector, preset=preset, seeds=[0],
                  severities=list(SEVERITIES))
    if preset == "quick":
        values.update(pretrain_iters=20, finetune_iters=5, severities=[0.0, 1.0], bootstrap_samples=50,
                      feature_images=4)
    elif preset == "study":
        values.update(seeds=[0, 1, 2])
    return values


PRESETS = ("quick", "demo", "study")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=PRESETS, help="fill every option below from a preset")
    p.add_argument("--detector", default=None, help="detector family: maskrcnn (default), solov2, yolov8")
    p.add_argument("--config-file", help="detector config with the stock backbone (YAML or model_zoo://NAME)")
    p.add_argument("--output", dest="output_dir", help="output folder (results.json, results.md, plots, runs)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of another experiment in --output")
    p.add_argument("--weights", default=None, help="normal-light weights (file or URL); default: pre-train here")
    p.add_argument("--pretrain-data", help="normal-light training dataset (used when no --weights)")
    p.add_argument("--finetune-data", help="low-light training dataset of the fine-tuning rows")
    p.add_argument("--test-data", help="low-light test dataset")
    p.add_argument("--normal-test-data", help="normal-light test dataset (pre-trained row; severity levels)")
    p.add_argument("--pretrain-iters", type=int)
    p.add_argument("--finetune-iters", type=int)
    p.add_argument("--finetune-lr", type=float, help="learning rate of the fine-tuning rows (paper: 5e-4)")
    p.add_argument("--finetune-optimizer", choices=["SGD", "AdamW"], help="optimizer of the fine-tuning rows "
                   "(default: the config's SOLVER.OPTIMIZER)")
    p.add_argument("--finetune-policy", choices=["all", "backbone", "wnlb"],
                   help="what learns in the fine-tuning rows (paper: backbone)")
    p.add_argument("--wnlb-lr-factor", type=float,
                   help="learning-rate factor of every block parameter (SOLVER.WNLB_LR_FACTOR; paper: 1)")
    p.add_argument("--wnlb-weight-lr-factor", type=float,
                   help="learning-rate factor of the blocks' fusion weights w alone (SOLVER.WNLB_WEIGHT_LR_FACTOR)")
    p.add_argument("--wnlb-weight-init", type=float, help="initial w of the wNLB row (MODEL.WNLB.WEIGHT_INIT; 0)")
    p.add_argument("--rows", nargs="+", help="rows to run (default: pretrained finetuned nlb wnlb)")
    p.add_argument("--seeds", nargs="*", type=int, help="one fine-tuning run per row and seed (default: 0)")
    p.add_argument("--severities", nargs="*", type=float, metavar="T",
                   help="evaluate every row at these fixed severities (0: mildest end of the training range, "
                        "1: harshest, > 1 beyond); needs --normal-test-data; the flag with no value: no severity curves")
    p.add_argument("--bootstrap-samples", type=int, help="image-level bootstrap samples per evaluation (0: off)")
    p.add_argument("--feature-images", type=int,
                   help="test images on which the normalised feature error and the blocks' non-local share are "
                        "measured against their clean counterparts (default 50; 0: off)")
    p.add_argument("--low-light-train", action="store_const", const=True,
                   help="degrade --finetune-data on the fly (INPUT.LOW_LIGHT); off for low-light datasets")
    p.add_argument("--low-light-test", action="store_const", const=True, help="degrade --test-data on the fly")
    p.add_argument("--pictures", type=int, default=3, help="side-by-side prediction pictures to save")
    p.add_argument("--enhancers", nargs="+", metavar="NAME",
                   help="two-stage rows <NAME>+pretrained: gamma, clahe, histeq, nlm, zero_dce or chains like nlm+clahe")
    p.add_argument("--zero-dce-weights", help="Zero-DCE++ weights for zero_dce rows (default: trained on --finetune-data)")
    p.add_argument("--zero-dce-iters", type=int, help="training steps of Zero-DCE++ when no weights are given (default 300)")
    p.add_argument("--enhancer-weights", nargs="+", metavar="METHOD=FILE", type=_method_file,
                   help="weights of retinexformer, agllnet, enlightengan (or zero_dce) rows, e.g. the authors' "
                        "released files (default: trained here on --finetune-data, once per seed)")
    p.add_argument("--enhancer-iters", type=int,
                   help="training steps of retinexformer, agllnet and enlightengan when no weights are given (default 300)")
    p.add_argument("--quality-images", type=int,
                   help="test images on which each two-stage row's PSNR/SSIM against the clean image is measured "
                        "(default 100; 0: off)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    return p


def _method_file(text):
    method, sep, path = text.partition("=")
    if not sep or not method or not path:
        raise argparse.ArgumentTypeError(f"expected METHOD=FILE (e.g. retinexformer=LOL_v1.pth), got {text!r}")
    return method, path


def spec_values(args):
    """ExperimentSpec fields: the preset's, then what the command line gives."""
    detector = args.detector or "maskrcnn"
    if args.preset and detector not in DETECTOR_DEMOS:
        sys.exit(f"{TOOL}: error: --preset needs a detector with a demo model "
                 f"({', '.join(DETECTOR_DEMOS)}), got --detector {detector!r}")
    values = preset_values(args.preset, detector) if args.preset else {"detector": detector}
    for k, v in vars(args).items():
        if k not in ("preset", "pictures", "opts", "overwrite") and v is not None:  # given on the command line
            values[k] = dict(v) if k == "enhancer_weights" else v
    values["opts"] = list(values.get("opts", [])) + list(args.opts)  # the preset's, then the command line's
    # Spec field -> the flag that sets it (output_dir is --output).
    flags = {"config_file": "--config-file", "output_dir": "--output", "test_data": "--test-data",
             "finetune_data": "--finetune-data"}
    missing = [k for k in flags if not values.get(k)]
    if missing:
        sys.exit(f"{TOOL}: error: missing {', '.join(flags[m] for m in missing)} "
                 "(or use --preset demo)")
    return values


def main(argv=None):
    args = build_parser().parse_args(argv)
    values = spec_values(args)

    import wnlb_d2  # noqa: F401  (registers backbones and datasets)
    from wnlb_d2.data.mapper import worker_error_message
    from wnlb_d2.experiment import ExperimentSpec, build_detector_family
    from wnlb_d2.experiment.runner import check_output_folder
    from wnlb_d2.experiment.severity import severity_levels
    from wnlb_d2.utils.io import FolderLockedError, folder_lock, os_error_message

    spec = ExperimentSpec(**values)
    try:
        # Every dataset name, weights path, seed, severity and enhancer name, before anything
        # trains or is written.
        spec.validate()
        family = build_detector_family(spec)
        family.validate()
        if spec.severities:
            severity_levels(family.low_light_config(), spec.severities)
        # The lock first: a second run on this folder stops here, before it writes anything.
        with folder_lock(spec.output_dir):
            check_output_folder(spec, args.overwrite)
            return _run(spec, family, args)
    except (FileNotFoundError, FileExistsError, FolderLockedError, KeyError, ValueError, PermissionError,
            FloatingPointError) as e:
        # An unreadable image raised in a data-loader worker: its message, not the worker's traceback.
        sys.exit(f"{TOOL}: error: {type(e).__name__}: {worker_error_message(e)}")
    except OSError as e:  # a full disk, a read-only folder: what and where, in one line
        sys.exit(f"{TOOL}: error: {os_error_message(e)}")


def _run(spec, family, args):
    """Run the study in the locked output folder, then its plots and pictures."""
    from detectron2.utils.logger import setup_logger

    from wnlb_d2.experiment import run_experiment
    from wnlb_d2.experiment.report import plot_results, plot_severity, plot_w_trajectory, results_markdown
    from wnlb_d2.utils.io import remove_tree

    log = os.path.join(spec.output_dir, "log.txt")
    setup_logger(output=log, name="detectron2", abbrev_name="d2")
    setup_logger(output=log, name="wnlb_d2")
    t0 = time.perf_counter()
    results, trained = run_experiment(spec, overwrite=args.overwrite)
    out = spec.output_dir
    plot_results(results, os.path.join(out, "ap.png"))
    if results.get("severity"):
        plot_severity(results, os.path.join(out, "severity.png"))
    trajectory_plot = os.path.join(out, "w_trajectory.png")
    if any(r.get("w_trajectory") for r in results["runs"]):
        plot_w_trajectory(results, trajectory_plot)
    else:
        remove_tree(trajectory_plot)  # an earlier run's, of rows this one does not have
    pictures = os.path.join(out, "pictures")
    remove_tree(pictures)  # drawn anew: nothing of an earlier run's rows stays beside them
    if args.pictures > 0:
        try:
            family.save_pictures(trained, spec.test_data, pictures, num_images=args.pictures,
                                 low_light=spec.low_light_test)
        except NotImplementedError as e:
            logging.getLogger("wnlb_d2").info(f"No side-by-side pictures: {e}")
    print()
    print(f"Low-light test set: {spec.test_data}; results in {out}/results.json "
          f"({time.perf_counter() - t0:.0f} s)")
    print(results_markdown(results))
    return 0


def command(argv=None):
    """The ``wnlb-study`` console command (and ``tools/run_experiment.py``): :func:`main`'s exit status."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(command())
