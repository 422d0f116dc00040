"""The configs shipped with wnlb_d2, by name: this project's ``configs/`` as detectron2's model zoo.

In the repository the configs are the top-level ``configs/`` folder; the wheel ships the same
files as ``wnlb_d2/model_zoo/configs/`` (setup.py's ``package_dir``). A config's *name* is its
path below that folder, e.g. ``"COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_wnlb.yaml"``;
a leading ``configs/`` is accepted too, so the paths the documentation uses are names::

    from wnlb_d2.model_zoo import get_config, get_config_file

    cfg = get_config("demo/Base-Demo-R18-FPN.yaml")              # CfgNode with this project's keys
    lazy = get_config("lazy/mask_rcnn_R_50_FPN_3x_wnlb.py")      # LazyConfig (omegaconf DictConfig)
    path = get_config_file("configs/yolo/yolov8n-seg-wnlb.yaml")  # a file path, e.g. for YOLO(path)

Stock detectron2 configs are not here: they stay ``model_zoo://NAME``
(:data:`wnlb_d2.MODEL_ZOO_PREFIX`), resolved in detectron2's own model zoo.

Every config path the package reads goes through :func:`resolve_config_file`: a path that exists
is used as given, and a relative ``configs/...`` path that does not exist (a command run outside
the repository) is the shipped copy.
"""

import difflib
import logging
import os

__all__ = ["CONFIGS_PREFIX", "configs_root", "list_configs", "get_config_file", "get_config", "shipped_config",
           "shipped_config_of_path", "resolve_config_file"]

logger = logging.getLogger(__name__)

#: The folder the documentation's config paths start with (``configs/demo/...``).
CONFIGS_PREFIX = "configs/"
#: The folder of the Ultralytics model YAMLs: files for ``YOLO(...)``, not detectron2 configs.
YOLO_FOLDER = "yolo"

_HERE = os.path.dirname(os.path.abspath(__file__))
# The wheel's copy; absent in a source checkout (or an editable install), where the configs are
# the repository's configs/ folder, two levels up.
_INSTALLED = os.path.join(_HERE, "configs")
_CHECKOUT = os.path.dirname(os.path.dirname(_HERE))


def configs_root():
    """The folder holding the shipped configs.

    Returns:
        str: ``wnlb_d2/model_zoo/configs`` of an installed wheel; in a source checkout (or an
        editable install), the repository's ``configs/``.

    Raises:
        FileNotFoundError: neither exists (a broken install); the message names both places.
    """
    if os.path.isdir(_INSTALLED):
        return _INSTALLED
    checkout = os.path.join(_CHECKOUT, "configs")
    # setup.py beside it: the folder above the package is this repository, not e.g. a
    # site-packages that happens to hold some other distribution's top-level configs/.
    if os.path.isdir(checkout) and os.path.isfile(os.path.join(_CHECKOUT, "setup.py")):
        return checkout
    raise FileNotFoundError(f"wnlb_d2's configs are missing: neither {_INSTALLED} (an installed wheel) nor "
                            f"{checkout} (a source checkout) exists; reinstall wnlb_d2")


def _name(name):
    """``name`` as a path below the configs folder (``configs/`` and ``./`` dropped), or None
    when it cannot name a shipped config (absolute, empty, or leading out with ``..``)."""
    if not isinstance(name, (str, os.PathLike)):
        return None
    name = os.fspath(name)
    if not isinstance(name, str) or not name or os.path.isabs(name):
        return None
    name = name.replace(os.sep, "/")
    while name.startswith("./"):
        name = name[2:]
    if name.startswith(CONFIGS_PREFIX):
        name = name[len(CONFIGS_PREFIX):]
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") for p in parts):
        return None
    return name


def list_configs():
    """Every shipped config's name (``.yaml`` and LazyConfig ``.py`` files), sorted.

    Returns:
        list[str]: names such as ``"demo/Base-Demo-R18-FPN.yaml"``.
    """
    root = configs_root()
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(folder, root)
        for f in files:
            if f.endswith((".yaml", ".py")) and f != "__init__.py":
                names.append(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
    return sorted(names)


def shipped_config(name):
    """The file of a shipped config, or None when ``name`` names none.

    Args:
        name (str or os.PathLike): a config name, with or without a leading ``configs/``.

    Returns:
        str or None: the absolute path of the file.
    """
    rel = _name(name)
    if rel is None:
        return None
    path = os.path.join(configs_root(), *rel.split("/"))
    return path if os.path.isfile(path) else None


def get_config_file(name):
    """The absolute path of a config shipped with wnlb_d2 (as ``detectron2.model_zoo.get_config_file``).

    Args:
        name (str): the config's path below ``configs/``, e.g.
            ``"COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_wnlb.yaml"``; ``"configs/..."`` works too.

    Returns:
        str: the file (inside the installed package, or in the checkout's ``configs/``).

    Raises:
        FileNotFoundError: no shipped config has that name; the message names the folder looked
            in and the closest names.
    """
    path = shipped_config(name)
    if path is not None:
        return path
    root = configs_root()
    rel = _name(name)
    close = difflib.get_close_matches(rel or str(name), list_configs(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else " (wnlb_d2.model_zoo.list_configs() lists them)"
    raise FileNotFoundError(f"{os.fspath(name)!r} is not a config shipped with wnlb_d2 (looked in {root}){hint}")


def get_config(name):
    """A shipped config, loaded (as ``detectron2.model_zoo.get_config``, without ``trained``: no
    trained weights are published for these configs).

    Args:
        name (str): as :func:`get_config_file`; a ``.yaml`` or a LazyConfig ``.py``.

    Returns:
        CfgNode or omegaconf.DictConfig: for a YAML, detectron2's defaults with this project's
        keys (:func:`wnlb_d2.config.add_lowlight_config`) and the file merged (``model_zoo://``
        bases resolved), not frozen; for a ``.py``, ``LazyConfig.load`` of it.

    Raises:
        FileNotFoundError: no shipped config has that name.
        ValueError: ``name`` is one of the Ultralytics model YAMLs (``yolo/...``), which are files
            for ``YOLO(get_config_file(name))``, not detectron2 configs.
    """
    path = get_config_file(name)
    if path.endswith(".py"):
        from detectron2.config import LazyConfig

        return LazyConfig.load(path)
    if _name(name).split("/")[0] == YOLO_FOLDER:
        raise ValueError(f"{name!r} is an Ultralytics model YAML, not a detectron2 config: "
                         f"load it with ultralytics.YOLO(wnlb_d2.model_zoo.get_config_file({name!r}))")
    from detectron2.config import get_cfg

    from ..config import add_lowlight_config, merge_from_file

    cfg = get_cfg()
    add_lowlight_config(cfg)
    merge_from_file(cfg, path)
    return cfg


def shipped_config_of_path(path):
    """The shipped copy that a relative ``configs/...`` path names, or None.

    Args:
        path (str or os.PathLike): a path as given to a command (``configs/demo/Base-Demo-R18-FPN.yaml``).

    Returns:
        str or None: the shipped file; None for an absolute path, one that does not start with
        ``configs/``, or one that names no shipped config.
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    rel = os.fspath(path)
    if not isinstance(rel, str) or os.path.isabs(rel):
        return None
    rel = rel.replace(os.sep, "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return shipped_config(rel) if rel.startswith(CONFIGS_PREFIX) else None


def resolve_config_file(path):
    """The file a config path given to a command or function names.

    A path that exists is used as given. A relative path starting with ``configs/`` that does
    not exist (a command run outside the repository, e.g. ``configs/demo/Base-Demo-R18-FPN.yaml``)
    is the shipped copy when there is one. Anything else is returned unchanged, so the caller's
    own "not found" error names what was given.

    Args:
        path (str or os.PathLike): a config or model YAML path.

    Returns:
        str or os.PathLike: ``path``, or the shipped file's absolute path.
    """
    if not isinstance(path, (str, os.PathLike)) or os.path.exists(path):
        return path
    shipped = shipped_config_of_path(path)
    if shipped is None:
        return path
    logger.debug(f"Config {path} is not in {os.getcwd()}: using the one shipped with wnlb_d2, {shipped}")
    return shipped
