"""wNLB backbones: registration, shapes equal to stock, training step, errors at build time."""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone, build_model
from detectron2.utils.events import EventStorage

from wnlb_d2.layers import NonLocalBlock2d

from helpers import make_cfg, training_input

VARIANTS = [
    # (stock config, stock backbone, wNLB backbone, stages)
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "build_resnet_fpn_backbone",
     "build_resnet_wnlb_fpn_backbone", ["res3", "res4", "res5"]),
    ("COCO-Detection/retinanet_R_50_FPN_3x.yaml", "build_retinanet_resnet_fpn_backbone",
     "build_retinanet_resnet_wnlb_fpn_backbone", ["res3", "res4", "res5"]),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml", "build_resnet_backbone",
     "build_resnet_wnlb_backbone", ["res3", "res4"]),
]


def _small(cfg):
    cfg.MODEL.RESNETS.DEPTH = 18  # R18 keeps tests fast; the wiring is the same as R50
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return cfg


@pytest.mark.parametrize("stock_config, stock_name, wnlb_name, stages", VARIANTS)
def test_output_shapes_equal_stock(stock_config, stock_name, wnlb_name, stages):
    assert wnlb_name in BACKBONE_REGISTRY
    cfg_stock = _small(make_cfg(stock_config))
    cfg_wnlb = cfg_stock.clone()
    cfg_wnlb.MODEL.BACKBONE.NAME = wnlb_name
    cfg_wnlb.MODEL.WNLB.STAGES = stages
    shape = ShapeSpec(channels=3)
    stock, wnlb = build_backbone(cfg_stock, shape), build_backbone(cfg_wnlb, shape)
    assert cfg_stock.MODEL.BACKBONE.NAME == stock_name
    assert stock.output_shape() == wnlb.output_shape()
    assert stock.size_divisibility == wnlb.size_divisibility
    bottom_up = getattr(wnlb, "bottom_up", wnlb)
    assert sorted(bottom_up.wnlb.keys()) == sorted(stages)
    # Stock keys are a subset of the wNLB keys; the only new ones are the blocks'.
    stock_keys, wnlb_keys = set(stock.state_dict()), set(wnlb.state_dict())
    assert stock_keys <= wnlb_keys
    assert all(".wnlb." in f".{k}" for k in wnlb_keys - stock_keys)
    x = torch.randn(2, 3, 128, 256)  # divisible by the largest stride (128, RetinaNet's P7)
    out = wnlb(x)
    for name, spec in wnlb.output_shape().items():
        assert out[name].shape == (2, spec.channels, 128 // spec.stride, 256 // spec.stride), name


def test_block_output_feeds_the_next_stage_and_the_fpn():
    cfg = _small(make_cfg(backbone="build_resnet_wnlb_fpn_backbone", STAGES=["res2", "res4"]))
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    bottom_up = backbone.bottom_up
    seen = {}

    def record(key, value):  # a forward hook must return None, or it replaces the output
        seen[key] = value

    bottom_up.res3.register_forward_hook(lambda m, i, o: record("res3_in", i[0]))
    bottom_up.wnlb["res2"].register_forward_hook(lambda m, i, o: record("block_out", o))
    with torch.no_grad():
        bottom_up.wnlb["res2"].fusion_weight.fill_(0.5)  # so the block changes its input
        feats = bottom_up(torch.randn(1, 3, 64, 64))
    assert torch.equal(seen["res3_in"], seen["block_out"])
    assert torch.equal(feats["res2"], seen["block_out"])


@pytest.mark.parametrize("stages", [["res3", "res4", "res5"], ["res2", "res3", "res4", "res5"]])
def test_training_step_updates_blocks(stages):
    cfg = _small(make_cfg(backbone="build_resnet_wnlb_fpn_backbone", STAGES=stages, WEIGHT_INIT=[0.1] * len(stages)))
    cfg.MODEL.RESNETS.DEPTH = 18
    model = build_model(cfg)
    model.train()
    with EventStorage():
        losses = model([training_input()])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    blocks = model.backbone.bottom_up.wnlb
    for name in stages:
        grads = [p.grad for p in blocks[name].parameters()]
        assert all(g is not None for g in grads), name
        assert blocks[name].fusion_weight.grad != 0, name


def test_freeze_at_does_not_freeze_blocks():
    cfg = _small(make_cfg(backbone="build_resnet_wnlb_fpn_backbone", STAGES=["res2", "res3"]))
    cfg.MODEL.BACKBONE.FREEZE_AT = 5
    bottom_up = build_backbone(cfg, ShapeSpec(channels=3)).bottom_up
    assert not any(p.requires_grad for p in bottom_up.res3.parameters())
    assert all(p.requires_grad for p in bottom_up.wnlb.parameters())


def test_config_values_reach_the_blocks():
    cfg = _small(make_cfg(
        backbone="build_resnet_wnlb_fpn_backbone", STAGES=["res4", "res5"], MODE="concatenate",
        FUSION="residual", NORM="GN", IMPL="reference", INTER_CHANNELS_RATIO=0.25, SUB_SAMPLE=True,
        LEARNABLE_WEIGHT=False,
    ))
    blocks = build_backbone(cfg, ShapeSpec(channels=3)).bottom_up.wnlb
    b = blocks["res5"]
    assert isinstance(b, NonLocalBlock2d)
    assert (b.mode, b.fusion, b.impl, b.sub_sample) == ("concatenate", "residual", "reference", True)
    assert b.in_channels == 512 and b.inter_channels == 128
    assert isinstance(b.w_z.norm, torch.nn.GroupNorm)
    cfg.MODEL.WNLB.FUSION = "weighted"
    cfg.MODEL.WNLB.WEIGHT_INIT = [0.2, 0.7]
    blocks = build_backbone(cfg, ShapeSpec(channels=3)).bottom_up.wnlb
    assert blocks["res4"].fusion_weight.item() == pytest.approx(0.2)
    assert blocks["res5"].fusion_weight.item() == pytest.approx(0.7)
    assert "fusion_weight" not in dict(blocks["res5"].named_parameters())


@pytest.mark.parametrize("key, value, match", [
    ("MODE", "nonlocal", r"MODEL.WNLB.MODE = 'nonlocal' is invalid; expected one of \('embedded'"),
    ("FUSION", "add", r"MODEL.WNLB.FUSION = 'add' is invalid; expected one of \('weighted', 'residual'\)"),
    ("NORM", "BatchNorm", r"MODEL.WNLB.NORM = 'BatchNorm' is invalid; expected one of \('BN'"),
    ("IMPL", "fast", r"MODEL.WNLB.IMPL = 'fast' is invalid"),
    ("STAGES", ["res3", "res6"], r"MODEL.WNLB.STAGES entry = 'res6' is invalid; expected one of \('res2'"),
    ("STAGES", ["res3", "res3"], r"lists a stage twice"),
    ("INTER_CHANNELS_RATIO", 0.0, r"INTER_CHANNELS_RATIO must be a positive number, got 0.0"),
    ("INTER_CHANNELS_RATIO", -0.5, r"INTER_CHANNELS_RATIO must be a positive number, got -0.5"),
    ("WEIGHT_INIT", [0.1, 0.2], r"WEIGHT_INIT has 2 values \[0.1, 0.2\] but MODEL.WNLB.STAGES has 3 stages"),
])
def test_bad_config_values_fail_at_build_time(key, value, match):
    cfg = _small(make_cfg(backbone="build_resnet_wnlb_fpn_backbone"))
    cfg.MODEL.WNLB[key] = value
    with pytest.raises(ValueError, match=match):
        build_model(cfg)


def test_stage_the_backbone_does_not_compute():
    cfg = _small(make_cfg("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml", backbone="build_resnet_wnlb_backbone"))
    with pytest.raises(ValueError, match=r"STAGES contains 'res5', but this backbone only computes \['res2', 'res3', 'res4'\]"):
        build_model(cfg)


def test_wrong_channels_at_run_time_names_both_shapes():
    cfg = _small(make_cfg(backbone="build_resnet_wnlb_fpn_backbone"))
    block = build_backbone(cfg, ShapeSpec(channels=3)).bottom_up.wnlb["res3"]
    with pytest.raises(ValueError, match=r"expects a feature map of shape \(B, 128, H, W\), got \(1, 64, 8, 8\)"):
        block(torch.zeros(1, 64, 8, 8))
