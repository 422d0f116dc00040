#!/usr/bin/env python
"""Train the AGLLNet enhancer (supervised) on (dark, clean) pairs made from normal-light images.

The images are image files, folders or globs (``--images``) or a registered detectron2 dataset
(``--dataset``, e.g. ``wnlb_demo_train``) of normal-light photos; ``--low-light PIPELINE``
(required) degrades each one with the evaluation seeding, which gives the exact (dark, clean)
pairs. Both are resized to ``--size`` squares and the network is trained on random ``--crop``
crops with the supervised terms of ``wnlb_d2.enhance.agllnet_train`` (the paper's
ue-attention-map target for the Attention-Net; L1, SSIM and region loss on the Enhancement-Net
and Reinforce-Net outputs; no VGG term, whose ImageNet weights cannot be had here).

A new network has the released layout at CPU size (``--preset cpu``: 6-level Attention-Net, so
crops are multiples of 64, narrower modules) or the released size (``--preset released``:
crops multiples of 128, about 5x slower); ``--init`` continues from a file instead (the authors'
``AgLLNet.h5``, or one written here) with that file's architecture.

The output is a Keras HDF5 weights file in the authors' layout (layer groups ``conv2d_N`` /
``conv2d_transpose_N`` with ``kernel:0``/``bias:0`` in Keras' axis order) plus the network's
configuration as an attribute, for ``INPUT.ENHANCER.NAME agllnet`` with
``INPUT.ENHANCER.AGLLNET.WEIGHTS``; the authors' own ``AgLLNet.h5`` can be used there instead.

Example (200 steps: 2 min 50 s with OMP_NUM_THREADS=1 on a busy 2-core machine, where two
threads competing with other jobs took 4x as long; held-out demo PSNR 9.3 dB dark -> 10.8 dB,
11.6 dB after 600 steps -- a CPU-sized run, not the authors' training)::

    OMP_NUM_THREADS=1 python tools/train_agllnet.py --dataset wnlb_demo_train --low-light lv2021 \\
        --iters 200 --size 128 --output output/agllnet/agllnet.h5
"""

import argparse
import logging
import sys

logger = logging.getLogger("wnlb_d2.train_agllnet")


def build_parser():
    from wnlb_d2.cli.enhancer_training import add_common_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, {"iters": 200, "batch_size": 4, "lr": 1e-3}, low_light_required=True, help={
        "images": "normal-light image files, folders or glob patterns",
        "output": "the .h5 to write (Keras HDF5 weights, the authors' layout)",
        "init": "start from these AGLLNet weights (the authors' AgLLNet.h5, an .h5 written here, or a .pth from "
                "convert_agllnet_h5); their architecture replaces --preset",
        "crop": "side of the random crop per pair and step, a multiple of the network's input multiple "
                "(64 for 'cpu', 128 for 'released'; default 64; 0: whole images)",
        "batch_size": "pairs per step (default 4)",
        "lr": "Adam learning rate (default 1e-3, MBLLEN's)"})
    p.add_argument("--preset", choices=("cpu", "released"), default="cpu",
                   help="architecture of a new network: 'cpu' (default; inputs multiples of 64) or 'released' "
                        "(the authors' AgLLNet.h5; multiples of 128)")
    return p


def main(argv=None):
    from wnlb_d2.cli.enhancer_training import (check_common_arguments, check_size_and_crop, error_reporter,
                                              parse_training_args, training_files)

    args = parse_training_args(build_parser(), argv)
    from wnlb_d2.data.synthesis import build_pipeline
    from wnlb_d2.enhance.agllnet import AGLLNet, AGLLNetWeightsError, build_agllnet_from_weights
    from wnlb_d2.enhance.agllnet_train import CPU_CONFIG, save_agllnet_weights, train_agllnet
    from wnlb_d2.enhance.training_pairs import load_training_pairs

    fail = error_reporter("train_agllnet.py")
    problem = check_common_arguments(args)
    if problem:
        return fail(problem)
    config = CPU_CONFIG if args.preset == "cpu" else {}
    try:
        # A new network is made (seeded) by train_agllnet; this one gives the size rules.
        model = build_agllnet_from_weights(args.init) if args.init else AGLLNet(**config)
    except AGLLNetWeightsError as e:
        return fail(str(e))
    problem = check_size_and_crop(args.size, args.crop, model.multiple, model.min_size)
    if problem:
        return fail(problem)
    try:
        files = training_files(args)
        dark, clean, failed = load_training_pairs(files, build_pipeline(args.low_light), size=args.size,
                                                  seed=args.seed)
    except ValueError as e:
        return fail(str(e))
    logger.info(f"Training AGLLNet {model.config} on {len(dark)} pairs of {args.size}x{args.size} ({args.low_light})"
                f"{f', {len(failed)} unreadable, skipped' if failed else ''}")
    try:
        model, history = train_agllnet((dark, clean), iters=args.iters, batch_size=args.batch_size, crop=args.crop,
                                       lr=args.lr, seed=args.seed, model=model if args.init else None,
                                       config=config)
    except (ValueError, FloatingPointError) as e:
        return fail(str(e))
    save_agllnet_weights(model, args.output)
    first, last = history[0]["total"], history[-1]["total"]
    print(f"Wrote {args.output}: loss {first:.4f} -> {last:.4f} after {args.iters} steps on {len(dark)} pair(s)")
    return 0


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    sys.exit(main_reporting_os_errors("train_agllnet.py", main))
