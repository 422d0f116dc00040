"""Fixed darkness levels of a synthesis pipeline, for AP-against-severity curves.

A level fixes every parameter that makes an image darker or noisier to one value (a range
``(v, v)``), chosen by a position ``t`` along the configured training range: ``t = 0`` is the
mildest end of every range, ``t = 1`` the harshest, ``t > 1`` goes beyond what the models were
trained on. The other parameters (camera response, colour matrix, gains) stay random but are
drawn from the evaluation generator of each image (``INPUT.LOW_LIGHT.SEED`` and the image's
key), so a level is the same bytes in every run.

* ``lv2021``: alpha and beta fall and gamma, sigma_s, sigma_c rise linearly with ``t`` across
  their ``INPUT.LOW_LIGHT.LV2021`` ranges.
* ``unprocess``: the exposure factor d falls geometrically from 0.3 (t = 0) to 0.02 (t = 1)
  (the bulk of the training distribution, a truncated Normal(0.1, 0.08)), the shot noise rises
  geometrically across its configured range, the read noise sits on its line (std 0).
"""

import math

from ..config import set_config_value

__all__ = ["DEFAULT_SEVERITIES", "severity_levels", "severity_config", "level_name"]

#: Positions along the training range: mild ... harshest trained ... beyond training.
DEFAULT_SEVERITIES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)

# (key, direction): +1 means larger is darker/noisier, -1 smaller is darker.
_LV2021_KEYS = (("ALPHA", -1), ("BETA", -1), ("GAMMA", +1), ("SIGMA_S", +1), ("SIGMA_C", +1))
_UNPROCESS_DARKNESS = (0.3, 0.02)


def level_name(t):
    """Name of the level at position ``t`` (``"t=0.25"``); names sort in increasing darkness."""
    return f"t={t:.2f}"


def _interp(bounds, t, direction):
    low, high = float(bounds[0]), float(bounds[1])
    return low + t * (high - low) if direction > 0 else high - t * (high - low)


def _geometric(a, b, t):
    return math.exp(math.log(a) + t * (math.log(b) - math.log(a)))


def severity_levels(cfg, severities=DEFAULT_SEVERITIES):
    """The config overrides of each severity level of ``cfg.INPUT.LOW_LIGHT.PIPELINE``.

    Args:
        cfg (CfgNode): a config with ``INPUT.LOW_LIGHT`` (its ranges define the levels).
        severities (Sequence[float]): positions ``t >= 0``, strictly increasing.

    Returns:
        list[tuple[str, dict]]: ``(level name, {full config key: value})`` in increasing
        darkness; the values are what :func:`severity_config` writes.

    Raises:
        ValueError: empty, unsorted or negative severities, an unknown pipeline, or a level whose
            values fall outside the pipeline's valid limits (the message names the config key).
    """
    ts = [float(t) for t in severities]
    if not ts:
        raise ValueError("severity levels: give at least one severity position t >= 0")
    if any(not (t >= 0 and math.isfinite(t)) for t in ts) or any(b <= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"severity levels: positions must be finite, >= 0 and strictly increasing, got {ts}")
    node = cfg.INPUT.LOW_LIGHT
    pipeline = node.PIPELINE
    levels = []
    for t in ts:
        if pipeline == "lv2021":
            prefix = "INPUT.LOW_LIGHT.LV2021"
            values = {}
            for key, direction in _LV2021_KEYS:
                v = _interp(node.LV2021[key], t, direction)
                values[f"{prefix}.{key}"] = (v, v)
        elif pipeline == "unprocess":
            prefix = "INPUT.LOW_LIGHT.UNPROCESS"
            d = _geometric(*_UNPROCESS_DARKNESS, t)
            s = _geometric(*node.UNPROCESS.SHOT_NOISE, t)
            values = {f"{prefix}.DARKNESS_MEAN": d, f"{prefix}.DARKNESS_STD": 0.0,
                      f"{prefix}.SHOT_NOISE": (s, s), f"{prefix}.READ_NOISE_STD": 0.0}
        else:
            raise ValueError(f"severity levels: unknown INPUT.LOW_LIGHT.PIPELINE {pipeline!r}")
        name = level_name(t)
        _check_level(cfg, name, values)
        levels.append((name, values))
    return levels


def severity_config(cfg, values):
    """A copy of ``cfg`` that degrades every test image at one fixed level.

    Args:
        cfg (CfgNode): the row's config.
        values (dict): one level's overrides from :func:`severity_levels`.

    Returns:
        CfgNode: frozen, with ``INPUT.LOW_LIGHT.ENABLED`` and ``TEST`` on.
    """
    c = cfg.clone()
    c.defrost()
    c.INPUT.LOW_LIGHT.ENABLED = True
    c.INPUT.LOW_LIGHT.TEST = True
    for key, value in values.items():
        set_config_value(c, key, value)
    c.freeze()
    return c


def _check_level(cfg, name, values):
    from ..data.synthesis import build_pipeline_from_config

    try:
        build_pipeline_from_config(severity_config(cfg, values))
    except ValueError as e:
        raise ValueError(f"severity level {name} is outside the pipeline's valid range: {e}") from e
