"""What the learned enhancers' training commands share (``tools/train_zero_dce.py``,
``train_retinexformer.py``, ``train_agllnet.py``, ``train_enlightengan.py``).

Their common options, with each command's own defaults and help texts::

    (--images PATH [PATH ...] | --dataset NAME)   the training images
    --low-light PIPELINE                          degrade them first (required for paired methods)
    --output FILE  --init FILE                    the weights to write / to start from
    --size  --crop  --max-images                  training images and crops
    --iters  --batch-size  --lr  --seed           the optimisation

and the code around them: the argument checks, the image files of ``--images`` or ``--dataset``,
and the one-line error with exit status 1. Each command adds its method's options and runs its
method's training.

Example (a command's ``build_parser`` and ``main``)::

    p = argparse.ArgumentParser(...)
    add_common_arguments(p, {"iters": 300, "batch_size": 8, "lr": 1e-3},
                         help={"output": "the .pth to write", "init": "start from these weights"})
    ...
    args = parse_training_args(build_parser(), argv)
    fail = error_reporter("train_x.py")
    problem = check_common_arguments(args)
    if problem:
        return fail(problem)
    try:
        files = training_files(args)
    except ValueError as e:
        return fail(str(e))
"""

import logging
import sys

from ..data.synthesis import PIPELINES

__all__ = ["add_common_arguments", "parse_training_args", "error_reporter", "check_common_arguments",
           "check_size_and_crop", "image_files", "training_files"]

logger = logging.getLogger(__name__)

_PIPELINE_LIST = ", ".join(PIPELINES)

#: The help of each common option when a command gives none of its own (``%(default)s`` is
#: argparse's: the option's default).
GENERIC_HELP = {
    "images": "image files, folders or glob patterns",
    "dataset": "a registered detectron2 dataset (its images only)",
    "low_light": f"degrade the images first ({_PIPELINE_LIST}; default ranges), for normal-light data",
    "low_light_required": f"the degradation that makes the dark image of each pair ({_PIPELINE_LIST}; "
                          "default ranges); required",
    "output": "the weights file to write",
    "init": "start from these weights",
    "size": "side of the square training images (default %(default)s)",
    "crop": "side of the random crop per image and step (default %(default)s; 0: whole images)",
    "max_images": "use at most this many images (0: all)",
    "iters": "optimisation steps (default %(default)s)",
    "batch_size": "images per step (default %(default)s)",
    "lr": "Adam learning rate (default %(default)s)",
    "seed": "seed of initialisation, batches and degradation",
}


def add_common_arguments(parser, defaults, *, help=None, low_light_required=False):
    """Add the options every enhancer training command has.

    Args:
        parser (argparse.ArgumentParser): the command's parser.
        defaults (dict): the command's defaults of ``iters``, ``batch_size`` and ``lr`` (required)
            and of ``size`` (128) and ``crop`` (64).
        help (dict or None): option (its ``dest``: ``"images"``, ``"batch_size"``, ...) -> the
            command's help text, replacing :data:`GENERIC_HELP`'s.
        low_light_required (bool): ``--low-light`` is required (a paired method: the pipeline
            makes the dark image of each pair); else it is optional and degrades the images.

    Returns:
        argparse.ArgumentParser: ``parser``.
    """
    text = dict(GENERIC_HELP)
    if low_light_required:
        text["low_light"] = text["low_light_required"]
    text.update(help or {})
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", metavar="PATH", help=text["images"])
    src.add_argument("--dataset", metavar="NAME", help=text["dataset"])
    parser.add_argument("--low-light", required=low_light_required, choices=PIPELINES, metavar="PIPELINE",
                        help=text["low_light"])
    parser.add_argument("--output", required=True, help=text["output"])
    parser.add_argument("--init", help=text["init"])
    parser.add_argument("--size", type=int, default=defaults.get("size", 128), help=text["size"])
    parser.add_argument("--crop", type=int, default=defaults.get("crop", 64), help=text["crop"])
    parser.add_argument("--max-images", type=int, default=0, help=text["max_images"])
    parser.add_argument("--iters", type=int, default=defaults["iters"], help=text["iters"])
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"], help=text["batch_size"])
    parser.add_argument("--lr", type=float, default=defaults["lr"], help=text["lr"])
    parser.add_argument("--seed", type=int, default=0, help=text["seed"])
    return parser


def parse_training_args(parser, argv=None):
    """Parse the command line (``--help`` and usage errors exit here), then set up logging.

    Returns:
        argparse.Namespace: the arguments.
    """
    args = parser.parse_args(argv)
    from detectron2.utils.logger import setup_logger

    setup_logger(name="wnlb_d2")
    return args


def error_reporter(prog):
    """``fail(msg)``: print ``<prog>: error: <msg>`` to stderr (argparse's form) and return 1."""
    def fail(msg):
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 1

    return fail


def check_common_arguments(args):
    """The message for bad ``--iters``, ``--batch-size``, ``--max-images`` or ``--lr``, or None."""
    if args.iters < 1 or args.batch_size < 1 or args.max_images < 0 or not args.lr > 0:
        return "--iters and --batch-size must be >= 1, --max-images >= 0, --lr > 0"
    return None


def check_size_and_crop(size, crop, multiple, min_size):
    """The message for a ``--size``/``--crop`` the network cannot take, or None.

    Checked before any image is read (the training functions check the same on the tensors).

    Args:
        size (int): side of the square training images.
        crop (int): side of the random crops, 0 for whole images.
        multiple (int): the network's input multiple (crops, or whole images, must be multiples).
        min_size (int): the smallest input side the network takes.
    """
    if size < min_size:
        return f"--size must be >= {min_size} for this network, got {size}"
    if crop and not (crop % multiple == 0 and min_size <= crop <= size):
        return (f"--crop must be 0 or a multiple of {multiple} (the network's input multiple) in "
                f"[{min_size}, --size {size}], got {crop}")
    if not crop and size % multiple:
        return f"--crop 0 trains on whole images, so --size must be a multiple of {multiple}, got {size}"
    return None


def image_files(images, dataset, what="", max_images=0):
    """The image files of ``--images``-style paths or of a registered dataset.

    Args:
        images (list[str] or None): files, folders or glob patterns; paths that give no image are
            logged as warnings.
        dataset (str or None): a registered detectron2 dataset (used when ``images`` is empty).
        what (str): the set's name in messages (e.g. ``"normal-light"``), or "".
        max_images (int): keep the first this many files (0: all).

    Returns:
        list[str]: at least one file.

    Raises:
        ValueError: the dataset is not registered, or no image file was found (one line).
    """
    from ..engine.predictor import expand_inputs

    name = f"{what} " if what else ""
    if images:
        files, problems = expand_inputs(images)
        for item, reason in problems:
            logger.warning(f"{item}: {reason}")
    else:
        from detectron2.data import DatasetCatalog

        try:
            files = [d["file_name"] for d in DatasetCatalog.get(dataset)]
        except KeyError as e:
            raise ValueError(f"{name}dataset {dataset!r} is not registered: {e}") from e
    if max_images:
        files = files[:max_images]
    if not files:
        raise ValueError(f"no {name}training images found")
    return files


def training_files(args):
    """:func:`image_files` of ``args.images`` / ``args.dataset``, at most ``args.max_images``."""
    return image_files(args.images, args.dataset, max_images=args.max_images)
