#!/usr/bin/env python
"""Train the EnlightenGAN enhancer on unpaired low-light and normal-light images (no labels).

The low-light images are image files, folders or globs (``--images``) or a registered
detectron2 dataset (``--dataset``, e.g. ``wnlb_demo_train_lowlight``); ``--low-light PIPELINE``
degrades them first when they are normal-light. The normal-light images come the same way
(``--normal-images`` / ``--normal-dataset``); the two sets need not show the same scenes, and
batches are drawn from each independently. Both are resized to ``--size`` squares, and the
generator is trained on random ``--crop`` crops against a global and a local (``--patch-size``
patches) discriminator with the authors' losses, except the VGG self feature preserving loss,
which needs pre-trained VGG-16 weights (see wnlb_d2/enhance/enlightengan_train.py).

The output is the generator's state dict in the layout of the authors' released
``200_net_G_A.pth`` (``module.conv1_1.weight`` ...), used by ``INPUT.ENHANCER.NAME enlightengan``
with ``INPUT.ENHANCER.ENLIGHTENGAN.WEIGHTS``; the authors' own file can be used there instead, and
``--init`` continues training from it. The defaults are sized for a 2-core CPU: a generator of
half the released width (``--channels 16``; the authors' 32), discriminators of half theirs
(``--ndf 32``), 64 px crops with 16 px patches (theirs: 320 and 32).

Example (0.45 CPU-seconds a step, so about 2 minutes on 2 free cores; on the demo data the
output's mean brightness went from 0.13 to 0.45, the normal-light images' 0.47, on 2026-12-05)::

    python tools/train_enlightengan.py --dataset wnlb_demo_train_lowlight --normal-dataset wnlb_demo_train \\
        --iters 300 --output output/enlightengan/enlightengan_G.pth
"""

import argparse
import logging
import sys

logger = logging.getLogger("wnlb_d2.train_enlightengan")


def build_parser():
    from wnlb_d2.data.synthesis import PIPELINES
    from wnlb_d2.cli.enhancer_training import add_common_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, {"iters": 300, "batch_size": 8, "lr": 3e-4}, help={
        "images": "low-light image files, folders or glob patterns",
        "dataset": "a registered detectron2 dataset of low-light images",
        "low_light": f"degrade the --images/--dataset images first ({', '.join(PIPELINES)}; default ranges), "
                     "for normal-light data",
        "output": "the .pth to write (the authors' 200_net_G_A.pth layout)",
        "init": "start from these generator weights (e.g. the authors' 200_net_G_A.pth; its width is used)",
        "crop": "side of the random crop per image and step (default 64; authors 320; 0: whole images)",
        "max_images": "use at most this many images of each set (0: all)",
        "batch_size": "images of each set per step (default 8; authors 32)",
        "lr": "Adam learning rate (default 3e-4; authors 1e-4 for 200 epochs)"})
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--normal-images", nargs="+", metavar="PATH",
                     help="normal-light image files, folders or glob patterns (unpaired)")
    ref.add_argument("--normal-dataset", metavar="NAME", help="a registered detectron2 dataset of normal-light images")
    p.add_argument("--patch-size", type=int, default=16,
                   help="side of the local discriminator's patches (default 16; authors 32 on 320 px crops)")
    p.add_argument("--channels", type=int, default=16, help="generator width (default 16; authors 32)")
    p.add_argument("--ndf", type=int, default=32, help="discriminator width (default 32; authors 64)")
    return p


def main(argv=None):
    from wnlb_d2.cli.enhancer_training import check_common_arguments, error_reporter, image_files, parse_training_args

    args = parse_training_args(build_parser(), argv)
    from wnlb_d2.data.synthesis import build_pipeline
    from wnlb_d2.enhance.enlightengan import build_enlightengan_generator
    from wnlb_d2.enhance.enlightengan_train import save_enlightengan_weights, train_enlightengan
    from wnlb_d2.enhance.zero_dce_train import load_training_images

    fail = error_reporter("train_enlightengan.py")
    if args.size < 16 or args.patch_size < 8 or args.channels < 1 or args.ndf < 1:
        return fail(f"--size must be >= 16, --patch-size >= 8, --channels and --ndf >= 1; got {args.size}, "
                    f"{args.patch_size}, {args.channels}, {args.ndf}")
    problem = check_common_arguments(args)
    if problem:
        return fail(problem)
    if args.crop and not args.patch_size <= args.crop <= args.size:
        return fail(f"--crop must be 0 or in [--patch-size, --size] = [{args.patch_size}, {args.size}], "
                    f"got {args.crop}")
    pipeline = build_pipeline(args.low_light) if args.low_light else None
    model = None
    try:  # ValueError: no or unreadable images, bad weights (EnlightenGANWeightsError is one)
        dark_files = image_files(args.images, args.dataset, "low-light", args.max_images)
        normal_files = image_files(args.normal_images, args.normal_dataset, "normal-light", args.max_images)
        dark, dark_failed = load_training_images(dark_files, size=args.size, pipeline=pipeline, seed=args.seed)
        normal, normal_failed = load_training_images(normal_files, size=args.size, seed=args.seed)
        if args.init:
            model = build_enlightengan_generator(args.init)  # the file's width, not --channels
    except ValueError as e:
        return fail(str(e))
    skipped = len(dark_failed) + len(normal_failed)
    logger.info(f"Training on {len(dark)} low-light and {len(normal)} normal-light images of {args.size}x{args.size}"
                f"{f' ({skipped} unreadable, skipped)' if skipped else ''}")
    try:
        model, history = train_enlightengan(dark, normal, iters=args.iters, batch_size=args.batch_size,
                                            crop=args.crop, lr=args.lr, seed=args.seed, patch_size=args.patch_size,
                                            channels=args.channels, ndf=args.ndf, model=model)
    except (ValueError, FloatingPointError) as e:
        return fail(str(e))
    save_enlightengan_weights(model, args.output)
    n = max(1, min(20, len(history) // 5))

    def mean(key, part):
        return sum(h[key] for h in part) / len(part)

    first, last = history[:n], history[-n:]
    print(f"Wrote {args.output}: discriminator loss {mean('D_A', first) + mean('D_P', first):.4f} -> "
          f"{mean('D_A', last) + mean('D_P', last):.4f}, generator loss {mean('total', first):.4f} -> "
          f"{mean('total', last):.4f}, output brightness {mean('fake_mean', first):.3f} -> "
          f"{mean('fake_mean', last):.3f} "
          f"(normal-light {mean('normal_mean', history):.3f}; means of the first and last {n} steps) after "
          f"{args.iters} steps on {len(dark)} low-light and {len(normal)} normal-light image(s)")
    return 0


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    sys.exit(main_reporting_os_errors("train_enlightengan.py", main))
