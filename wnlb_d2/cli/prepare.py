"""Render a COCO split (or any COCO-format dataset) to a low-light copy.

A command line over :func:`wnlb_d2.data.prepare.prepare_lowlight`: ``wnlb-prepare``, or
``python datasets/prepare_lowlight_coco.py`` in a checkout; see ``--help`` and
datasets/README.md. Example (the copy that ``coco_2017_val_lowlight`` reads)::

    wnlb-prepare \\
        --images $DETECTRON2_DATASETS/coco/val2017 \\
        --annotations $DETECTRON2_DATASETS/coco/annotations/instances_val2017.json \\
        --output $DETECTRON2_DATASETS/coco/lowlight/val2017 \\
        --pipeline lv2021 --seed 0 --workers 8
"""

import argparse
import json
import logging
import os
import sys

from wnlb_d2.data.prepare import default_output_annotations, prepare_lowlight
from wnlb_d2.data.synthesis import pipeline_names
from wnlb_d2.utils.io import os_error_message

from . import tool_name

logger = logging.getLogger("wnlb_d2.data.prepare")
#: The command's name in its usage line: ``prepare_lowlight_coco.py``, or ``wnlb-prepare`` when run as that.
TOOL = tool_name("prepare_lowlight_coco.py")


def _parse_override(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--override {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a plain string, e.g. a file path


def build_parser():
    """The command-line parser of ``wnlb-prepare`` (``datasets/prepare_lowlight_coco.py``)."""
    parser = argparse.ArgumentParser(
        prog=TOOL,
        description=(
            "Render a COCO split (or any COCO-format dataset) to a low-light copy: every image "
            "of the annotation JSON is degraded with a synthesis pipeline, seeded per image "
            "from (--seed, image id), and written under --output with the same relative file "
            "name and format. Resumable; deterministic whatever the worker count."
        ),
        epilog=(
            "Exit status: 0 when every image was rendered; 1 when some images could not be read "
            "(they are logged and listed as failed in the manifest; the rest is rendered) or a "
            "file could not be written (disk full, permission: the error names it; run again to "
            "resume); 2 for bad input (missing folder or JSON, corrupt or empty JSON, bad options, "
            "another file at the annotation copy's destination). "
            "Example: python datasets/prepare_lowlight_coco.py --images datasets/coco/val2017 "
            "--annotations datasets/coco/annotations/instances_val2017.json "
            "--output datasets/coco/lowlight/val2017 --pipeline lv2021 --seed 0 --workers 8"
        ),
    )
    parser.add_argument("--images", required=True, metavar="DIR",
                        help="folder of the original images; the JSON's file_name are relative to it")
    parser.add_argument("--annotations", required=True, metavar="JSON",
                        help="COCO-format annotation file listing the images to render")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="folder for the low-light images (same relative file names as the input)")
    parser.add_argument("--pipeline", default="lv2021", choices=pipeline_names(),
                        help="synthesis pipeline (default: %(default)s, the one the wNLB paper used)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed; each image uses the generator eval_rng(seed, its COCO image id), as the "
                             "on-the-fly evaluation degradation does "
                             "(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), metavar="N",
                        help="worker processes (default: %(default)s); the output does not depend on it")
    parser.add_argument("--output-annotations", default=None, metavar="JSON",
                        help="where to copy the annotation JSON (byte for byte) once every image is "
                             "rendered (default: <output>/../annotations/<name of --annotations>); "
                             "a different file already there is never replaced (the run is refused)")
    parser.add_argument("--manifest", default=None, metavar="JSONL",
                        help="manifest of the parameters sampled per image "
                             "(default: <output>/manifest.jsonl)")
    parser.add_argument("--override", action="append", default=[], type=_parse_override,
                        metavar="KEY=VALUE",
                        help="a pipeline parameter range passed to build_pipeline, VALUE parsed as "
                             "JSON when it is JSON (e.g. --override 'gamma=[2,4]'); repeatable")
    parser.add_argument("--jpeg-quality", type=int, default=95, metavar="Q",
                        help="quality of JPEG outputs, 0-100 (default: %(default)s; fixed, so the "
                             "bytes are reproducible)")
    parser.add_argument("--png-compression", type=int, default=3, metavar="L",
                        help="PNG compression level 0-9, lossless at every level (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="render only the first N images of the JSON (a trial run; run again "
                             "without it to finish)")
    parser.add_argument("--overwrite", action="store_true",
                        help="render every image again instead of resuming (also needed to change "
                             "pipeline, seed or overrides of an existing output)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv=None):
    """Command-line entry point; returns the exit status (0 ok, 1 failed images or a failed
    write, 2 bad input)."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s] %(message)s")
    output_annotations = args.output_annotations or default_output_annotations(
        args.output, args.annotations
    )
    try:
        result = prepare_lowlight(
            args.images,
            args.annotations,
            args.output,
            pipeline=args.pipeline,
            seed=args.seed,
            workers=args.workers,
            overrides=dict(args.override),
            manifest=args.manifest,
            output_annotations=output_annotations,
            jpeg_quality=args.jpeg_quality,
            png_compression=args.png_compression,
            limit=args.limit,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, NotADirectoryError, FileExistsError, ValueError) as e:
        # Bad input (missing or misplaced paths, bad options): one line, no traceback.
        logger.error(str(e))
        return 2
    except OSError as e:
        # A failed write (disk full, permission, read-only): one line naming the file. What was
        # rendered is in the manifest, so a rerun resumes.
        logger.error(f"{os_error_message(e)} (what was rendered is kept: run again to resume once it is fixed)")
        return 1
    return 1 if result.failed else 0


def command(argv=None):
    """The ``wnlb-prepare`` console command (and ``datasets/prepare_lowlight_coco.py``): :func:`main`'s exit status."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(command())
