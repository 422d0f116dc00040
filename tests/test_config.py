"""Configs: one key turns a stock config into a wNLB config; shipped YAMLs; loader errors."""

import glob
import os

import pytest
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import wnlb_d2
from wnlb_d2.layers import NonLocalBlock2d

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOCK = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"


def test_one_key_on_a_plain_stock_config():
    # detectron2's own get_cfg / merge_from_file, no add_wnlb_config: still one key is enough.
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(STOCK))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_wnlb_fpn_backbone"
    model = build_model(cfg)
    blocks = model.backbone.bottom_up.wnlb
    assert sorted(blocks) == ["res3", "res4", "res5"]
    assert all(isinstance(b, NonLocalBlock2d) and b.fusion == "weighted" for b in blocks.values())


def test_shipped_wnlb_config_is_the_stock_config_plus_one_key():
    ours = get_cfg()
    wnlb_d2.add_wnlb_config(ours)
    wnlb_d2.merge_from_file(ours, os.path.join(REPO, "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_wnlb.yaml"))
    stock = get_cfg()
    wnlb_d2.add_wnlb_config(stock)
    stock.merge_from_file(model_zoo.get_config_file(STOCK))
    assert ours != stock
    stock.MODEL.BACKBONE.NAME = "build_resnet_wnlb_fpn_backbone"
    assert ours == stock


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)),
                         ids=os.path.basename)
def test_every_shipped_config_builds(path):
    cfg = get_cfg()
    wnlb_d2.add_wnlb_config(cfg)
    wnlb_d2.merge_from_file(cfg, path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18  # same wiring, faster build
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    if "C4" in path:
        cfg.MODEL.RESNETS.RES5_DILATION = 1
    model = build_model(cfg)
    bottom_up = getattr(model.backbone, "bottom_up", model.backbone)
    if "wnlb" in cfg.MODEL.BACKBONE.NAME:
        assert list(bottom_up.wnlb) == list(cfg.MODEL.WNLB.STAGES)
    else:  # e.g. the demo base: stock backbone, the runner switches it per row
        assert not hasattr(bottom_up, "wnlb")


def test_model_zoo_prefix_resolves_stock_configs():
    cfg = get_cfg()
    wnlb_d2.merge_from_file(cfg, wnlb_d2.MODEL_ZOO_PREFIX + "COCO-Detection/retinanet_R_50_FPN_3x.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    assert len(cfg.MODEL.ANCHOR_GENERATOR.SIZES[0]) == 3  # computed by a python tag in the stock file


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        wnlb_d2.merge_from_file(get_cfg(), str(tmp_path / "nope.yaml"))


def test_missing_base(tmp_path):
    (tmp_path / "a.yaml").write_text('_BASE_: "missing_base.yaml"\n')
    with pytest.raises(FileNotFoundError, match="missing_base.yaml"):
        wnlb_d2.merge_from_file(get_cfg(), str(tmp_path / "a.yaml"))


def test_unknown_model_zoo_name():
    with pytest.raises(FileNotFoundError, match="model_zoo://COCO-Detection/nope.yaml"):
        wnlb_d2.merge_from_file(get_cfg(), "model_zoo://COCO-Detection/nope.yaml")


def test_unknown_key(tmp_path):
    (tmp_path / "a.yaml").write_text("MODEL:\n  WNLB:\n    MODES: dot\n")
    cfg = get_cfg()
    wnlb_d2.add_wnlb_config(cfg)
    with pytest.raises(KeyError, match="MODEL.WNLB.MODES"):
        wnlb_d2.merge_from_file(cfg, str(tmp_path / "a.yaml"))


def test_not_a_mapping(tmp_path):
    (tmp_path / "a.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        wnlb_d2.merge_from_file(get_cfg(), str(tmp_path / "a.yaml"))
