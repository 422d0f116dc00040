"""Configs: one key turns a stock config into a wNLB config; shipped YAMLs; loader errors."""

import glob
import logging
import os
import re

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


# configs/yolo/ holds Ultralytics model YAMLs (tested by tests/test_yolo_model.py), not detectron2 configs.
DETECTRON2_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                            if os.sep + "yolo" + os.sep not in p)


@pytest.mark.parametrize("path", DETECTRON2_CONFIGS, ids=os.path.basename)
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


# --- issue 10: WEIGHT_INIT as a list, MODEL.WNLB checked with any backbone, YAML errors ------------

from wnlb_d2.engine import setup_cfg  # noqa: E402

DEMO = os.path.join(REPO, "configs", "demo", "Base-Demo-R18-FPN.yaml")
WNLB = ["MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone", "MODEL.DEVICE", "cpu"]


def _yaml(tmp_path, body, name="c.yaml"):
    path = tmp_path / name
    path.write_text(f'_BASE_: "{DEMO}"\n' + body)
    return str(path)


def test_weight_init_list_from_yaml_and_opts(tmp_path):
    out = ["OUTPUT_DIR", str(tmp_path / "out")]
    listed = _yaml(tmp_path, "MODEL:\n  WNLB:\n    WEIGHT_INIT: [0.1, 0.2, 0.3, 0.4]\n")
    cfg = setup_cfg(listed, out + WNLB)
    assert cfg.MODEL.WNLB.WEIGHT_INIT == [0.1, 0.2, 0.3, 0.4]
    ws = {s: b.fusion_weight.item() for s, b in build_model(cfg).backbone.bottom_up.wnlb.items()}
    assert ws == pytest.approx({"res2": 0.1, "res3": 0.2, "res4": 0.3, "res5": 0.4})
    # The command line overrides the file either way: a number over a list, a list over a number.
    assert setup_cfg(listed, out + WNLB + ["MODEL.WNLB.WEIGHT_INIT", "0.5"]).MODEL.WNLB.WEIGHT_INIT == 0.5
    cfg = setup_cfg(DEMO, out + WNLB + ["MODEL.WNLB.WEIGHT_INIT", "[0.4, 0.3, 0.2, 0.1]"])
    assert build_model(cfg).backbone.bottom_up.wnlb["res2"].fusion_weight.item() == pytest.approx(0.4)
    scalar = _yaml(tmp_path, "MODEL:\n  WNLB:\n    WEIGHT_INIT: 0.25\n", name="scalar.yaml")
    assert setup_cfg(scalar, out + WNLB).MODEL.WNLB.WEIGHT_INIT == 0.25
    # The list survives the config.yaml round trip that detectron2 writes for every run.
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(setup_cfg(listed, out + WNLB).dump())
    assert setup_cfg(str(dumped), out).MODEL.WNLB.WEIGHT_INIT == [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize("opts, message", [
    (["MODEL.WNLB.WEIGHT_INIT", "abc"], "MODEL.WNLB.WEIGHT_INIT = 'abc' (in the command-line overrides) is invalid"),
    (["MODEL.WNLB.WEIGHT_INIT", "[0.1, 0.2]"], "MODEL.WNLB.WEIGHT_INIT has 2 values [0.1, 0.2] but MODEL.WNLB.STAGES has 4"),
    (["MODEL.WNLB.WEIGHT_INIT", "[True]"], "expected a number or a list of numbers"),
])
def test_bad_weight_init(tmp_path, opts, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        setup_cfg(DEMO, ["OUTPUT_DIR", str(tmp_path)] + opts)


@pytest.mark.parametrize("opts, message", [
    (["MODEL.WNLB.STAGES", "['res6']"], "MODEL.WNLB.STAGES entry = 'res6' is invalid; expected one of ('res2'"),
    (["MODEL.WNLB.STAGES", "['res3', 'res3']"], "MODEL.WNLB.STAGES lists a stage twice"),
    (["MODEL.WNLB.MODE", "foo"], "MODEL.WNLB.MODE = 'foo' is invalid; expected one of ('embedded'"),
    (["MODEL.WNLB.ZERO_INIT", "conv"], "MODEL.WNLB.ZERO_INIT = 'conv' is invalid; expected one of ('norm', 'conv_and_norm')"),
    (["MODEL.WNLB.FUSION", "sum"], "MODEL.WNLB.FUSION = 'sum' is invalid"),
    (["MODEL.WNLB.NORM", "LN"], "MODEL.WNLB.NORM = 'LN' is invalid"),
    (["MODEL.WNLB.IMPL", "fast"], "MODEL.WNLB.IMPL = 'fast' is invalid"),
    (["MODEL.WNLB.INTER_CHANNELS_RATIO", "-0.5"], "MODEL.WNLB.INTER_CHANNELS_RATIO = -0.5 is invalid"),
])
@pytest.mark.parametrize("backbone", ["build_resnet_fpn_backbone", "build_resnet_wnlb_fpn_backbone"])
def test_wnlb_values_are_checked_whatever_the_backbone(tmp_path, opts, message, backbone):
    # The demo config names the stock backbone, which never reads MODEL.WNLB.
    with pytest.raises(ValueError, match=re.escape(message)):
        setup_cfg(DEMO, ["OUTPUT_DIR", str(tmp_path), "MODEL.BACKBONE.NAME", backbone] + opts)


def test_unused_wnlb_keys_are_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="wnlb_d2"):
        setup_cfg(DEMO, ["OUTPUT_DIR", str(tmp_path), "MODEL.WNLB.MODE", "dot"])
    lines = [r.getMessage() for r in caplog.records if "builds no non-local blocks" in r.getMessage()]
    assert len(lines) == 1 and "MODE" in lines[0] and "'build_resnet_wnlb_fpn_backbone'" in lines[0]


@pytest.mark.parametrize("text, message", [
    ("", "is empty; expected a mapping"),
    ("\n# only a comment\n", "is empty; expected a mapping"),
    ("MODEL:\n  WEIGHTS: [\n", "is not valid YAML: expected the node content, but found '<stream end>' at line 3"),
    ("MODEL:\n\tDEVICE: cpu\n", "is not valid YAML:"),
    ("MODEL: {DEVICE: cpu\n", "is not valid YAML:"),
])
def test_yaml_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        wnlb_d2.merge_from_file(get_cfg(), str(path))
    msg = str(info.value)
    assert msg.startswith(f"Config file {path} ") and message in msg and "\n" not in msg, msg


def test_set_config_value_keeps_the_type_and_names_missing_nodes():
    from detectron2.config import get_cfg

    from wnlb_d2.config import add_lowlight_config, set_config_value

    cfg = get_cfg()
    add_lowlight_config(cfg)
    set_config_value(cfg, "MODEL.WNLB.WEIGHT_INIT", [0.1, 0.2])
    set_config_value(cfg, "INPUT.LOW_LIGHT.ENABLED", True)
    assert cfg.MODEL.WNLB.WEIGHT_INIT == [0.1, 0.2] and cfg.INPUT.LOW_LIGHT.ENABLED is True
    with pytest.raises(KeyError):
        set_config_value(cfg, "MODEL.NO_SUCH_NODE.X", 1)


# --- issue 20: every MODEL.SOLOV2 value checked before anything is written -------------------------

SOLOV2_DEMO = os.path.join(REPO, "configs", "demo", "SOLOv2-Demo-R18-FPN.yaml")


@pytest.mark.parametrize("opts, message", [
    (["MODEL.SOLOV2.SIGMA", "-1.0"], "MODEL.SOLOV2.SIGMA = -1.0 is invalid; expected a number in (0, 1]"),
    (["MODEL.SOLOV2.DETECTIONS_PER_IMAGE", "-1"], "MODEL.SOLOV2.DETECTIONS_PER_IMAGE = -1 is invalid; expected an integer >= 1"),
    (["MODEL.SOLOV2.DETECTIONS_PER_IMAGE", "0"], "MODEL.SOLOV2.DETECTIONS_PER_IMAGE = 0 is invalid"),
    (["MODEL.SOLOV2.NMS_PRE_TOPK", "0"], "MODEL.SOLOV2.NMS_PRE_TOPK = 0 is invalid; expected an integer >= 1"),
    (["MODEL.SOLOV2.MASK_THRESH_TEST", "1.5"], "MODEL.SOLOV2.MASK_THRESH_TEST = 1.5 is invalid; expected a number in (0, 1)"),
    (["MODEL.SOLOV2.SCORE_THRESH_TEST", "1.5"], "MODEL.SOLOV2.SCORE_THRESH_TEST = 1.5 is invalid; expected a number in [0, 1]"),
    (["MODEL.SOLOV2.UPDATE_THRESH_TEST", "-0.5"], "MODEL.SOLOV2.UPDATE_THRESH_TEST = -0.5 is invalid"),
    (["MODEL.SOLOV2.NUM_GRIDS", "[24, 20, 0, 12, 8]"], "MODEL.SOLOV2.NUM_GRIDS = [24, 20, 0, 12, 8] is invalid; expected a list of integers >= 1"),
    (["MODEL.SOLOV2.NUM_GRIDS", "[24, 20, 16]"], "MODEL.SOLOV2.NUM_GRIDS = [24, 20, 16] is invalid; expected 5 entries"),
    (["MODEL.SOLOV2.NUM_CLASSES", "0"], "MODEL.SOLOV2.NUM_CLASSES = 0 is invalid; expected an integer >= 1"),
    (["MODEL.SOLOV2.NUM_CLASSES", "-3"], "MODEL.SOLOV2.NUM_CLASSES = -3 is invalid"),
    (["MODEL.SOLOV2.NUM_KERNELS", "0"], "MODEL.SOLOV2.NUM_KERNELS = 0 is invalid; expected an integer >= 1"),
    (["MODEL.SOLOV2.INSTANCE_CHANNELS", "0"], "MODEL.SOLOV2.INSTANCE_CHANNELS = 0 is invalid"),
    (["MODEL.SOLOV2.MASK_CHANNELS", "-64"], "MODEL.SOLOV2.MASK_CHANNELS = -64 is invalid"),
    (["MODEL.SOLOV2.NUM_INSTANCE_CONVS", "0"], "MODEL.SOLOV2.NUM_INSTANCE_CONVS = 0 is invalid"),
    (["MODEL.SOLOV2.PRIOR_PROB", "1.0"], "MODEL.SOLOV2.PRIOR_PROB = 1.0 is invalid; expected a number in (0, 1)"),
    (["MODEL.SOLOV2.FOCAL_LOSS_ALPHA", "1.5"], "MODEL.SOLOV2.FOCAL_LOSS_ALPHA = 1.5 is invalid"),
    (["MODEL.SOLOV2.FOCAL_LOSS_GAMMA", "-2.0"], "MODEL.SOLOV2.FOCAL_LOSS_GAMMA = -2.0 is invalid"),
    (["MODEL.SOLOV2.FOCAL_LOSS_WEIGHT", "0.0"], "MODEL.SOLOV2.FOCAL_LOSS_WEIGHT = 0.0 is invalid; expected a number > 0"),
    (["MODEL.SOLOV2.DICE_LOSS_WEIGHT", "-1.0"], "MODEL.SOLOV2.DICE_LOSS_WEIGHT = -1.0 is invalid"),
    (["MODEL.SOLOV2.NMS_SIGMA", "0.0"], "MODEL.SOLOV2.NMS_SIGMA = 0.0 is invalid"),
    (["MODEL.SOLOV2.NMS_KERNEL", "hard"], "MODEL.SOLOV2.NMS_KERNEL = 'hard' is invalid; expected one of ('gaussian', 'linear')"),
    (["MODEL.SOLOV2.CONV_INIT", "xavier"], "MODEL.SOLOV2.CONV_INIT = 'xavier' is invalid"),
    (["MODEL.SOLOV2.NORM", "LayerNormX"], "MODEL.SOLOV2.NORM = 'LayerNormX' is invalid"),
    (["MODEL.SOLOV2.FPN_INSTANCE_STRIDES", "[8, 8, 16, 32, 0]"], "MODEL.SOLOV2.FPN_INSTANCE_STRIDES = [8, 8, 16, 32, 0] is invalid"),
    (["MODEL.SOLOV2.FPN_SCALE_RANGES", "[[1, 24], [12, 48], [24, 72], [48, 128], [512, 96]]"],
     "MODEL.SOLOV2.FPN_SCALE_RANGES = [[1, 24], [12, 48], [24, 72], [48, 128], [512, 96]] is invalid"),
    (["MODEL.SOLOV2.IN_FEATURES", "[]"], "MODEL.SOLOV2.IN_FEATURES = [] is invalid"),
    (["MODEL.SOLOV2.NUM_CLASSES", "4"], "MODEL.SOLOV2.NUM_CLASSES = 4 is below the 6 classes of DATASETS.TRAIN 'wnlb_demo_train'"),
])
def test_solov2_values_are_checked_before_output(tmp_path, opts, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        setup_cfg(SOLOV2_DEMO, ["OUTPUT_DIR", str(out)] + opts)
    msg = str(info.value)
    assert message in msg and "\n" not in msg, msg
    assert not out.exists()  # nothing written


def test_solov2_values_are_checked_when_the_model_is_built():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    wnlb_d2.add_lowlight_config(cfg)
    wnlb_d2.merge_from_file(cfg, SOLOV2_DEMO)
    cfg.MODEL.SOLOV2.SIGMA = -1.0
    with pytest.raises(ValueError, match=re.escape("MODEL.SOLOV2.SIGMA = -1.0 is invalid")):
        build_model(cfg)


def test_valid_solov2_values_and_class_counts_pass(tmp_path):
    cfg = setup_cfg(SOLOV2_DEMO, ["OUTPUT_DIR", str(tmp_path), "MODEL.SOLOV2.NUM_CLASSES", "8",
                                  "MODEL.SOLOV2.SIGMA", "1.0", "MODEL.SOLOV2.NORM", "", "MODEL.SOLOV2.SCORE_THRESH_TEST", "0.0"])
    assert cfg.MODEL.SOLOV2.NUM_CLASSES == 8
    with pytest.raises(ValueError, match="MODEL.ROI_HEADS.NUM_CLASSES = 2 is below the 6 classes"):
        setup_cfg(DEMO, ["OUTPUT_DIR", str(tmp_path), "MODEL.ROI_HEADS.NUM_CLASSES", "2"])
