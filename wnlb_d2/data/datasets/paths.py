"""Where registered datasets live on disk, and the errors raised when a file is missing."""

import os

__all__ = ["datasets_root", "require_file", "require_dir", "require_images", "README_HINT"]

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


def require_images(dataset_dicts, what):
    """Raise a clear :class:`FileNotFoundError` unless every record's ``file_name`` is a file.

    Run when a dataset is first loaded, so that a missing image is reported at once (with
    how many are missing) instead of failing in a data-loader worker thousands of
    iterations into training. Each folder is listed once, so checking COCO's 118k training
    images costs a directory listing, not 118k ``stat`` calls.

    Args:
        dataset_dicts (list[dict]): records with ``file_name``.
        what (str): what the images are, for the message (e.g. ``"Images of lis_coco_JPG_test+1.json"``).

    Raises:
        FileNotFoundError: the count of missing images and the first one missing.
    """
    listings = {}
    missing = []
    for record in dataset_dicts:
        path = record["file_name"]
        folder, base = os.path.split(path)
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(folder or "."))
            except OSError:  # missing or unreadable folder: every file in it is missing
                listings[folder] = set()
        # The listing is exact; isfile is the fallback for case-insensitive file systems.
        if base not in listings[folder] and not os.path.isfile(path):
            missing.append(path)
    if missing:
        raise FileNotFoundError(
            f"{what}: {len(missing)} of {len(dataset_dicts)} images are missing; the first is "
            f"{missing[0]} ({README_HINT})."
        )
