"""SOLVER.FINETUNE_POLICY freezes exactly what it says, down to BatchNorm statistics."""

import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from wnlb_d2.naming import is_wnlb_key
from wnlb_d2.engine import apply_finetune_policy

from helpers import make_cfg, training_input


def _model(backbone="build_resnet_wnlb_fpn_backbone"):
    cfg = make_cfg(backbone=backbone, STAGES=["res3", "res4"])
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"  # trainable BatchNorm everywhere, to check its statistics
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return build_model(cfg)


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_all_keeps_everything_trainable():
    model = _model()
    before = _trainable(model)
    apply_finetune_policy(model, "all")
    assert _trainable(model) == before == {n for n, _ in model.named_parameters()}


def test_backbone_trains_only_the_backbone():
    model = _model()
    apply_finetune_policy(model, "backbone")
    names = {n for n, _ in model.named_parameters()}
    assert _trainable(model) == {n for n in names if n.startswith("backbone.")}
    assert any(".wnlb." in n for n in _trainable(model)) and any("fpn_" in n for n in _trainable(model))


def test_wnlb_trains_only_the_blocks_and_freezes_bn_statistics():
    model = _model()
    apply_finetune_policy(model, "wnlb")
    names = {n for n, _ in model.named_parameters()}
    assert _trainable(model) == {n for n in names if is_wnlb_key(n)}
    assert _trainable(model)
    stem_bn_before = model.backbone.bottom_up.stem.conv1.norm.running_mean.clone()
    block_bn_before = model.backbone.bottom_up.wnlb["res3"].w_z.norm.running_mean.clone()
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with torch.no_grad():
        for b in model.backbone.bottom_up.wnlb.values():
            b.fusion_weight.fill_(0.5)  # so the blocks' BN sees real data
    model.train()
    with EventStorage():
        loss = sum(model([training_input(64, 64, box=(8, 8, 40, 40), cls=1)]).values())
    loss.backward()
    opt.step()
    assert torch.equal(model.backbone.bottom_up.stem.conv1.norm.running_mean, stem_bn_before)
    assert not torch.equal(model.backbone.bottom_up.wnlb["res3"].w_z.norm.running_mean, block_bn_before)
    for n, p in model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n
        else:
            assert p.grad is not None, n


def test_wnlb_policy_without_blocks_and_unknown_policy():
    with pytest.raises(ValueError, match="has no non-local blocks"):
        apply_finetune_policy(_model("build_resnet_fpn_backbone"), "wnlb")
    with pytest.raises(ValueError, match=r"FINETUNE_POLICY = 'heads' is invalid; expected one of \('all', 'backbone', 'wnlb'\)"):
        apply_finetune_policy(_model(), "heads")


def test_optimizer_choice_and_frozen_parameters_left_out():
    from wnlb_d2.engine import LowLightTrainer

    cfg = make_cfg(backbone="build_resnet_wnlb_fpn_backbone", STAGES=["res3"])
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.SOLVER.FINETUNE_POLICY = "wnlb"
    model = LowLightTrainer.build_model(cfg)
    sgd = LowLightTrainer.build_optimizer(cfg, model)
    assert isinstance(sgd, torch.optim.SGD)
    cfg.SOLVER.OPTIMIZER = "AdamW"
    adamw = LowLightTrainer.build_optimizer(cfg, model)
    assert isinstance(adamw, torch.optim.AdamW)
    in_optimizer = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for n, p in model.named_parameters() if is_wnlb_key(n)}
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER = 'LAMB' is invalid"):
        LowLightTrainer.build_optimizer(cfg, model)


def _r18_wnlb_cfg(optimizer):
    """A ResNet-18 FPN config with blocks after res3 and res5, trained by ``optimizer``."""
    cfg = make_cfg(backbone="build_resnet_wnlb_fpn_backbone", STAGES=["res3", "res5"])
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.SOLVER.OPTIMIZER = optimizer
    return cfg


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_wnlb_lr_factor_scales_exactly_the_block_parameters(optimizer):
    from detectron2.solver import build_lr_scheduler

    from wnlb_d2.engine import LowLightTrainer

    cfg = _r18_wnlb_cfg(optimizer)
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0  # detectron2's own per-group factor must survive
    cfg.SOLVER.WNLB_LR_FACTOR = 10.0
    cfg.SOLVER.WARMUP_ITERS = 0
    model = LowLightTrainer.build_model(cfg)
    opt = LowLightTrainer.build_optimizer(cfg, model)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    names = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(lr_of) == {id(p) for p in names.values()}  # every trainable parameter, once
    for name, p in names.items():
        expected = 0.01 * (10.0 if is_wnlb_key(name) else 1.0) * (2.0 if name.endswith(".bias") else 1.0)
        assert lr_of[id(p)] == pytest.approx(expected), name
    # detectron2's scheduler scales each group's own initial lr: the factor holds through a step
    sched = build_lr_scheduler(cfg, opt)
    opt.step()
    sched.step()
    block = next(p for n, p in names.items() if is_wnlb_key(n) and n.endswith(".weight"))
    other = next(p for n, p in names.items() if not is_wnlb_key(n) and n.endswith(".weight"))
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(block)] == pytest.approx(10 * lrs[id(other)])


def test_wnlb_lr_factor_must_be_positive():
    from wnlb_d2.engine.setup import check_config

    cfg = make_cfg(backbone="build_resnet_wnlb_fpn_backbone", STAGES=["res3"])
    cfg.SOLVER.WNLB_LR_FACTOR = 0.0
    with pytest.raises(ValueError, match="SOLVER.WNLB_LR_FACTOR = 0.0 is invalid"):
        check_config(cfg)


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_wnlb_weight_lr_factor_scales_only_w_on_top_of_the_block_factor(optimizer):
    from wnlb_d2.engine import LowLightTrainer
    from wnlb_d2.naming import is_fusion_weight_key

    cfg = _r18_wnlb_cfg(optimizer)
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.WNLB_LR_FACTOR = 2.0
    cfg.SOLVER.WNLB_WEIGHT_LR_FACTOR = 50.0
    model = LowLightTrainer.build_model(cfg)
    opt = LowLightTrainer.build_optimizer(cfg, model)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    names = {n: p for n, p in model.named_parameters() if p.requires_grad}
    ws = [n for n in names if is_fusion_weight_key(n)]
    assert sorted(ws) == ["backbone.bottom_up.wnlb.res3.fusion_weight", "backbone.bottom_up.wnlb.res5.fusion_weight"]
    for name, p in names.items():
        factor = 100.0 if name in ws else 2.0 if is_wnlb_key(name) else 1.0
        expected = 0.01 * factor * (cfg.SOLVER.BIAS_LR_FACTOR if name.endswith(".bias") else 1.0)
        assert lr_of[id(p)] == pytest.approx(expected), name
    from wnlb_d2.engine.setup import check_config

    cfg.SOLVER.WNLB_WEIGHT_LR_FACTOR = -1.0
    with pytest.raises(ValueError, match="SOLVER.WNLB_WEIGHT_LR_FACTOR = -1.0 is invalid"):
        check_config(cfg)


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_wnlb_weight_decay_sets_only_w_and_none_keeps_the_optimizers(optimizer):
    from wnlb_d2.engine import LowLightTrainer
    from wnlb_d2.engine.setup import check_config
    from wnlb_d2.naming import is_fusion_weight_key

    cfg = _r18_wnlb_cfg(optimizer)
    cfg.SOLVER.WEIGHT_DECAY = 1e-3
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    model = LowLightTrainer.build_model(cfg)

    def decay_of(cfg):
        opt = LowLightTrainer.build_optimizer(cfg, model)
        # A group without its own weight_decay takes the optimizer's default (SOLVER.WEIGHT_DECAY).
        return {n: g["weight_decay"] for g in opt.param_groups for p in g["params"]
                for n, q in model.named_parameters() if q is p}

    default = decay_of(cfg)  # None: w decays like every other weight
    ws = [n for n in default if is_fusion_weight_key(n)]
    assert len(ws) == 2 and all(default[n] == 1e-3 for n in ws)
    cfg.SOLVER.WNLB_WEIGHT_DECAY = 0.0
    check_config(cfg)
    off = decay_of(cfg)
    assert all(off[n] == 0.0 for n in ws)
    assert {n: d for n, d in off.items() if n not in ws} == {n: d for n, d in default.items() if n not in ws}
    cfg.SOLVER.WNLB_WEIGHT_DECAY = 5e-2
    assert all(decay_of(cfg)[n] == 5e-2 for n in ws)
    cfg.SOLVER.WNLB_WEIGHT_DECAY = -1.0
    with pytest.raises(ValueError, match="SOLVER.WNLB_WEIGHT_DECAY = -1.0 is invalid"):
        check_config(cfg)


def test_wnlb_weight_decay_comes_from_the_command_line_and_a_yaml():
    from wnlb_d2.engine.setup import setup_cfg

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = setup_cfg(os.path.join(root, "configs", "demo", "Base-Demo-R18-FPN.yaml"),
                    ["MODEL.DEVICE", "cpu", "SOLVER.WNLB_WEIGHT_DECAY", "0.0"])
    assert cfg.SOLVER.WNLB_WEIGHT_DECAY == 0.0
    again = cfg.clone()
    again.defrost()
    again.merge_from_other_cfg(type(cfg).load_cfg(cfg.dump()))  # config.yaml of an output folder
    assert again.SOLVER.WNLB_WEIGHT_DECAY == 0.0
    assert type(cfg).load_cfg(setup_cfg(os.path.join(root, "configs", "demo", "Base-Demo-R18-FPN.yaml"),
                                        ["MODEL.DEVICE", "cpu"]).dump()).SOLVER.WNLB_WEIGHT_DECAY is None
