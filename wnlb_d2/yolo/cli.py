"""``wnlb-yolo``: Ultralytics' ``yolo`` command, with this project's non-local blocks known.

Ultralytics' own ``yolo`` command never imports ``wnlb_d2``, so a model YAML that names
:class:`~wnlb_d2.yolo.modules.YOLONonLocalBlock2d` fails there with
``KeyError: 'YOLONonLocalBlock2d'``. This command imports :mod:`wnlb_d2.yolo` first (which
registers the block and sets the offline defaults) and then hands its arguments unchanged to
Ultralytics' entry point (``ultralytics.cfg.entrypoint``), so every ``yolo`` argument works::

    wnlb-yolo train model=configs/yolo/yolov8n-seg-wnlb.yaml data=my-data.yaml epochs=10 imgsz=640
    wnlb-yolo val model=runs/segment/train/weights/best.pt data=my-data.yaml
    wnlb-yolo predict model=runs/segment/train/weights/best.pt source=image.jpg
    wnlb-yolo export model=runs/segment/train/weights/best.pt format=onnx dynamic=True
    python -m wnlb_d2.yolo.cli train ...   # the same, without the console script

A ``model=configs/yolo/...`` that is not in the working folder is the copy shipped with the
package, so the command works from any folder. Before Ultralytics runs, a ``model=`` argument is
checked so that a mistake ends in one line (``wnlb-yolo: error: ...``, exit status 1) instead of a
traceback or a download attempt: a model YAML must read and name only known modules, a weights
file must exist locally (Ultralytics would look a missing ``*.pt`` up on GitHub). Ultralytics' own
argument errors (an unknown key, a bad mode) and any OSError end the same way.

``export`` of a weights file to ``format=torchscript`` or ``onnx`` is then checked against the
eager model: the exported file is run on random images at the export size (and, with
``dynamic=True``, at two other sizes) and its largest difference from eager is logged; above
:data:`~wnlb_d2.yolo.export.EXPORT_TOLERANCE` the file is removed and the command fails, so no
exported file that gives other outputs is left behind. Half-precision, int8 and NMS-fused exports
are not compared (they are meant to differ).
"""

import logging
import os
import sys

__all__ = ["PROG", "model_argument", "with_shipped_model", "check_model_argument", "export_to_check", "check_export",
           "run", "main"]

logger = logging.getLogger(__name__)

#: The command's name, in its messages.
PROG = "wnlb-yolo"


def model_argument(args):
    """The value of the ``model=`` argument among ``yolo``-style arguments, or None.

    Args:
        args (list[str]): the arguments after the command name (``["train", "model=x.yaml", ...]``),
            split as Ultralytics splits them (``model = x.yaml`` is ``model=x.yaml``).

    Returns:
        str or None
    """
    from ultralytics.cfg import merge_equals_args

    for arg in merge_equals_args(list(args)):
        arg = arg[2:] if arg.startswith("--") else arg
        key, sep, value = arg.partition("=")
        if sep and key.strip() == "model":
            return value.strip()
    return None


def with_shipped_model(args):
    """``args`` with a ``model=configs/...`` that names no file here replaced by the copy shipped
    with the package (:func:`wnlb_d2.model_zoo.resolve_config_file`): Ultralytics reads the path
    itself, so outside the repository ``model=configs/yolo/yolov8n-seg-wnlb.yaml`` would name nothing.

    Args:
        args (list[str]): ``yolo``'s arguments, without the command name.

    Returns:
        list[str]: ``args`` itself when nothing is replaced, else a copy split as Ultralytics
        splits them (``model = x`` is ``model=x``).
    """
    from ultralytics.cfg import merge_equals_args

    from ..model_zoo import resolve_config_file

    merged = merge_equals_args(list(args))
    for i, arg in enumerate(merged):
        dashes = "--" if arg.startswith("--") else ""
        key, sep, value = arg[len(dashes):].partition("=")
        if sep and key.strip() == "model" and resolve_config_file(value.strip()) != value.strip():
            merged[i] = f"{dashes}model={resolve_config_file(value.strip())}"
            return merged
    return args


def check_model_argument(model):
    """Refuse a ``model=`` value Ultralytics would fail on deep inside, or try to download.

    Args:
        model (str or None): the value (None: no ``model=`` argument, nothing to check).

    Raises:
        ValueError: a model YAML that cannot be read or names an unknown module (the message
            names the file and the row), an empty weights file.
        FileNotFoundError: a weights path that names no local file.
    """
    if not model:
        return
    if "://" in model:  # a URL: Ultralytics' own business (it refuses downloads offline)
        return
    if model.lower().endswith((".yaml", ".yml")):
        from .model_yaml import read_model_yaml

        read_model_yaml(model)
    elif not os.path.isdir(model):  # exported models may be folders (OpenVINO, saved_model ...)
        from .weights import check_weights_file

        check_weights_file(model, "model")


def _arguments(args):
    """``{key: value}`` and the positional words among ``yolo``-style arguments, values parsed as
    Ultralytics parses them (``imgsz=[480,640]`` -> a list, ``dynamic=True`` -> True)."""
    from ultralytics.cfg import merge_equals_args, smart_value

    values, words = {}, []
    for arg in merge_equals_args(list(args)):
        arg = arg[2:] if arg.startswith("--") else arg
        key, sep, value = arg.partition("=")
        if sep:
            values[key.strip()] = smart_value(value.strip())
        else:
            words.append(arg)
    return values, words


#: The export formats whose files this command can run and compare with eager.
CHECKED_FORMATS = {"torchscript": ".torchscript", "onnx": ".onnx"}


def export_to_check(args):
    """What an ``export`` among the arguments will write, when this command can check it.

    Args:
        args (list[str]): ``yolo``'s arguments, without the command name.

    Returns:
        dict or None: ``weights``, ``path`` (the file Ultralytics writes next to the weights),
        ``imgsz`` and ``dynamic``, ``batch``; None for another mode, another format, a model
        YAML (random weights: nothing to compare with), or a half/int8/NMS export.
    """
    values, words = _arguments(args)
    weights = str(values.get("model") or "")
    fmt = str(values.get("format", "torchscript")).lower()
    if "export" not in words or fmt not in CHECKED_FORMATS or not weights.endswith(".pt"):
        return None
    if any(values.get(k) for k in ("half", "int8", "nms")) or values.get("quantize"):
        logger.info("wnlb-yolo: a half-precision, int8 or NMS-fused export is not compared with eager")
        return None
    return {"weights": weights, "path": os.path.splitext(weights)[0] + CHECKED_FORMATS[fmt],
            "imgsz": values.get("imgsz"), "dynamic": bool(values.get("dynamic")), "batch": int(values.get("batch") or 1)}


def check_export(export):
    """Run the file an ``export`` wrote against its eager model (see the module's docstring).

    Args:
        export (dict): :func:`export_to_check`'s description of the export.

    Returns:
        dict[tuple[int, int], float]: size -> largest difference.

    Raises:
        ValueError: the exported file differs (it has been removed) or is missing.
    """
    from ultralytics import YOLO
    from ultralytics.utils.checks import check_imgsz

    from .export import check_exported_file

    if not os.path.isfile(export["path"]):
        raise ValueError(f"export wrote no {export['path']}")
    model = YOLO(export["weights"])
    stride = int(max(model.model.stride))
    # Ultralytics' own default and rounding: the training size, up to a multiple of the stride.
    imgsz = export["imgsz"] if export["imgsz"] is not None else model.model.args.get("imgsz", 640)
    h, w = check_imgsz(imgsz, stride=stride, min_dim=2)
    sizes = [(h, w)]
    if export["dynamic"]:
        sizes += [(h + 2 * stride, max(stride, w - stride)), (max(stride, h - stride), w + 3 * stride)]
    return check_exported_file(model, export["path"], sizes, batch=export["batch"])


def run(args):
    """Import :mod:`wnlb_d2.yolo`, check ``model=``, then run Ultralytics' entry point on ``args``.

    Args:
        args (list[str]): ``yolo``'s arguments, without the command name.
    """
    import wnlb_d2.yolo  # noqa: F401  (first: the block's registration, the offline defaults)
    from ultralytics import cfg

    args = with_shipped_model(args)
    check_model_argument(model_argument(args))
    export = export_to_check(args)
    # entrypoint() reads the module-level ARGV (sys.argv when ultralytics was imported); setting
    # it keeps each argument whole (its debug string would be split at every space of a path).
    saved = cfg.ARGV
    cfg.ARGV = [PROG, *args]
    try:
        cfg.entrypoint()
    finally:
        cfg.ARGV = saved
    if export is not None:
        differences = check_export(export)
        # The command's result line, as tools/deploy/export_model.py prints its own.
        print(f"{PROG}: {export['path']} equals the eager model within {max(differences.values()):.2g} at "
              + ", ".join(f"{h}x{w}" for h, w in differences))


def _first_line(e):
    """The first non-empty line of an error's message (Ultralytics appends its whole CLI help)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def main(argv=None):
    """The ``wnlb-yolo`` console script.

    Args:
        argv (list[str] or None): the arguments (default ``sys.argv[1:]``).

    Returns:
        int: 0; errors of the arguments or the files end the process through ``sys.exit`` with
        one line and status 1.
    """
    from ..utils.io import os_error_message

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        run(args)
    except OSError as e:
        logger.debug("wnlb-yolo failed", exc_info=True)
        message = str(e) if isinstance(e, FileNotFoundError) and e.filename is None else os_error_message(e)
        sys.exit(f"{PROG}: error: {message}")
    except (SyntaxError, ValueError) as e:  # Ultralytics' argument errors, this module's checks
        logger.debug("wnlb-yolo failed", exc_info=True)
        sys.exit(f"{PROG}: error: {_first_line(e)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
