#!/usr/bin/env python
"""Train the Zero-DCE++ enhancer on low-light images alone (no references, no labels).

The images are image files, folders or globs (``--images``) or a registered detectron2 dataset
(``--dataset``, e.g. ``wnlb_demo_train_lowlight``); ``--low-light PIPELINE`` degrades them
first when they are normal-light. They are resized to ``--size`` squares, and the network is
trained on random ``--crop`` crops of them with the four zero-reference losses (spatial consistency, exposure control, colour
constancy, illumination smoothness; the weights of the authors' script).

The output is a bare state dict in the authors' layout (``e_conv1.depth_conv.weight`` ...), used
by ``INPUT.ENHANCER.NAME zero_dce`` with ``INPUT.ENHANCER.ZERO_DCE.WEIGHTS``; the authors'
own ``Epoch99.pth`` can be used there instead, and ``--init`` continues training from it.

Example (about a minute on 2 CPU cores)::

    python tools/train_zero_dce.py --dataset wnlb_demo_train_lowlight --iters 300 --size 128 \\
        --output output/zero_dce/zero_dce_pp.pth
"""

import argparse
import logging
import sys

logger = logging.getLogger("wnlb_d2.train_zero_dce")


def build_parser():
    from wnlb_d2.cli.enhancer_training import add_common_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, {"iters": 300, "batch_size": 8, "lr": 1e-3}, help={
        "images": "low-light image files, folders or glob patterns",
        "output": "the .pth to write (the authors' state-dict layout)",
        "init": "start from these Zero-DCE++ weights (e.g. the authors' Epoch99.pth)",
        "size": "side of the square training images (default 128; authors 512)",
        "lr": "Adam learning rate (default 1e-3; authors 1e-4 for 100 epochs)"})
    return p


def main(argv=None):
    from wnlb_d2.cli.enhancer_training import (check_common_arguments, error_reporter, parse_training_args,
                                              training_files)

    args = parse_training_args(build_parser(), argv)
    from wnlb_d2.data.synthesis import build_pipeline
    from wnlb_d2.enhance.zero_dce import ZeroDCEPP, load_zero_dce_weights
    from wnlb_d2.enhance.zero_dce_train import load_training_images, save_zero_dce_weights, train_zero_dce

    fail = error_reporter("train_zero_dce.py")
    if args.size < 16:
        return fail(f"--size must be >= 16 (the exposure loss averages 16x16 patches), got {args.size}")
    problem = check_common_arguments(args)
    if problem:
        return fail(problem)
    model = None
    try:  # ValueError: no or unreadable images, bad weights (ZeroDCEWeightsError is one)
        files = training_files(args)
        pipeline = build_pipeline(args.low_light) if args.low_light else None
        images, failed = load_training_images(files, size=args.size, pipeline=pipeline, seed=args.seed)
        if args.init:
            model = load_zero_dce_weights(ZeroDCEPP(), args.init)
    except ValueError as e:
        return fail(str(e))
    logger.info(f"Training on {len(images)} images of {args.size}x{args.size}"
                f"{f' ({len(failed)} unreadable, skipped)' if failed else ''}")
    try:
        model, history = train_zero_dce(images, iters=args.iters, batch_size=args.batch_size, crop=args.crop,
                                        lr=args.lr, seed=args.seed, model=model)
    except (ValueError, FloatingPointError) as e:
        return fail(str(e))
    save_zero_dce_weights(model, args.output)
    first, last = history[0]["total"], history[-1]["total"]
    print(f"Wrote {args.output}: loss {first:.4f} -> {last:.4f} after {args.iters} steps "
          f"on {len(images)} image(s)")
    return 0


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    sys.exit(main_reporting_os_errors("train_zero_dce.py", main))
