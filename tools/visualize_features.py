#!/usr/bin/env python
"""Draw backbone feature maps of one image for several checkpoints (the wNLB paper's Fig. 4).

One row per checkpoint (``--weights NAME=PATH``, in the order given), one column for the input
and, for every ResNet stage res2..res5, its output ("before") and, where a checkpoint has a
non-local block after that stage, the block's output ("after", titled with the learned w).
Each map is the channel mean (``--reduce mean``) or the first principal component
(``--reduce pca``) of the features; a stage's before/after pair shares one colour scale (and,
for PCA, one projection), so what the block changed is what differs (``--normalise each``
stretches every map to the full colour scale instead).

Configs, per checkpoint NAME, first found of:

1. ``--config NAME=FILE``;
2. ``config.yaml`` beside the checkpoint (detectron2's train_net writes it to OUTPUT_DIR);
3. ``--config-file`` with the blocks read from the checkpoint: if its keys hold non-local blocks,
   the backbone becomes the wNLB one (``MODEL.BACKBONE.NAME``) with ``MODEL.WNLB.STAGES`` set to
   those stages (and ``MODE`` when the keys tell: concatenate, gaussian). The fusion cannot be
   read from a checkpoint: residual NLB checkpoints need 1. or 2. (``MODEL.WNLB.FUSION residual``).

The image is degraded (``--low-light``) and enhanced (the first config's ``INPUT.ENHANCER``)
once, and every checkpoint sees that same image.

Denoising, shown and measured: with a clean counterpart of the image, each row also shows the
clean image's features (after the block, where there is one) and, per stage, the error map
|F(dark) - F(clean)| (per position, in units whose mean square is the normalised feature error,
NFE); the panel titles and the printed lines give the NFE before and after each block. The clean
counterpart is the input itself when the tool degrades it (``--low-light``), or the clean twin
given with ``--clean-input`` (the normal-light image of a synthetic or LIS low-light image, same
size). The clean image goes to each model as it is (no degradation, no enhancer). Without a
clean counterpart the picture has no error maps, and the tool says so in one line.

Example::

    python tools/visualize_features.py --config-file configs/demo/Base-Demo-R18-FPN.yaml \\
        --input datasets/wnlb_demo/v4_128px_400+100_seed0_lv2021/val/000001.png --low-light lv2021 \\
        --weights pretrained=output/demo/pretrained/model_final.pth \\
                  finetuned=output/demo/finetuned/model_final.pth wnlb=output/demo/wnlb/model_final.pth \\
        --output docs/features_grid.png

    # a low-light copy and its clean twin
    python tools/visualize_features.py --config-file configs/demo/Base-Demo-R18-FPN.yaml \\
        --input datasets/wnlb_demo/.../val_lowlight/000001.png --clean-input datasets/wnlb_demo/.../val/000001.png \\
        --weights finetuned=output/demo/finetuned/model_final.pth wnlb=output/demo/wnlb/model_final.pth
"""

import argparse
import logging
import os
import sys
import tempfile

logger = logging.getLogger("wnlb_d2.visualize_features")


def _pairs(values, flag):
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} expects NAME=PATH, got {v!r}")
        if name in out:
            raise ValueError(f"{flag} names {name!r} twice")
        out[name] = path
    return out


def build_parser():
    from wnlb_d2.data.synthesis import PIPELINES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="IMAGE", help="the image")
    p.add_argument("--weights", required=True, nargs="+", metavar="NAME=PATH", help="checkpoints, one row each")
    p.add_argument("--config-file", metavar="FILE", help="config for checkpoints without their own (YAML or model_zoo://)")
    p.add_argument("--config", nargs="+", metavar="NAME=FILE", help="config of one checkpoint")
    p.add_argument("--low-light", choices=PIPELINES, metavar="PIPELINE",
                   help=f"degrade the image first ({', '.join(PIPELINES)})")
    p.add_argument("--clean-input", metavar="IMAGE",
                   help="the clean counterpart of --input (same size), for the clean features and error maps")
    p.add_argument("--low-light-seed", type=int, default=None, help="seed of the degradation (default INPUT.LOW_LIGHT.SEED)")
    p.add_argument("--reduce", choices=["mean", "pca"], default="mean", help="channel mean or first PCA component")
    p.add_argument("--normalise", choices=["pair", "each"], default="pair",
                   help="colour scale shared by a stage's before/after maps (pair, default) or per map (each)")
    p.add_argument("--output", default="features_grid.png", help="PNG to write (default features_grid.png)")
    p.add_argument("--panel-size", type=float, default=1.7, help="panel side in inches (default 1.7)")
    p.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="config overrides for every checkpoint, last on the line")
    return p


def config_for(name, weights, configs, config_file, opts):
    """Resolve the config of one checkpoint (see the module docstring); returns a frozen cfg."""
    from wnlb_d2.checkpoint import wnlb_layout_of_checkpoint
    from wnlb_d2.naming import WNLB_BACKBONES
    from wnlb_d2.engine.predictor import backbone_opts_for_checkpoint
    from wnlb_d2.engine.setup import setup_cfg

    # Nothing is written to OUTPUT_DIR; a temporary folder keeps setup_cfg from creating ./output.
    base_opts = ["OUTPUT_DIR", tempfile.gettempdir()]
    beside = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yaml")
    if name in configs:
        source, extra = configs[name], []
    elif os.path.isfile(beside):
        source, extra = beside, []
    elif config_file:
        source = config_file
        base = setup_cfg(config_file, base_opts + list(opts))
        extra = backbone_opts_for_checkpoint(base, weights)
        if not extra and base.MODEL.BACKBONE.NAME in WNLB_BACKBONES.values() \
                and not wnlb_layout_of_checkpoint(weights)["stages"]:
            extra = ["MODEL.WNLB.STAGES", "[]"]  # a stock checkpoint: no blocks to show
    else:
        raise ValueError(f"No config for checkpoint {name!r}: give --config-file or --config {name}=FILE")
    cfg = setup_cfg(source, base_opts + extra + list(opts) + ["MODEL.WEIGHTS", weights])
    logger.info(f"{name}: config {source}{' + ' + ' '.join(extra) if extra else ''}")
    return cfg


def clean_counterpart(args, image, read_image):
    """The clean image (BGR) the dark input's features are compared with, and what it is; (None, None)
    without one.

    Raises:
        ValueError: ``--clean-input`` with ``--low-light``, or a clean image of another size.
    """
    if args.clean_input and args.low_light:
        raise ValueError("--clean-input and --low-light: the clean counterpart of an image this tool degrades is the "
                         "image itself; give one of them")
    if args.low_light:
        return image, "the input before degradation"
    if not args.clean_input:
        return None, None
    clean = read_image(args.clean_input, format="BGR")
    if clean.shape != image.shape:
        raise ValueError(f"--clean-input {args.clean_input} is {clean.shape[1]}x{clean.shape[0]} px, but the input "
                         f"{args.input} is {image.shape[1]}x{image.shape[0]} px; expected its clean twin")
    return clean, os.path.basename(args.clean_input)


def model_tensor(predictor, image_bgr):
    """One BGR image as the predictor's model takes it: its channel order, resized by its test-time resize."""
    import torch

    model_input = image_bgr[:, :, ::-1] if predictor.input_format == "RGB" else image_bgr
    resized = predictor.aug.get_transform(model_input).apply_image(model_input)
    return torch.as_tensor(resized.transpose(2, 0, 1).copy())


def report_row(name, feats, clean_feats):
    """Print each block's change and, with a clean image, each stage's NFE before and after its block."""
    from wnlb_d2.visualization.features import stage_feature_errors

    nfe = stage_feature_errors(feats, clean_feats) if clean_feats is not None else {}
    for stage, info in feats.items():
        if info["after"] is not None:
            change = (info["after"] - info["before"]).abs().mean() / info["before"].abs().mean().clamp_min(1e-12)
            w = f"w = {info['w']:.4f}" if info["w"] is not None else "residual"
            print(f"{name:>12} {stage}: {w}, mean |after - before| / mean |before| = {change:.4f}")
        if stage in nfe:
            after = f", after block {nfe[stage]['after']:.4f}" if nfe[stage]["after"] is not None else ""
            print(f"{name:>12} {stage}: NFE against the clean image {nfe[stage]['before']:.4f}{after}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    from detectron2.utils.logger import setup_logger

    setup_logger(name="wnlb_d2")
    setup_logger(name="detectron2", abbrev_name="d2")
    import wnlb_d2  # noqa: F401  (registers backbones and datasets)
    from wnlb_d2.data.image_io import ImageReadError, read_image
    from wnlb_d2.visualization.features import capture_backbone_features, plot_feature_grid
    from wnlb_d2.engine.predictor import LowLightPredictor

    try:
        weights = _pairs(args.weights, "--weights")
        configs = _pairs(args.config, "--config")
        unknown = sorted(set(configs) - set(weights))
        if unknown:
            raise ValueError(f"--config names {unknown}, which are not among --weights {list(weights)}")
        missing = [f"{n}={p}" for n, p in weights.items() if "://" not in p and not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"checkpoint(s) not found: {', '.join(missing)}")
        if args.panel_size <= 0 or args.dpi <= 0:
            raise ValueError("--panel-size and --dpi must be positive")
        image = read_image(args.input, format="BGR")
        clean, clean_what = clean_counterpart(args, image, read_image)
        if clean is None:
            logger.info("No clean counterpart of the input (give --low-light or --clean-input): the clean features, "
                        "error maps and NFE are skipped")
        entries, seen = [], None
        for k, (name, path) in enumerate(weights.items()):
            cfg = config_for(name, path, configs, args.config_file, args.opts)
            predictor = LowLightPredictor(cfg, low_light=args.low_light if k == 0 else None, seed=args.low_light_seed)
            if seen is None:  # degrade and enhance once: every checkpoint sees the same image
                seen = list(predictor.prepare(image, os.path.basename(args.input)).values())[-1]
            feats = capture_backbone_features(predictor.model, model_tensor(predictor, seen))
            entry = (name, seen[:, :, ::-1], feats)
            clean_feats = None
            if clean is not None:
                clean_feats = capture_backbone_features(predictor.model, model_tensor(predictor, clean))
                entry += ({"image": clean[:, :, ::-1], "features": clean_feats},)
            entries.append(entry)
            report_row(name, feats, clean_feats)
            del predictor
    except (FileNotFoundError, KeyError, ValueError, ImageReadError, PermissionError) as e:
        print(f"visualize_features.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    what = f"low-light ({args.low_light})" if args.low_light else "as read"
    title = f"{os.path.basename(args.input)}, {what}: backbone features ({'channel mean' if args.reduce == 'mean' else 'first PCA component'})"
    if clean_what:
        title += f"; clean: {clean_what}"
    size = plot_feature_grid(entries, args.output, method=args.reduce, normalise=args.normalise, panel_inches=args.panel_size, dpi=args.dpi,
                             title=title)
    print(f"Wrote {args.output} ({size['width']}x{size['height']} px, {size['rows']} rows x {size['cols']} columns)")
    return 0


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    sys.exit(main_reporting_os_errors("visualize_features.py", main))
