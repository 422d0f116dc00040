"""Users register their own low-light pipeline or enhancer with a decorator and select it by name."""

import numpy as np
import pytest
from detectron2.config import CfgNode as CN

from helpers import make_cfg
from wnlb_d2.data import LowLightDatasetMapper
from wnlb_d2.data.synthesis import (LOW_LIGHT_PIPELINE_REGISTRY, LowLightPipeline, build_pipeline_from_config,
                                    pipeline_names)
from wnlb_d2.enhance import ENHANCER_REGISTRY, Enhancer, build_enhancer_from_config, enhancer_names
from wnlb_d2.utils.params import ParameterError, check_number


class HalfLight(LowLightPipeline):
    """Multiplies the image by a fixed factor (a user's pipeline, for the test)."""

    name = "test_half_light"

    def __init__(self, *, factor=0.5):
        self.factor = check_number("factor", factor, 0.0, 1.0)

    def config(self):
        return {"factor": self.factor}

    def _degrade(self, rgb, rng):
        return rgb * np.float32(self.factor), {"factor": self.factor}


class Invert(Enhancer):
    """Inverts the image (a user's enhancer, for the test)."""

    name = "test_invert"

    def __init__(self, *, offset=0):
        if offset not in (0, 1):
            raise ParameterError("offset", f"expected 0 or 1, got {offset!r}")
        self.offset = offset

    def _enhance(self, bgr):
        return (255 - bgr).astype(np.uint8)


if "HalfLight" not in LOW_LIGHT_PIPELINE_REGISTRY:
    LOW_LIGHT_PIPELINE_REGISTRY.register()(HalfLight)
if "Invert" not in ENHANCER_REGISTRY:
    ENHANCER_REGISTRY.register()(Invert)


def _dataset(tmp_path):
    from PIL import Image

    img = np.full((32, 40, 3), 200, np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    return {"file_name": str(path), "image_id": 1, "height": 32, "width": 40, "annotations": []}


def test_registered_pipeline_selected_by_name_through_the_mapper(tmp_path):
    assert "test_half_light" in pipeline_names()
    cfg = make_cfg()
    cfg.INPUT.LOW_LIGHT.ENABLED = True
    cfg.INPUT.LOW_LIGHT.PIPELINE = "test_half_light"
    cfg.INPUT.LOW_LIGHT.TEST_HALF_LIGHT = CN({"FACTOR": 0.25})
    cfg.INPUT.MIN_SIZE_TEST = 32
    cfg.INPUT.MAX_SIZE_TEST = 40
    out = LowLightDatasetMapper(cfg, is_train=False)(_dataset(tmp_path))
    assert out["low_light_params"]["factor"] == 0.25
    assert out["image"].float().mean().item() == pytest.approx(50.0, abs=0.5)  # 200 * 0.25


def test_registered_pipeline_defaults_and_errors_name_the_key():
    cfg = make_cfg()
    cfg.INPUT.LOW_LIGHT.PIPELINE = "test_half_light"
    assert build_pipeline_from_config(cfg).factor == 0.5  # no section: the constructor's defaults
    cfg.INPUT.LOW_LIGHT.TEST_HALF_LIGHT = CN({"FACTOR": 3.0})
    with pytest.raises(ValueError, match=r"INPUT.LOW_LIGHT.TEST_HALF_LIGHT.FACTOR: expected a number in \[0.0, 1.0\]"):
        build_pipeline_from_config(cfg)
    cfg.INPUT.LOW_LIGHT.TEST_HALF_LIGHT = CN({"FACTR": 0.3})
    with pytest.raises(ValueError, match=r"INPUT.LOW_LIGHT.TEST_HALF_LIGHT: unknown key\(s\) \['FACTR'\]"):
        build_pipeline_from_config(cfg)
    cfg.INPUT.LOW_LIGHT.PIPELINE = "nope"
    with pytest.raises(ValueError, match=r"INPUT.LOW_LIGHT.PIPELINE: unknown low-light pipeline 'nope'.*test_half_light"):
        build_pipeline_from_config(cfg)


def test_registered_enhancer_selected_by_name_and_chained():
    assert "test_invert" in enhancer_names()
    cfg = make_cfg()
    cfg.INPUT.ENHANCER.NAME = "gamma+test_invert"
    enhancer = build_enhancer_from_config(cfg)
    img = np.full((8, 8, 3), 10, np.uint8)
    gamma_only = build_enhancer_from_config(_with_name(cfg, "gamma"))(img)
    assert np.array_equal(enhancer(img), 255 - gamma_only)
    cfg.INPUT.ENHANCER.TEST_INVERT = CN({"OFFSET": 5})
    with pytest.raises(ValueError, match="INPUT.ENHANCER.TEST_INVERT.OFFSET: expected 0 or 1"):
        build_enhancer_from_config(cfg)


def _with_name(cfg, name):
    c = cfg.clone()
    c.INPUT.ENHANCER.NAME = name
    return c
