"""Export a detector of this project (wNLB backbones) to TorchScript or ONNX, checked against eager.

detectron2's ``tools/deploy/export_model.py`` arguments, with this project's config keys
(``add_lowlight_config``, ``model_zoo://`` bases). The exported model is run on the sample image
and on two resized copies of it (other sizes than the tracing one); its largest difference from
eager is printed (box coordinates as a fraction of the image's longer side), with its CPU
inference time as a ratio to eager's. The file is written only when every difference is within
``--tolerance``: a model that gives other outputs is never left behind.

Example (wnlb-export, or python tools/deploy/export_model.py in a checkout)::

    wnlb-export --config-file configs/demo/Base-Demo-R18-FPN.yaml \\
        --export-method tracing --format onnx --output ./export --sample-image img.jpg \\
        MODEL.WEIGHTS output/model_final.pth MODEL.BACKBONE.NAME build_resnet_wnlb_fpn_backbone

Outputs (``model.ts`` / ``model.onnx``): ``image (C, H, W)`` float in the config's
``INPUT.FORMAT``, already resized (``INPUT.MIN_SIZE_TEST``) -> boxes, scores, classes, masks
(Mask R-CNN: detectron2's outputs before ``detector_postprocess``; SOLOv2: mask probabilities at
the input size, binary where above ``MODEL.SOLOV2.MASK_THRESH_TEST``, and the boxes of those).
"""

import argparse
import logging
import os
import sys

import numpy as np
import torch

from . import tool_name

#: The name this command's messages start with: ``export_model.py``, or ``wnlb-export`` when run as that.
TOOL = tool_name("export_model.py")
logger = logging.getLogger("wnlb_d2.export_model")


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="YAML config or model_zoo://NAME")
    parser.add_argument("--export-method", default="tracing", choices=["tracing", "scripting", "dynamo"],
                        help="tracing (TorchScript or the TorchScript-based ONNX exporter), scripting "
                             "(TorchScript), dynamo (torch.export-based ONNX exporter)")
    parser.add_argument("--format", default="torchscript", choices=["torchscript", "onnx"])
    parser.add_argument("--output", required=True, help="folder for model.ts / model.onnx")
    parser.add_argument("--sample-image", default=None,
                        help="image to trace and check with; default a fixed random image of the test size")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed |exported - eager| of scores, classes and masks (mask "
                             "probabilities), and of box coordinates as a fraction of the image's longer "
                             "side (default 1e-4)")
    parser.add_argument("--run-eval", action="store_true", help=argparse.SUPPRESS)  # detectron2's; not offered
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def _sample_image(cfg, path):
    """The sample as the model's input: ``(C, H, W)`` float, resized as at test time."""
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image

    if path is None:
        size = cfg.INPUT.MIN_SIZE_TEST
        image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--sample-image {path!r} does not exist")
        image = read_image(path, format=cfg.INPUT.FORMAT)
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    image = resize.get_transform(image).apply_image(image)
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32"))


def _other_sizes(image):
    """Two copies of ``image`` at other sizes (wider and taller), so nothing of the trace's size is kept."""
    h, w = image.shape[-2:]
    sizes = [(max(32, h * 3 // 4), w), (h, max(32, w * 3 // 4))]
    return [torch.nn.functional.interpolate(image[None], size=s, mode="bilinear", align_corners=False)[0]
            for s in sizes]


def _build(cfg):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model.eval()


def export_and_check(cfg, args):
    """Export, compare on three sizes, time; write the file only when within the tolerance.

    Returns:
        str: the written file.
    """
    from wnlb_d2.export import (
        FlatDetector, eager_outputs, export_model_bytes, load_exported, output_differences, time_ratio,
    )
    from wnlb_d2.utils.io import atomic_write_bytes

    method = args.export_method
    if (args.format, method) not in (("torchscript", "tracing"), ("torchscript", "scripting"),
                                     ("onnx", "tracing"), ("onnx", "dynamo")):
        raise ValueError(f"--format {args.format} cannot be made with --export-method {method}")
    flat = FlatDetector(_build(cfg)).eval()
    image = _sample_image(cfg, args.sample_image)
    data = export_model_bytes(flat, image, args.format, method)
    run = load_exported(data, args.format)
    worst = 0.0
    for x in [image] + _other_sizes(image):
        expected, got = eager_outputs(flat, x), run(x)
        diffs = output_differences(expected, got, tuple(x.shape[-2:]), flat.mask_thresh)
        diff = max(diffs.values())
        print(f"{TOOL}: image {tuple(x.shape[-2:])}: {len(expected[1])} detections eager, "
              f"{len(got[1])} exported, max |difference| {diff:.3g} ("
              + ", ".join(f"{name} {d:.3g}" for name, d in diffs.items()) + ")")
        worst = max(worst, diff)
    ratio = time_ratio(lambda x: eager_outputs(flat, x), run, image)
    print(f"{TOOL}: max |exported - eager| = {worst:.3g} (box coordinates as a fraction of the image's "
          f"longer side; tolerance {args.tolerance:g}); CPU inference time exported / eager = {ratio:.2f}")
    if not worst <= args.tolerance:
        raise ValueError(
            f"the exported model differs from eager by {worst:.3g} > --tolerance {args.tolerance:g}; nothing written"
        )
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "model.ts" if args.format == "torchscript" else "model.onnx")
    atomic_write_bytes(path, data)
    print(f"{TOOL}: wrote {path}")
    return path


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from wnlb_d2.engine.setup import setup_cfg
    from wnlb_d2.export import ExportError

    try:
        cfg = setup_cfg(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
        export_and_check(cfg, args)
    except (ExportError, ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        sys.exit(f"{TOOL}: error: {msg.splitlines()[0] if msg else type(e).__name__}")
    return 0


def command(argv=None):
    """The ``wnlb-export`` console command (and ``tools/deploy/export_model.py``): :func:`main`, with
    an OSError it does not handle (a full disk, a refused write) reported in one line."""
    from wnlb_d2.utils.io import main_reporting_os_errors

    return main_reporting_os_errors(TOOL, main, argv)


if __name__ == "__main__":
    sys.exit(command())
