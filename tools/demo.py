#!/usr/bin/env python
"""Run a (wNLB) detectron2 model on images or a video and draw its masks, boxes and labels.

Inputs are image files, folders (their images) and glob patterns (``--input``), or one video
file (``--video-input``, read with OpenCV). ``--low-light lv2021`` degrades every input first
(deterministically: the same file gives the same degradation in every run), to see on
normal-light photos what the dark does; ``--opts INPUT.ENHANCER.NAME clahe`` puts an enhancer
in front of the model. A checkpoint with non-local blocks gets them even when the config names
the stock backbone (``MODEL.BACKBONE.NAME`` and ``MODEL.WNLB.STAGES`` are read from its
keys; the fusion from the config). ``--side-by-side`` shows every stage next to the
predictions. Missing or unreadable inputs are reported and skipped; the exit status is 1 if
any input failed, or if a video ends before the frame count its header announces
(``CAP_PROP_FRAME_COUNT``: a truncated or damaged file; the frames decoded are still written).
An output that would overwrite an input (the same file, or the input folder as the output
folder) is refused before anything runs, with exit status 2.

Examples::

    python tools/demo.py --config-file configs/demo/Base-Demo-R18-FPN.yaml \\
        --input datasets/wnlb_demo/*/val/00000[1-4].png --low-light lv2021 --side-by-side --scale 3 \\
        --output output/demo_pictures --opts MODEL.WEIGHTS output/demo/wnlb/model_final.pth
    python tools/demo.py --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_wnlb.yaml \\
        --video-input night.mp4 --output night_predictions.avi --opts MODEL.WEIGHTS model_final.pth
"""

import argparse
import itertools
import logging
import os
import sys
import tempfile

VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "MJPG"}
_IMAGE_OUTPUT_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

logger = logging.getLogger("wnlb_d2.demo")


def build_parser():
    from wnlb_d2.data.synthesis import PIPELINES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="config (YAML path or model_zoo://NAME)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    src.add_argument("--video-input", metavar="FILE", help="a video file")
    p.add_argument("--output", metavar="PATH",
                   help="folder for the pictures (or video), or one file for a single image or the video "
                        f"({', '.join(VIDEO_CODECS)}); without it, detections are only logged")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score drawn (default 0.5)")
    p.add_argument("--low-light", choices=PIPELINES, metavar="PIPELINE",
                   help=f"degrade the inputs first with this pipeline ({', '.join(PIPELINES)}), ranges from "
                        "INPUT.LOW_LIGHT.<PIPELINE>")
    p.add_argument("--low-light-seed", type=int, default=None, help="seed of the degradation (default INPUT.LOW_LIGHT.SEED)")
    p.add_argument("--side-by-side", action="store_true",
                   help="show the input, the low-light and enhanced versions and the predictions side by side")
    p.add_argument("--scale", type=float, default=1.0, help="drawing scale (e.g. 3 for 128 px images)")
    # A flag, as in detectron2's demo: a positional list would be swallowed by --input's paths.
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="config overrides, last on the line, e.g. --opts MODEL.WEIGHTS model_final.pth")
    return p


def _output_is_folder(output, n_inputs):
    if output.endswith(os.sep) or os.path.isdir(output) or n_inputs > 1:
        return True
    return not output.lower().endswith(_IMAGE_OUTPUT_EXTS + tuple(VIDEO_CODECS))


def _compose(stages, drawn, side_by_side):
    import cv2
    import numpy as np

    from wnlb_d2.visualization import label_panel

    if not side_by_side:
        return drawn
    h, w = drawn.shape[:2]
    panels = [label_panel(cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST), name)
              for name, img in stages.items()]
    panels.append(label_panel(drawn, "predictions"))
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)  # white 4 px between panels
    return np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)


def _summary(outputs, metadata, threshold):
    if "instances" not in outputs:
        return "no instances"
    inst = outputs["instances"]
    classes = inst.pred_classes[inst.scores >= threshold].tolist()
    names = metadata.get("thing_classes", None)
    counts = {}
    for c in classes:
        label = names[c] if names and c < len(names) else str(c)
        counts[label] = counts.get(label, 0) + 1
    return f"{len(classes)} instance(s)" + (": " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) if counts else "")


def _image_outputs(files, output):
    """The output path of each input image (a folder keeps base names; repeats get ``_1``, ...)."""
    if not output:
        return [None] * len(files)
    if not _output_is_folder(output, len(files)):
        return [output] * len(files)
    outs, used = [], set()
    for path in files:
        name = os.path.basename(path)
        stem, ext = os.path.splitext(name)
        k = 1
        while name in used:  # same base name from two folders: keep both
            name, k = f"{stem}_{k}{ext}", k + 1
        used.add(name)
        outs.append(os.path.join(output, name))
    return outs


def _video_output(path, output):
    """The output path of the video ``path`` (None without ``--output``)."""
    if not output:
        return None
    if _output_is_folder(output, 1):
        base = os.path.basename(path)
        ext = os.path.splitext(base)[1].lower()
        return os.path.join(output, os.path.splitext(base)[0] + (ext if ext in VIDEO_CODECS else ".avi"))
    return output


def _same_file(a, b):
    # realpath resolves symlinks and "..": samefile also catches hard links of existing files.
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs_spare_inputs(inputs, outputs):
    """Raise ValueError if an output path would overwrite one of the input files.

    The drawings would replace the user's picture (and a second run would then detect its own
    drawings), so this is refused before anything is read or written.

    Args:
        inputs (list[str]): input files.
        outputs (list[str or None]): the output path of each (None: nothing written).
    """
    for src, out in zip(inputs, outputs):
        if out is None:
            continue
        for other in inputs:
            if _same_file(out, other):
                raise ValueError(
                    f"--output would overwrite the input {other} (the drawing of {src}); expected an "
                    "output file or folder that is not an input (e.g. another folder)"
                )


def _write_image(path, image):
    import cv2

    from wnlb_d2.utils.io import atomic_write

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_write(path) as tmp:
        if not cv2.imwrite(tmp, image):
            raise OSError(f"OpenCV could not write {path!r} (unsupported extension or unwritable folder)")


def run_images(predictor, files, args, failures):
    """Process image files; appends ``(path, reason)`` to ``failures``. Returns files written."""
    from tqdm import tqdm

    from wnlb_d2.data.image_io import ImageReadError, read_image
    from wnlb_d2.visualization import draw_predictions

    outputs = _image_outputs(files, args.output)
    written = []
    for path, out in tqdm(list(zip(files, outputs)), desc="images", unit="img", disable=len(files) < 2):
        try:
            image = read_image(path, format="BGR")
        except ImageReadError as e:
            failures.append((path, str(e)))
            logger.error(str(e))
            continue
        stages, outputs = predictor(image, os.path.basename(path))
        logger.info(f"{path}: {_summary(outputs, predictor.metadata, args.confidence_threshold)}")
        if not args.output:
            continue
        drawn = draw_predictions(list(stages.values())[-1], outputs, predictor.metadata,
                                 args.confidence_threshold, args.scale)
        picture = _compose(stages, drawn, args.side_by_side)
        try:
            _write_image(out, picture)
        except OSError as e:
            failures.append((path, str(e)))
            logger.error(str(e))
            continue
        written.append(out)
    return written


def run_video(predictor, path, args, failures):
    """Process one video file frame by frame. Returns the output path or None."""
    import cv2
    from tqdm import tqdm

    from wnlb_d2.utils.io import temporary_name
    from wnlb_d2.visualization import draw_predictions

    if not os.path.isfile(path):
        failures.append((path, "no such video file"))
        return None
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        failures.append((path, "OpenCV cannot open this video (unsupported or damaged file)"))
        return None
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    base = os.path.basename(path)
    out_path = _video_output(path, args.output)
    if out_path is not None:
        ext = os.path.splitext(out_path)[1].lower()
        if ext not in VIDEO_CODECS:
            failures.append((path, f"video output {out_path!r} must end with one of {list(VIDEO_CODECS)}"))
            cap.release()
            return None
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    writer, frames, tmp = None, 0, None
    try:
        for idx in tqdm(itertools.count(), total=total, desc=base, unit="frame"):
            ok, frame = cap.read()
            if not ok:
                break
            stages, outputs = predictor(frame, f"{base}:{idx}")
            frames += 1
            logger.debug(f"{base} frame {idx}: {_summary(outputs, predictor.metadata, args.confidence_threshold)}")
            if out_path is None:
                continue
            drawn = draw_predictions(list(stages.values())[-1], outputs, predictor.metadata,
                                     args.confidence_threshold, args.scale)
            picture = _compose(stages, drawn, args.side_by_side)
            if writer is None:
                ext = os.path.splitext(out_path)[1].lower()
                tmp = temporary_name(out_path)  # renamed over out_path once every frame is written
                writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*VIDEO_CODECS[ext]), fps,
                                         (picture.shape[1], picture.shape[0]))
                if not writer.isOpened():
                    failures.append((path, f"OpenCV cannot write video {out_path!r} with codec {VIDEO_CODECS[ext]}"))
                    return None
            writer.write(picture)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        failures.append((path, "no frame could be decoded"))
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        return None
    logger.info(f"{path}: {frames} frame(s) processed")
    if total and frames < total:
        # OpenCV's read() says only "no frame": fewer frames than the header announces means a
        # truncated or damaged file, not its end. The frames decoded are still written.
        reason = (f"only {frames} of the {total} frames its header announces (CAP_PROP_FRAME_COUNT) "
                  "could be decoded: truncated or damaged video")
        logger.warning(f"{path}: {reason}")
        failures.append((path, reason))
    if out_path is None:
        return None
    os.replace(tmp, out_path)
    return out_path


def score_threshold_opts(threshold):
    """Config opts that make every detector's own score filter drop what would not be drawn.

    SOLOv2's ``SCORE_THRESH_TEST`` filters its candidates before Matrix NMS, which only lowers
    scores (as maskness rescoring does), so a candidate under the threshold would never be drawn.
    """
    t = str(threshold)
    return ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", t, "MODEL.RETINANET.SCORE_THRESH_TEST", t,
            "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", t, "MODEL.SOLOV2.SCORE_THRESH_TEST", t]


def main(argv=None):
    args = build_parser().parse_args(argv)
    from detectron2.utils.logger import setup_logger

    setup_logger(name="wnlb_d2")
    setup_logger(name="detectron2", abbrev_name="d2")
    import wnlb_d2  # noqa: F401  (registers backbones and datasets)
    from wnlb_d2.engine.predictor import LowLightPredictor, backbone_opts_for_checkpoint, expand_inputs
    from wnlb_d2.engine.setup import setup_cfg

    if args.video_input:
        inputs, outputs = [args.video_input], [_video_output(args.video_input, args.output)]
    else:
        inputs, _ = expand_inputs(args.input)
        outputs = _image_outputs(inputs, args.output)
    try:
        check_outputs_spare_inputs(inputs, outputs)
    except ValueError as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 2
    t = args.confidence_threshold
    if not 0.0 <= t <= 1.0:
        sys.exit(f"demo.py: error: --confidence-threshold must be in [0, 1], got {t}")
    if not args.scale > 0:
        sys.exit(f"demo.py: error: --scale must be positive, got {args.scale}")
    # The demo writes nothing to OUTPUT_DIR; a temporary folder keeps setup_cfg's write check
    # from creating ./output (a user's OUTPUT_DIR in opts still wins).
    base = ["OUTPUT_DIR", tempfile.gettempdir()] + score_threshold_opts(t)
    try:
        cfg = setup_cfg(args.config_file, base + list(args.opts))
        extra = backbone_opts_for_checkpoint(cfg, cfg.MODEL.WEIGHTS)
        if extra:
            logger.warning(f"{cfg.MODEL.WEIGHTS} holds non-local blocks that {cfg.MODEL.BACKBONE.NAME} lacks: "
                           f"using {' '.join(extra)} (fusion: MODEL.WNLB.FUSION = {cfg.MODEL.WNLB.FUSION})")
            cfg = setup_cfg(args.config_file, base + extra + list(args.opts))
        predictor = LowLightPredictor(cfg, low_light=args.low_light, seed=args.low_light_seed)
    except (FileNotFoundError, KeyError, ValueError, PermissionError) as e:
        sys.exit(f"demo.py: error: {type(e).__name__}: {e}")

    failures = []
    if args.video_input:
        n_inputs = 1
        out = run_video(predictor, args.video_input, args, failures)
        if out:
            print(f"Wrote {out}")
    else:
        files, problems = expand_inputs(args.input)
        failures.extend(problems)
        n_inputs = len(files) + len(problems)
        written = run_images(predictor, files, args, failures)
        if written:
            where = args.output if len(written) > 1 else written[0]
            print(f"Wrote {len(written)} picture(s) to {where}")
    if failures:
        print(f"demo.py: {len(failures)} of {n_inputs} input(s) failed:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
