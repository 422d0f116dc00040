"""Where registered datasets live on disk, and the errors raised when a file is missing."""

import os

__all__ = ["datasets_root", "require_file", "require_dir", "README_HINT"]

#: Appended to every "missing file" error so the user knows where the layout is described.
README_HINT = "see datasets/README.md of wnlb_d2 for the expected layout under $DETECTRON2_DATASETS"


def datasets_root():
    """The datasets root: ``$DETECTRON2_DATASETS``, or ``./datasets`` as in detectron2.

    Returns:
        str: the root folder, with ``~`` expanded (it need not exist).
    """
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def require_file(path, what):
    """Raise a clear :class:`FileNotFoundError` unless ``path`` is a file.

    Args:
        path (str): the file expected.
        what (str): what the file is, for the message (e.g. ``"LIS annotation file"``).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: expected the file {path} ({README_HINT}).")


def require_dir(path, what):
    """Raise a clear :class:`FileNotFoundError` unless ``path`` is a folder.

    Args:
        path (str): the folder expected.
        what (str): what the folder holds, for the message.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: expected the folder {path} ({README_HINT}).")
