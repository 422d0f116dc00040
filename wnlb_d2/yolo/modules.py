"""The non-local block as a layer of an Ultralytics model YAML.

Ultralytics' ``parse_model`` looks a YAML row's module up by name in the globals of
``ultralytics.nn.tasks`` and calls it with the row's arguments, positionally and unscaled (it
only rescales the channels of modules it knows). :class:`YOLONonLocalBlock2d` therefore takes
the *actual* channel count (written into the YAML per model scale by
:func:`wnlb_d2.yolo.model_yaml.insert_nonlocal_blocks`) and a dict of block options, and
:func:`register_yolo_modules` puts it into those globals.
"""

import logging

from ..layers import NonLocalBlock2d

__all__ = ["YOLONonLocalBlock2d", "BLOCK_OPTIONS", "register_yolo_modules"]

logger = logging.getLogger(__name__)

#: Options of a block row (``[from, 1, YOLONonLocalBlock2d, [channels, {options}]]``); the
#: keyword arguments of :class:`wnlb_d2.layers.NonLocalBlock2d`.
BLOCK_OPTIONS = ("inter_channels", "mode", "fusion", "weight_init", "learnable_weight", "norm", "impl", "zero_init",
                 "sub_sample")


class YOLONonLocalBlock2d(NonLocalBlock2d):
    """:class:`wnlb_d2.layers.NonLocalBlock2d` with the call signature of a YOLO YAML row.

    The block itself is unchanged (identity at initialisation, weighted or residual fusion);
    only the arguments are arranged for ``parse_model``.

    Args:
        channels (int): channels C of the feature map it follows (after width scaling).
        options (dict or None): keyword arguments of ``NonLocalBlock2d`` (see
            :data:`BLOCK_OPTIONS`), e.g. ``{"fusion": "weighted", "mode": "embedded"}``.

    Shapes: input and output ``(B, C, H, W)``.

    Raises:
        ValueError: an unknown option (the message lists the allowed ones) or a bad value.
    """

    def __init__(self, channels, options=None):
        options = dict(options or {})
        if not isinstance(options, dict):
            raise ValueError(f"YOLONonLocalBlock2d: options must be a dict, got {options!r}")
        unknown = sorted(set(options) - set(BLOCK_OPTIONS))
        if unknown:
            raise ValueError(f"YOLONonLocalBlock2d: unknown option(s) {unknown}; expected some of {list(BLOCK_OPTIONS)}")
        super().__init__(channels, **options)

    def __setstate__(self, state):
        # Ultralytics checkpoints pickle whole modules, not state dicts: a checkpoint written
        # before NonLocalBlock2d gained an option lacks that attribute, and forward would fail
        # on it. Such attributes get the value of a default-constructed block (the behaviour
        # the option's default keeps).
        super().__setstate__(state)
        for key, value in _default_attributes().items():
            if key not in self.__dict__:
                setattr(self, key, value)


_DEFAULTS = {}


def _default_attributes():
    """The plain (non-tensor, non-module) attributes of a default ``NonLocalBlock2d``."""
    if not _DEFAULTS:
        fresh = NonLocalBlock2d(8)
        _DEFAULTS.update({k: v for k, v in fresh.__dict__.items()
                          if not k.startswith("_") and isinstance(v, (str, bool, int, float, type(None)))})
    return _DEFAULTS


def register_yolo_modules():
    """Make the YAML module names of this package resolvable by Ultralytics' ``parse_model``.

    Idempotent. Called by ``import wnlb_d2.yolo``.
    """
    from ultralytics.nn import tasks

    for cls in (YOLONonLocalBlock2d,):
        existing = getattr(tasks, cls.__name__, None)
        # A class of the same module (e.g. after importlib.reload) may be replaced; another may not.
        if existing is not None and getattr(existing, "__module__", None) != cls.__module__:
            raise RuntimeError(f"ultralytics.nn.tasks already defines {cls.__name__!r} ({existing!r})")
        setattr(tasks, cls.__name__, cls)
