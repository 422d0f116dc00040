"""Run a (wNLB) detectron2 model on images or a video and draw its masks, boxes and labels.

Inputs are image files, folders (their images) and glob patterns (``--input``), or one video
file (``--video-input``, read with OpenCV). ``--low-light lv2021`` degrades every input first
(deterministically: the same file gives the same degradation in every run), to see on
normal-light photos what the dark does; ``--opts INPUT.ENHANCER.NAME clahe`` puts an enhancer
in front of the model. A checkpoint with non-local blocks gets them even when the config names
the stock backbone (``MODEL.BACKBONE.NAME`` and ``MODEL.WNLB.STAGES`` are read from its
keys; the fusion from the config). ``--side-by-side`` shows every stage next to the
predictions. A picture whose longest side would exceed ``--max-picture-side`` (default 4096 px)
is drawn smaller, with a warning: drawing memory follows the picture's size (a 12000 x 9000
photo drawn at full size needs over 12 GB).

Every image or video frame that fails (unreadable, too small for the degradation, a model or
drawing error) is reported in one line and the others are still processed; a picture or video
that cannot be written (full disk, no permission) is reported with the file and the system's
reason. The exit status is 1 if any input, frame or write failed, or if a video ends before the
frame count its header announces (``CAP_PROP_FRAME_COUNT``: a truncated or damaged file; the
frames decoded are still written). A video is written to a temporary beside the output and read
back before it replaces the output (OpenCV's writer reports no failed write), so a failed write
leaves a previous output as it was. An output that would overwrite an input (the same file, or
the input folder as the output folder) is refused before anything runs, with exit status 2.

Examples (wnlb-demo, or python tools/demo.py in a checkout)::

    wnlb-demo --config-file configs/demo/Base-Demo-R18-FPN.yaml \\
        --input datasets/wnlb_demo/*/val/00000[1-4].png --low-light lv2021 --side-by-side --scale 3 \\
        --output output/demo_pictures --opts MODEL.WEIGHTS output/demo/wnlb/model_final.pth
    wnlb-demo --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_wnlb.yaml \\
        --video-input night.mp4 --output night_predictions.avi --opts MODEL.WEIGHTS model_final.pth
"""

import argparse
import itertools
import logging
import os
import sys
import tempfile

from . import tool_name

VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "MJPG"}
_IMAGE_OUTPUT_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Default bound of a picture's longest side in pixels (``--max-picture-side``).
MAX_PICTURE_SIDE = 4096
_PANEL_GAP = 4  # white pixels between side-by-side panels
_TITLE_BAR_MAX = 28  # the tallest title bar wnlb_d2.visualization.label_panel draws

logger = logging.getLogger("wnlb_d2.demo")
#: The name this command's messages start with: ``demo.py``, or ``wnlb-demo`` when run as that.
TOOL = tool_name("demo.py")


class OutputError(Exception):
    """A picture or video could not be written; the message names the file and the reason."""


class _NothingWritten(Exception):
    """Leaves a video's atomic_write without renaming: no frame was drawn (each cause already reported)."""


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
    p.add_argument("--max-picture-side", type=int, default=MAX_PICTURE_SIDE, metavar="PX",
                   help="longest side of a picture (all panels together); larger ones are drawn at a smaller "
                        f"scale, with a warning (default {MAX_PICTURE_SIDE}; memory grows with it)")
    # A flag, as in detectron2's demo: a positional list would be swallowed by --input's paths.
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="config overrides, last on the line, e.g. --opts MODEL.WEIGHTS model_final.pth")
    return p


def _output_is_folder(output, n_inputs):
    if output.endswith(os.sep) or os.path.isdir(output) or n_inputs > 1:
        return True
    return not output.lower().endswith(_IMAGE_OUTPUT_EXTS + tuple(VIDEO_CODECS))


def drawing_scale(size, n_panels, scale, max_side):
    """The scale to draw each panel at so that the whole picture's longest side is at most ``max_side``.

    Args:
        size (tuple[int, int]): the image's ``(height, width)``.
        n_panels (int): panels side by side (1: the predictions only, without title bars).
        scale (float): the scale asked for (``--scale``).
        max_side (int): bound of the picture's width and height, gaps and title bars included.

    Returns:
        float: ``scale``, or less where the picture would exceed the bound.
    """
    h, w = size
    gaps = _PANEL_GAP * (n_panels - 1)
    bar = _TITLE_BAR_MAX if n_panels > 1 else 0
    # Whole pixels per panel: n panels of round(w * s) px plus the gaps stay within the bound.
    fit = min((max_side - gaps) // n_panels / w, (max_side - bar) / h)
    return min(scale, fit)


def _compose(stages, drawn, side_by_side):
    import cv2
    import numpy as np

    from wnlb_d2.visualization import label_panel

    if not side_by_side:
        return drawn
    h, w = drawn.shape[:2]
    panels = []
    for name, img in stages.items():
        # Area averaging where a huge stage is shrunk; nearest pixels keep small images crisp.
        shrink = img.shape[0] > h or img.shape[1] > w
        resized = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)
        panels.append(label_panel(resized, name))
    panels.append(label_panel(drawn, "predictions"))
    gap = np.full((panels[0].shape[0], _PANEL_GAP, 3), 255, np.uint8)
    return np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)


def _draw_picture(stages, outputs, metadata, args):
    """The picture of one image or frame: its predictions, beside every stage with ``--side-by-side``.

    Returns:
        tuple[np.ndarray, float]: the BGR picture and the scale it was drawn at (below
        ``args.scale`` where ``--max-picture-side`` needed it).
    """
    from wnlb_d2.visualization import draw_predictions

    image = list(stages.values())[-1]
    n_panels = len(stages) + 1 if args.side_by_side else 1
    scale = drawing_scale(image.shape[:2], n_panels, args.scale, args.max_picture_side)
    drawn = draw_predictions(image, outputs, metadata, args.confidence_threshold, scale)
    return _compose(stages, drawn, args.side_by_side), scale


def _warn_if_shrunk(name, image, scale, args):
    if scale < args.scale:
        logger.warning(f"{name}: {image.shape[1]}x{image.shape[0]} drawn at scale {scale:.3g} instead of "
                       f"{args.scale:g}, so that the picture's longest side stays within {args.max_picture_side} px "
                       "(--max-picture-side)")


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


def _os_error_line(action, path, error):
    """``could not <action> <path>: <the system's reason>`` (not the temporary's name ``str(error)`` holds)."""
    return f"could not {action} {path}: {os.strerror(error.errno) if error.errno else error}"


def _make_folder_for(path):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(_os_error_line("create the folder", folder, e)) from e


def _write_image(path, image):
    """Write ``image`` to ``path`` atomically; raises OutputError naming the file and the reason."""
    import cv2

    from wnlb_d2.utils.io import atomic_write_bytes

    ext = os.path.splitext(path)[1].lower()
    # Encoded in memory and written by Python: a failed write raises the system's own error
    # (ENOSPC, EACCES), where cv2.imwrite returns False alike for a full disk and an unknown extension.
    try:
        ok, encoded = cv2.imencode(ext, image)
    except cv2.error:
        ok = False
    if not ok:
        raise OutputError(f"OpenCV cannot encode {path} as {ext!r} (expected one of {', '.join(_IMAGE_OUTPUT_EXTS)})")
    _make_folder_for(path)
    try:
        atomic_write_bytes(path, encoded.tobytes())
    except OSError as e:
        raise OutputError(_os_error_line("write", path, e)) from e


def _reason(error):
    """One line for an exception met on one input: its own message where it is ours, else its type too."""
    from wnlb_d2.data.image_io import ImageReadError

    if isinstance(error, (OutputError, ImageReadError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _record_failure(failures, path, reason):
    logger.error(f"{path}: {reason}")
    failures.append((path, reason))


def _process_image(predictor, path, out, args):
    """Predict, draw and write one image. Returns whether a picture was written."""
    from wnlb_d2.data.image_io import read_image

    image = read_image(path, format="BGR")
    stages, outputs = predictor.run(image, os.path.basename(path))
    logger.info(f"{path}: {_summary(outputs, predictor.metadata, args.confidence_threshold)}")
    if out is None:
        return False
    picture, scale = _draw_picture(stages, outputs, predictor.metadata, args)
    _warn_if_shrunk(path, image, scale, args)
    _write_image(out, picture)
    return True


def run_images(predictor, files, args, failures):
    """Process image files; appends ``(path, reason)`` to ``failures``. Returns files written.

    One image that fails (unreadable, rejected by a stage, a model or drawing error, a failed
    write) is reported and the others are still processed.
    """
    from tqdm import tqdm

    written = []
    for path, out in tqdm(list(zip(files, _image_outputs(files, args.output))), desc="images", unit="img",
                          disable=len(files) < 2):
        try:
            if _process_image(predictor, path, out, args):
                written.append(out)
        except Exception as e:  # noqa: BLE001  (one bad input must not end the batch; each is reported)
            _record_failure(failures, path, _reason(e))
    return written


class _VideoOutput:
    """The frames of one video, written to a temporary (``atomic_write``'s) and checked by reading them back.

    OpenCV's ``VideoWriter.write`` reports nothing (it returns None), so a full disk gives a
    truncated file and no error; :meth:`check` compares the file with its container's sizes and
    counts the frames that decode from it.
    """

    def __init__(self, tmp, out_path, fps):
        self.tmp, self.out_path, self.fps = tmp, out_path, fps
        self.writer, self.frames = None, 0

    def write(self, picture):
        if self.writer is None:
            self.writer = self._open(picture.shape[1], picture.shape[0])
        self.writer.write(picture)
        self.frames += 1

    def _open(self, width, height):
        import cv2

        codec = VIDEO_CODECS[os.path.splitext(self.out_path)[1].lower()]
        # Creating the file first reports an unwritable folder as what it is; the writer only says "not opened".
        try:
            open(self.tmp, "wb").close()
        except OSError as e:
            raise OutputError(_os_error_line("write", self.out_path, e)) from e
        writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*codec), self.fps, (width, height))
        if not writer.isOpened():
            raise OutputError(f"OpenCV cannot write the video {self.out_path} with codec {codec}")
        return writer

    def close(self):
        if self.writer is not None:
            self.writer.release()

    def check(self):
        """Raise OutputError unless the file is whole and every frame written decodes from it.

        Both are needed: a truncated AVI or MKV still decodes its last, partial frame (with the
        damage concealed), and a lost frame leaves the container's sizes right.
        """
        import cv2

        from wnlb_d2.utils.video_container import missing_video_bytes

        missing = missing_video_bytes(self.tmp)
        if missing:
            raise OutputError(f"could not write the video {self.out_path}: {missing} (OpenCV reports no failed "
                              "write: a full disk?); the output was not replaced")
        cap = cv2.VideoCapture(self.tmp)
        readable = 0
        try:
            while cap.isOpened() and cap.read()[0]:
                readable += 1
        finally:
            cap.release()
        if readable != self.frames:
            raise OutputError(
                f"could not write the video {self.out_path}: only {readable} of the {self.frames} frames written "
                "could be read back (OpenCV reports no failed write: a full disk?); the output was not replaced")


def _process_frames(predictor, cap, path, args, failures, video):
    """Predict (and draw into ``video`` unless None) every frame of ``cap``. Returns the frames decoded.

    A frame that fails is reported and skipped; a video that cannot be written (OutputError)
    stops here.
    """
    import cv2
    from tqdm import tqdm

    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    base = os.path.basename(path)
    decoded, warned = 0, False
    for idx in tqdm(itertools.count(), total=total, desc=base, unit="frame"):
        ok, frame = cap.read()
        if not ok:
            break
        decoded += 1
        try:
            stages, outputs = predictor.run(frame, f"{base}:{idx}")
            logger.debug(f"{base} frame {idx}: {_summary(outputs, predictor.metadata, args.confidence_threshold)}")
            if video is None:
                continue
            picture, scale = _draw_picture(stages, outputs, predictor.metadata, args)
        except Exception as e:  # noqa: BLE001  (one bad frame must not end the video; each is reported)
            _record_failure(failures, path, f"frame {idx}: {_reason(e)}")
            continue
        if not warned:
            _warn_if_shrunk(path, frame, scale, args)
            warned = True
        video.write(picture)
    logger.info(f"{path}: {decoded} frame(s) processed")
    if decoded == 0:
        failures.append((path, "no frame could be decoded"))
    elif total and decoded < total:
        # OpenCV's read() says only "no frame": fewer frames than the header announces means a
        # truncated or damaged file, not its end. The frames decoded are still written.
        reason = (f"only {decoded} of the {total} frames its header announces (CAP_PROP_FRAME_COUNT) "
                  "could be decoded: truncated or damaged video")
        logger.warning(f"{path}: {reason}")
        failures.append((path, reason))
    return decoded


def _write_video(predictor, cap, path, out_path, args, failures):
    """Draw every frame into ``out_path``, which is replaced only by a complete, readable video."""
    import cv2

    from wnlb_d2.utils.io import atomic_write

    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    try:
        _make_folder_for(out_path)
        with atomic_write(out_path) as tmp:
            video = _VideoOutput(tmp, out_path, fps)
            try:
                _process_frames(predictor, cap, path, args, failures, video)
            finally:
                video.close()
            if video.frames == 0:
                raise _NothingWritten()
            video.check()
    except _NothingWritten:
        return None
    except OutputError as e:
        _record_failure(failures, path, str(e))
        return None
    except OSError as e:  # the rename over out_path
        _record_failure(failures, path, _os_error_line("write", out_path, e))
        return None
    return out_path


def run_video(predictor, path, args, failures):
    """Process one video file frame by frame. Returns the output path or None."""
    import cv2

    if not os.path.isfile(path):
        failures.append((path, "no such video file"))
        return None
    out_path = _video_output(path, args.output)
    if out_path is not None and os.path.splitext(out_path)[1].lower() not in VIDEO_CODECS:
        failures.append((path, f"video output {out_path!r} must end with one of {list(VIDEO_CODECS)}"))
        return None
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            failures.append((path, "OpenCV cannot open this video (unsupported or damaged file)"))
            return None
        if out_path is None:
            _process_frames(predictor, cap, path, args, failures, None)
            return None
        return _write_video(predictor, cap, path, out_path, args, failures)
    finally:
        cap.release()


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
        print(f"{TOOL}: error: {e}", file=sys.stderr)
        return 2
    t = args.confidence_threshold
    if not 0.0 <= t <= 1.0:
        sys.exit(f"{TOOL}: error: --confidence-threshold must be in [0, 1], got {t}")
    if not args.scale > 0:
        sys.exit(f"{TOOL}: error: --scale must be positive, got {args.scale}")
    if args.max_picture_side < 256:
        sys.exit(f"{TOOL}: error: --max-picture-side must be at least 256 px, got {args.max_picture_side}")
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
    except (OSError, KeyError, ValueError) as e:
        sys.exit(f"{TOOL}: error: {type(e).__name__}: {e}")

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
        failed = len({path for path, _ in failures})  # a video's failed frames are one input
        print(f"{TOOL}: {failed} of {n_inputs} input(s) failed:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


def command(argv=None):
    """The ``wnlb-demo`` console command (and ``tools/demo.py``): :func:`main`'s exit status."""
    return main(argv)


if __name__ == "__main__":
    sys.exit(command())
