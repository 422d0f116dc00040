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
    from wnlb_d2.data.synthesis import PIPELINES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH", help="low-light image files, folders or glob patterns")
    src.add_argument("--dataset", metavar="NAME", help="a registered detectron2 dataset (its images only)")
    p.add_argument("--low-light", choices=PIPELINES, metavar="PIPELINE",
                   help=f"degrade the images first ({', '.join(PIPELINES)}; default ranges), for normal-light data")
    p.add_argument("--output", required=True, help="the .pth to write (the authors' state-dict layout)")
    p.add_argument("--init", help="start from these Zero-DCE++ weights (e.g. the authors' Epoch99.pth)")
    p.add_argument("--size", type=int, default=128, help="side of the square training images (default 128; authors 512)")
    p.add_argument("--crop", type=int, default=64,
                   help="side of the random crop per image and step (default 64; 0: whole images)")
    p.add_argument("--max-images", type=int, default=0, help="use at most this many images (0: all)")
    p.add_argument("--iters", type=int, default=300, help="optimisation steps (default 300)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3; authors 1e-4 for 100 epochs)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and degradation")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from detectron2.utils.logger import setup_logger

    setup_logger(name="wnlb_d2")
    import wnlb_d2  # noqa: F401  (registers the datasets)
    from wnlb_d2.data.synthesis import build_pipeline
    from wnlb_d2.engine.predictor import expand_inputs
    from wnlb_d2.enhance.zero_dce import ZeroDCEPP, ZeroDCEWeightsError, load_zero_dce_weights
    from wnlb_d2.enhance.zero_dce_train import load_training_images, save_zero_dce_weights, train_zero_dce

    def fail(msg):
        print(f"train_zero_dce.py: error: {msg}", file=sys.stderr)
        return 1

    if args.size < 16:
        return fail(f"--size must be >= 16 (the exposure loss averages 16x16 patches), got {args.size}")
    if args.iters < 1 or args.batch_size < 1 or args.max_images < 0 or not args.lr > 0:
        return fail("--iters and --batch-size must be >= 1, --max-images >= 0, --lr > 0")
    if args.images:
        files, problems = expand_inputs(args.images)
        for item, reason in problems:
            logger.warning(f"{item}: {reason}")
    else:
        from detectron2.data import DatasetCatalog

        try:
            files = [d["file_name"] for d in DatasetCatalog.get(args.dataset)]
        except KeyError as e:
            return fail(f"dataset {args.dataset!r} is not registered: {e}")
    if args.max_images:
        files = files[:args.max_images]
    if not files:
        return fail("no training images found")
    pipeline = build_pipeline(args.low_light) if args.low_light else None
    model = None
    try:
        images, failed = load_training_images(files, size=args.size, pipeline=pipeline, seed=args.seed)
        if args.init:
            model = load_zero_dce_weights(ZeroDCEPP(), args.init)
    except (ValueError, ZeroDCEWeightsError) as e:
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
