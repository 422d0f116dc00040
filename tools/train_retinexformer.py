#!/usr/bin/env python
"""Train the Retinexformer enhancer (supervised) on (dark, clean) pairs made from normal-light images.

The images are image files, folders or globs (``--images``) or a registered detectron2 dataset
(``--dataset``, e.g. ``wnlb_demo_train``) of normal-light photos; ``--low-light PIPELINE``
(required) degrades each one with the evaluation seeding, which gives the exact (dark, clean)
pairs Retinexformer learns from. Both are resized to ``--size`` squares, and the network is
trained on random ``--crop`` crops with the authors' L1 loss, Adam, gradient clipping,
flips/rotations and mixup (``wnlb_d2.enhance.retinexformer_train``; lr higher and cosine over
the short run).

The output is a BasicSR checkpoint ``{"params": state_dict}``, the format and key names of the
authors' released weights (``LOL_v1.pth`` ...), for ``INPUT.ENHANCER.NAME retinexformer``; the
authors' files can be used there instead, and ``--init`` continues training from one. The
network is the authors' LOL-v1 configuration (n_feat 40, stage 1, num_blocks [1, 2, 2]).

Example (about 2 minutes on 2 idle CPU cores, 0.4 s a step; much longer when they are busy)::

    python tools/train_retinexformer.py --dataset wnlb_demo_train --low-light lv2021 --iters 300 \\
        --size 128 --output output/retinexformer/retinexformer.pth
"""

import argparse
import logging
import sys

logger = logging.getLogger("wnlb_d2.train_retinexformer")


def build_parser():
    from wnlb_d2.cli.enhancer_training import add_common_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, {"iters": 300, "batch_size": 4, "lr": 1e-3}, low_light_required=True, help={
        "images": "normal-light image files, folders or glob patterns",
        "output": "the .pth to write (BasicSR {'params': ...}, the authors' format)",
        "init": "start from these RetinexFormer weights (e.g. the authors' LOL_v1.pth)",
        "crop": "side of the random crop per pair and step, a multiple of 4 (default 64; authors 128; 0: whole images)",
        "iters": "optimisation steps (default 300; authors 150k)",
        "batch_size": "pairs per step (default 4; authors 8)",
        "lr": "Adam learning rate, cosine-annealed to 1e-6 (default 1e-3; authors 2e-4/3e-4 over 150k steps)"})
    return p


def main(argv=None):
    from wnlb_d2.cli.enhancer_training import (check_common_arguments, check_size_and_crop, error_reporter,
                                              parse_training_args, training_files)

    args = parse_training_args(build_parser(), argv)
    from wnlb_d2.data.synthesis import build_pipeline
    from wnlb_d2.enhance.retinexformer import PAD_FACTOR, RetinexFormer, load_retinexformer_weights
    from wnlb_d2.enhance.retinexformer_train import save_retinexformer_weights, train_retinexformer
    from wnlb_d2.enhance.training_pairs import load_training_pairs

    fail = error_reporter("train_retinexformer.py")
    problem = check_common_arguments(args) or check_size_and_crop(args.size, args.crop, PAD_FACTOR, 8)
    if problem:
        return fail(problem)
    model = None
    try:  # ValueError: no or unreadable images, bad weights (RetinexFormerWeightsError is one)
        files = training_files(args)
        dark, clean, failed = load_training_pairs(files, build_pipeline(args.low_light), size=args.size,
                                                  seed=args.seed)
        if args.init:
            model = load_retinexformer_weights(RetinexFormer(), args.init)
    except ValueError as e:
        return fail(str(e))
    logger.info(f"Training on {len(dark)} pairs of {args.size}x{args.size} ({args.low_light})"
                f"{f', {len(failed)} unreadable, skipped' if failed else ''}")
    try:
        model, history = train_retinexformer((dark, clean), iters=args.iters, batch_size=args.batch_size,
                                             crop=args.crop, lr=args.lr, seed=args.seed, model=model)
    except (ValueError, FloatingPointError) as e:
        return fail(str(e))
    save_retinexformer_weights(model, args.output)
    first, last = history[0]["total"], history[-1]["total"]
    print(f"Wrote {args.output}: L1 {first:.4f} -> {last:.4f} after {args.iters} steps on {len(dark)} pair(s)")
    return 0


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    sys.exit(main_reporting_os_errors("train_retinexformer.py", main))
