"""Parameter checks shared by everything that is built from a config section.

Low-light pipelines and enhancers validate their constructor arguments with these functions
and raise :class:`ParameterError`, which :func:`wnlb_d2.utils.registry.build_from_section`
turns into an error naming the full config key (``INPUT.LOW_LIGHT.LV2021.GAMMA: ...``).
"""

import math
import numbers

__all__ = ["ParameterError", "is_number", "check_number", "check_range", "check_choice",
           "CHANNEL_ORDERS", "check_channel_order"]

#: Channel orders of colour images (detectron2's ``INPUT.FORMAT`` values for colour).
CHANNEL_ORDERS = ("BGR", "RGB")


class ParameterError(ValueError):
    """A bad constructor argument; ``key`` is the argument's name, ``detail`` what is wrong."""

    def __init__(self, key, detail):
        self.key = key
        self.detail = detail
        super().__init__(f"{key}: {detail}")


def is_number(x):
    """A real number that is not a bool (True/False as a range end is always a typo)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_number(key, value, lower=-math.inf, upper=math.inf):
    """Validate one finite number inside ``[lower, upper]``; returns it as a float."""
    if not is_number(value) or not math.isfinite(float(value)):
        raise ParameterError(key, f"expected a finite number, got {value!r}")
    if not lower <= float(value) <= upper:
        raise ParameterError(key, f"expected a number in [{lower}, {upper}], got {value!r}")
    return float(value)


def check_range(key, value, lower=-math.inf, upper=math.inf, lower_open=False):
    """Validate a ``(low, high)`` range of a uniformly drawn parameter.

    Args:
        key (str): the parameter's name, used in the error message.
        value: a pair of numbers (tuple or list, as YAML gives it).
        lower, upper (float): physical limits the range must lie inside.
        lower_open (bool): whether ``lower`` itself is excluded (e.g. a gamma must be > 0).

    Returns:
        tuple[float, float]: ``(low, high)`` as floats.

    Raises:
        ParameterError: not a pair of finite numbers, ``low > high`` or outside the limits.
    """
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(is_number(v) for v in value):
        raise ParameterError(key, f"expected a pair of numbers (low, high), got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ParameterError(key, f"expected finite numbers, got {value!r}")
    if low > high:
        raise ParameterError(key, f"expected low <= high, got {value!r}")
    bad_low = low <= lower if lower_open else low < lower
    if bad_low or high > upper:
        bracket = "(" if lower_open else "["
        raise ParameterError(key, f"expected a range inside {bracket}{lower}, {upper}], got {value!r}")
    return low, high


def check_choice(key, value, choices):
    """Validate that ``value`` is one of ``choices``; returns it."""
    if value not in choices:
        raise ParameterError(key, f"expected one of {list(choices)}, got {value!r}")
    return value


def check_channel_order(who, value):
    """Raise a ``ValueError`` naming ``who`` unless ``value`` is "BGR" or "RGB"; returns it."""
    if value not in CHANNEL_ORDERS:
        raise ValueError(f"{who}: input_format must be one of {CHANNEL_ORDERS}, got {value!r}")
    return value
