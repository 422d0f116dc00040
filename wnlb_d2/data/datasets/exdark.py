"""ExDark, the Exclusively Dark image dataset (Loh and Chan, CVIU 2019): real low-light boxes.

Layout under ``$DETECTRON2_DATASETS`` (the two official zips and the split file)::

    ExDark/
      ExDark/<Class>/<image>                 images, one folder per class (ExDark.zip)
      ExDark_Annno/<Class>/<image>.txt       boxes (ExDark_Annno.zip; the folder name is spelled so)
      imageclasslist.txt                     name, class, lighting, indoor/outdoor, split

An annotation file is Piotr Dollar's bbGt format: a header ``% bbGt version=3``, then one line
per box ``<ClassName> l t w h 0 0 0 0 0 0 0`` (left, top, width, height in pixels). The split
column of ``imageclasslist.txt`` is 1 = train, 2 = val, 3 = test.

The annotations are converted on the fly. Boxes only (no masks), 12 classes, each mapped onto
COCO's class of the same meaning so a COCO-trained model is evaluated on ExDark as it is
(metadata ``evaluation_tasks = ("bbox",)``: give it to COCOEvaluator as ``tasks``):
People -> person, Motorbike -> motorcycle, Table -> dining table, the 9 others by their own
name (bicycle, boat, bottle, bus, car, cat, chair, cup, dog). A box whose class is not one of
these 12 (case-insensitive; e.g. ``Horse``, a COCO class but not an ExDark one) is skipped and
counted in a warning. COCOEvaluator writes the ground
truth JSON itself (``convert_to_coco_json``, cached in its output folder).

Images that carry an EXIF orientation: the boxes were drawn with MATLAB's ``imread``, which
ignores EXIF, so they are in the stored pixel frame; detectron2 reads images EXIF-rotated, so
the boxes are rotated the same way here (counted in a log message).
"""

import logging
import os
from collections import namedtuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image, UnidentifiedImageError

from .coco_space import coco_contiguous_id, coco_metadata
from .paths import require_dir, require_file

__all__ = [
    "EXDARK_CLASSES",
    "EXDARK_TO_COCO",
    "ExDarkEntry",
    "read_imageclasslist",
    "read_bbgt",
    "load_exdark",
    "register_exdark",
    "register_all_exdark",
]

logger = logging.getLogger(__name__)

#: ExDark's classes; class label k in imageclasslist.txt is EXDARK_CLASSES[k - 1].
EXDARK_CLASSES = (
    "Bicycle", "Boat", "Bottle", "Bus", "Car", "Cat",
    "Chair", "Cup", "Dog", "Motorbike", "People", "Table",
)  # fmt: skip

#: ExDark class names (lower case) -> COCO names, for the names that differ.
EXDARK_TO_COCO = {"people": "person", "motorbike": "motorcycle", "table": "dining table"}

#: Split name -> value of the split column (None: every image).
SPLITS = {"train": 1, "val": 2, "test": 3, "all": None}

#: One line of imageclasslist.txt.
ExDarkEntry = namedtuple("ExDarkEntry", ["name", "class_label", "lighting", "in_out", "split"])

# Names listed in a warning; counts are always given in full.
_MAX_NAMES_LOGGED = 10


def read_imageclasslist(path):
    """Parse ExDark's ``imageclasslist.txt``.

    Args:
        path (str): the file; its first line may be the header ``Name | Class | ...``.

    Returns:
        list[ExDarkEntry]: one per image, in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not ``<name> <class 1-12> <lighting> <in/out> <split 1-3>``,
            or the file lists no image.
    """
    require_file(path, "ExDark split file")
    entries = []
    with open(path, "r") as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens or (lineno == 1 and tokens[0].lower() == "name"):
                continue
            try:
                if len(tokens) != 5:
                    raise ValueError(f"{len(tokens)} columns")
                entry = ExDarkEntry(tokens[0], *(int(t) for t in tokens[1:]))
                if not 1 <= entry.class_label <= len(EXDARK_CLASSES):
                    raise ValueError(f"class {entry.class_label}")
                if entry.split not in (1, 2, 3):
                    raise ValueError(f"split {entry.split}")
            except ValueError as e:
                raise ValueError(
                    f"{path}:{lineno}: cannot parse {line.strip()!r} ({e}); expected "
                    "'<image name> <class 1-12> <lighting 1-10> <in/out 1-2> <split 1-3>'."
                ) from None
            entries.append(entry)
    if not entries:
        raise ValueError(f"ExDark split file {path} lists no images (empty dataset).")
    return entries


def read_bbgt(path):
    """Parse one bbGt annotation file.

    Args:
        path (str): ``ExDark_Annno/<Class>/<image>.txt``.

    Returns:
        list[tuple[str, float, float, float, float, int]]: (class name, left, top, width,
        height, line number) per box.

    Raises:
        ValueError: a box line is not ``<ClassName> l t w h ...``.
    """
    boxes = []
    with open(path, "r", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split()
            # The header ("% bbGt version=3") and any other '%' line are comments.
            if not tokens or tokens[0].startswith("%"):
                continue
            try:
                if len(tokens) < 5:
                    raise ValueError("too few columns")
                l, t, w, h = (float(v) for v in tokens[1:5])
            except ValueError as e:
                raise ValueError(
                    f"{path}:{lineno}: cannot parse {line.strip()!r} ({e}); expected "
                    "'<ClassName> left top width height 0 0 0 0 0 0 0'."
                ) from None
            boxes.append((tokens[0], l, t, w, h, lineno))
    return boxes


def _exif_box(box, orientation, width, height):
    """Move an XYWH box from the stored frame (width x height) into the EXIF-rotated frame."""
    l, t, w, h = box
    corners = [(l, t), (l + w, t + h)]
    W, H = width, height
    transform = {
        2: lambda x, y: (W - x, y),
        3: lambda x, y: (W - x, H - y),
        4: lambda x, y: (x, H - y),
        5: lambda x, y: (y, x),
        6: lambda x, y: (H - y, x),
        7: lambda x, y: (H - y, W - x),
        8: lambda x, y: (y, W - x),
    }[orientation]
    (x0, y0), (x1, y1) = (transform(x, y) for x, y in corners)
    return [min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0)]


def _image_size(path):
    """(stored width, stored height, EXIF orientation) of an image, reading its header only."""
    with Image.open(path) as im:
        width, height = im.size
        try:
            orientation = int(im.getexif().get(0x0112, 1))
        except Exception:  # a broken EXIF block is not worth failing over; treat as upright
            orientation = 1
    return width, height, orientation if orientation in range(1, 9) else 1


def _log_some(message, names):
    if names:
        shown = ", ".join(names[:_MAX_NAMES_LOGGED]) + (" ..." if len(names) > _MAX_NAMES_LOGGED else "")
        logger.warning(f"ExDark: {message} ({len(names)}): {shown}")


def load_exdark(root, split):
    """Load an ExDark split as detectron2 dicts with boxes in COCO's label space.

    Args:
        root (str): the datasets root (holds ``ExDark/``).
        split (str): ``"train"``, ``"val"``, ``"test"`` or ``"all"``.

    Returns:
        list[dict]: records with ``file_name``, ``height``, ``width`` (as detectron2 reads
        the image, EXIF applied), ``image_id`` (the image's 1-based index among the entries
        of ``imageclasslist.txt``, header and blank lines not counted, so ids agree across
        splits) and ``annotations`` (XYXY_ABS
        boxes, COCO contiguous ``category_id``, ``iscrowd`` 0). Boxes whose class is not
        one of ExDark's 12 (case-insensitive) are skipped, counted and logged.

    Raises:
        FileNotFoundError: a folder or the split file is missing, or a class folder of
            images or annotations that the split needs is missing (an incomplete unzip).
        ValueError: unknown split, a file cannot be parsed, or no image of the split could
            be loaded.
    """
    if split not in SPLITS:
        raise ValueError(f"ExDark split {split!r} is unknown; expected one of {tuple(SPLITS)}.")
    base = os.path.join(root, "ExDark")
    image_dir = os.path.join(base, "ExDark")
    anno_dir = os.path.join(base, "ExDark_Annno")
    require_dir(image_dir, "ExDark image folder")
    require_dir(anno_dir, "ExDark annotation folder")
    entries = read_imageclasslist(os.path.join(base, "imageclasslist.txt"))

    listings = {}

    def find(folder, name):
        # The split file and the files on disk disagree on the case of some extensions
        # (".JPG" vs ".jpg"), so names are matched case-insensitively within the folder.
        if folder not in listings:
            files = os.listdir(folder) if os.path.isdir(folder) else []
            listings[folder] = {f.lower(): f for f in files}
        actual = listings[folder].get(name.lower())
        return os.path.join(folder, actual) if actual else None

    wanted = SPLITS[split]
    # A whole class folder missing means an incomplete unzip, not a stray file: an error,
    # rather than a split silently loaded without one of its classes.
    per_class = {}
    for e in entries:
        if wanted is None or e.split == wanted:
            per_class[e.class_label] = per_class.get(e.class_label, 0) + 1
    for folder_root, what in ((image_dir, "image"), (anno_dir, "annotation")):
        for label, count in sorted(per_class.items()):
            cls = EXDARK_CLASSES[label - 1]
            require_dir(
                os.path.join(folder_root, cls),
                f"ExDark {what} folder of class {cls} ({count} images of split {split!r} listed)",
            )

    missing, unreadable, rotated, degenerate, clipped, unknown = [], [], [], [], [], []
    dataset_dicts = []
    exdark_names = {c.lower() for c in EXDARK_CLASSES}
    for image_id, entry in enumerate(entries, 1):
        if wanted is not None and entry.split != wanted:
            continue
        class_folder = EXDARK_CLASSES[entry.class_label - 1]
        image_path = find(os.path.join(image_dir, class_folder), entry.name)
        anno_path = find(os.path.join(anno_dir, class_folder), entry.name + ".txt")
        if image_path is None:
            missing.append(os.path.join(image_dir, class_folder, entry.name))
            continue
        if anno_path is None:
            missing.append(os.path.join(anno_dir, class_folder, entry.name + ".txt"))
            continue
        try:
            width, height, orientation = _image_size(image_path)
        except (OSError, UnidentifiedImageError) as e:
            unreadable.append(f"{image_path} ({e})")
            continue
        out_w, out_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if orientation != 1:
            rotated.append(image_path)

        annotations = []
        for cls_name, l, t, w, h, lineno in read_bbgt(anno_path):
            # Checked against ExDark's own 12 names, not COCO's 80: a COCO name such as
            # "Horse" is not an ExDark label and would otherwise load silently.
            if cls_name.lower() not in exdark_names:
                unknown.append(f"{anno_path}:{lineno} ({cls_name!r})")
                continue
            category = coco_contiguous_id(cls_name, EXDARK_TO_COCO)
            box = [l, t, w, h]
            if orientation != 1:
                box = _exif_box(box, orientation, width, height)
            x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
            x1, y1 = min(box[0] + box[2], out_w), min(box[1] + box[3], out_h)
            if x1 <= x0 or y1 <= y0:
                degenerate.append(f"{anno_path}:{lineno}")
                continue
            if (x0, y0, x1, y1) != (box[0], box[1], box[0] + box[2], box[1] + box[3]):
                clipped.append(f"{anno_path}:{lineno}")
            annotations.append(
                {"bbox": [x0, y0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS,
                 "category_id": category, "iscrowd": 0}
            )  # fmt: skip
        dataset_dicts.append(
            {"file_name": image_path, "height": out_h, "width": out_w,
             "image_id": image_id, "annotations": annotations}
        )  # fmt: skip

    _log_some("images or annotation files listed in imageclasslist.txt but missing, skipped", missing)
    _log_some("unreadable images, skipped", unreadable)
    _log_some(f"boxes whose class is not one of ExDark's 12 {list(EXDARK_CLASSES)}, skipped", unknown)
    _log_some("boxes with zero area (after clipping to the image), skipped", degenerate)
    _log_some("boxes reaching outside the image, clipped to it", clipped)
    _log_some("images with an EXIF orientation; their boxes were rotated with the image", rotated)
    if not dataset_dicts:
        raise ValueError(
            f"No image of ExDark split {split!r} could be loaded from {base} "
            f"({len(missing)} missing, {len(unreadable)} unreadable)."
        )
    logger.info(f"Loaded {len(dataset_dicts)} ExDark images of split {split!r} from {base}")
    return dataset_dicts


def register_exdark(name, root, split):
    """Register one ExDark split in COCO's label space (lazily: nothing is read now).

    Args:
        name (str): dataset name to register.
        root (str): the datasets root (holds ``ExDark/``).
        split (str): ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    """
    if split not in SPLITS:
        raise ValueError(f"ExDark split {split!r} is unknown; expected one of {tuple(SPLITS)}.")
    DatasetCatalog.register(name, lambda: load_exdark(root, split))
    # No ``json_file``: COCOEvaluator converts the dicts to COCO JSON in its output folder.
    # ``evaluation_tasks``: boxes only; pass it as COCOEvaluator(tasks=...) so that a Mask R-CNN's
    # masks are not scored against ground truth that has none (pycocotools would fail).
    MetadataCatalog.get(name).set(
        image_root=os.path.join(root, "ExDark", "ExDark"),
        evaluator_type="coco",
        evaluation_tasks=("bbox",),
        low_light="real",
        **coco_metadata(),
    )


def register_all_exdark(root):
    """Register ``exdark_{train,val,test,all}``.

    Args:
        root (str): the datasets root (holds ``ExDark/``).
    """
    for split in SPLITS:
        register_exdark(f"exdark_{split}", root, split)
