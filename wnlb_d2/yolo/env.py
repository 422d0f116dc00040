"""Ultralytics' process settings for reproducible, offline runs; applied before it is imported.

Ultralytics reads several environment variables once, when ``ultralytics`` is first imported
(``YOLO_OFFLINE`` decides its ``ONLINE`` flag with a DNS look-up, ``YOLO_CONFIG_DIR`` where its
``settings.json`` goes, ``YOLO_AUTOINSTALL`` whether it may ``pip install`` a missing package
in the middle of a run), so :func:`configure_ultralytics_env` must run first:
``import wnlb_d2.yolo`` does it. Values the user has set are kept (``setdefault``): export
``YOLO_OFFLINE=0`` before the import to let Ultralytics download weights again.
"""

import logging
import os
import shutil
import sys
import tempfile

from ..utils.io import atomic_write

__all__ = ["restore_pil_open", "configure_ultralytics_env", "ultralytics_config_dir", "disable_telemetry"]

logger = logging.getLogger(__name__)

#: Environment defaults: no network, no automatic installs, no settings file in the user's home.
ENV_DEFAULTS = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
}


def ultralytics_config_dir():
    """The folder given to Ultralytics as ``YOLO_CONFIG_DIR`` when the user has not chosen one.

    A per-user folder in the temporary directory: Ultralytics writes ``settings.json`` (and
    would download fonts) there, and nothing of this project should land in the home folder.

    Returns:
        str
    """
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"wnlb_d2-ultralytics-{uid}")


def _provide_font(config_dir):
    # check_det_dataset() always calls check_font("Arial.ttf"), which sends a HEAD request to
    # GitHub unless the file is in Ultralytics' config folder. Any TTF will do for its plots:
    # matplotlib (an Ultralytics dependency) ships DejaVu Sans, whose licence allows copies.
    target = os.path.join(config_dir, "Ultralytics", "Arial.ttf")
    if os.path.exists(target):
        return
    try:
        import matplotlib

        source = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with atomic_write(target) as tmp:  # concurrent processes never see half a font
            shutil.copyfile(source, tmp)
    except OSError as e:  # plots then fall back to PIL's default font; nothing else depends on it
        logger.warning(f"Could not place a font for Ultralytics' plots at {target}: {e}")


def configure_ultralytics_env():
    """Set Ultralytics' environment defaults (offline, no auto-install, config folder, font).

    Must run before ``ultralytics`` is imported; if it was imported already, the variables can
    no longer take effect and a warning says so.

    Returns:
        dict: the variables as they are now (name -> value).
    """
    if "ultralytics" in sys.modules:
        logger.warning("ultralytics was imported before wnlb_d2.yolo: YOLO_OFFLINE, YOLO_AUTOINSTALL and "
                       "YOLO_CONFIG_DIR defaults could not be applied (import wnlb_d2.yolo first).")
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("YOLO_CONFIG_DIR", ultralytics_config_dir())
    _provide_font(os.environ["YOLO_CONFIG_DIR"])
    return {k: os.environ[k] for k in (*ENV_DEFAULTS, "YOLO_CONFIG_DIR")}


def disable_telemetry():
    """Turn off Ultralytics' usage analytics and crash reports (``settings['sync']``).

    Only rewrites ``settings.json`` when the value changes (several processes may share it).
    """
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("sync", True):
        SETTINGS.update({"sync": False})


def restore_pil_open():
    """Undo Ultralytics' global replacement of ``PIL.Image.open``.

    On import, Ultralytics wraps ``PIL.Image.open`` for the whole process: on any file Pillow
    cannot identify, the wrapper tries to install ``pi-heif`` and re-raises a
    ``ModuleNotFoundError`` when it cannot (always, offline). Every other reader in the process
    (wnlb_d2's ``read_image``, detectron2's) would then report a corrupt or non-image file as a
    missing module. Restoring Pillow's own function keeps their errors; only HEIF files, which
    need that plugin anyway, are affected.

    Returns:
        bool: whether the wrapper was found and removed.
    """
    from PIL import Image

    try:
        from ultralytics.utils import patches
    except ImportError:
        return False
    original = getattr(patches, "_image_open", None)
    if original is None or Image.open is original or getattr(Image.open, "__module__", "") != patches.__name__:
        return False
    Image.open = original
    return True
