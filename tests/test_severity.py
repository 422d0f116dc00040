"""Severity levels: darker level, darker images; same level, same bytes; bad levels rejected."""

import numpy as np
import pytest
from detectron2.config import get_cfg

from wnlb_d2.config import add_wnlb_config
from wnlb_d2.data.synthesis import build_pipeline_from_config, eval_rng
from wnlb_d2.experiment.severity import DEFAULT_SEVERITIES, severity_config, severity_levels


def _cfg(pipeline):
    cfg = get_cfg()
    add_wnlb_config(cfg)
    cfg.INPUT.LOW_LIGHT.PIPELINE = pipeline
    return cfg


def _scene():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([(x * 4) % 256, (y * 4) % 256, ((x + y) * 2) % 256], axis=-1).astype(np.float64)
    return np.clip(img * 0.8 + rng.uniform(0, 50, img.shape), 0, 255).astype(np.uint8)


def _degrade(cfg, values, key="img_7"):
    pipeline = build_pipeline_from_config(severity_config(cfg, values))
    out, params = pipeline(_scene(), eval_rng(0, key))
    return out, params


@pytest.mark.parametrize("pipeline", ["lv2021", "unprocess"])
def test_darker_level_darker_images_and_same_bytes(pipeline):
    cfg = _cfg(pipeline)
    levels = severity_levels(cfg)
    assert [n for n, _ in levels] == [f"t={t:.2f}" for t in DEFAULT_SEVERITIES]
    clean = _scene().astype(np.float64)
    correlations, means = [], []
    for name, values in levels:
        a, _ = _degrade(cfg, values)
        b, _ = _degrade(cfg, values)
        assert a.dtype == np.uint8 and np.array_equal(a, b), name
        correlations.append(float(np.corrcoef(a.ravel(), clean.ravel())[0, 1]))
        means.append(float(a.mean()))
    # Harsher level, less of the scene left: the correlation with the well-lit image falls at
    # every step. The mean alone is not monotone at the harshest levels (noise clipped at 0
    # brightens the darkest pixels), but every level is darker than the original.
    assert all(c1 > c2 for c1, c2 in zip(correlations, correlations[1:])), correlations
    assert max(means) < clean.mean() and means[2] < 0.6 * means[0], means


def test_lv2021_levels_span_the_training_range():
    cfg = _cfg("lv2021")
    levels = dict(severity_levels(cfg, [0.0, 1.0]))
    mild, harsh = levels["t=0.00"], levels["t=1.00"]
    assert mild["INPUT.LOW_LIGHT.LV2021.GAMMA"] == (1.5, 1.5)
    assert harsh["INPUT.LOW_LIGHT.LV2021.GAMMA"] == (5.0, 5.0)
    assert mild["INPUT.LOW_LIGHT.LV2021.BETA"] == (1.0, 1.0)
    assert harsh["INPUT.LOW_LIGHT.LV2021.BETA"] == (0.5, 0.5)
    assert harsh["INPUT.LOW_LIGHT.LV2021.SIGMA_S"] == (0.16, 0.16)
    # A fixed level: every darkening parameter drawn is that value.
    _, params = _degrade(cfg, harsh)
    assert params["gamma"] == 5.0 and params["beta"] == 0.5 and params["sigma_c"] == pytest.approx(0.06)


def test_bad_severities_are_rejected():
    cfg = _cfg("lv2021")
    with pytest.raises(ValueError, match="at least one"):
        severity_levels(cfg, [])
    with pytest.raises(ValueError, match="strictly increasing"):
        severity_levels(cfg, [0.5, 0.5])
    with pytest.raises(ValueError, match="strictly increasing"):
        severity_levels(cfg, [-0.1, 0.5])
    # t = 3 takes beta to 1 - 3 * 0.5 < 0: outside the pipeline's limits, named.
    with pytest.raises(ValueError, match=r"t=3.00 is outside .*INPUT.LOW_LIGHT.LV2021.ALPHA|BETA"):
        severity_levels(cfg, [0.0, 3.0])
