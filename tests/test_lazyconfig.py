"""wnlb_d2 in detectron2's LazyConfig: the one-line backbone swap, w's optimizer policy and logging,
the shipped configs/lazy/*.py, and training with detectron2's LazyConfig loop."""

import inspect
import json
import os
import subprocess
import sys
import tarfile

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import SimpleTrainer, hooks
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.utils.events import JSONWriter
from omegaconf import OmegaConf

import wnlb_d2
from engine_helpers import REPO, register_tiny_demo
from wnlb_d2.engine.hooks import WNLBWeightLogger
from wnlb_d2.lazy import WNLBResNet, with_wnlb_blocks, wnlb_param_groups
from wnlb_d2.naming import is_fusion_weight_key, is_wnlb_key

pytestmark = pytest.mark.usefixtures("one_thread")

LSJ = "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py"
LAZY_DIR = os.path.join(REPO, "configs", "lazy")
SHIPPED = sorted(f for f in os.listdir(LAZY_DIR) if f.endswith(".py"))
VENDORED = os.path.join(os.path.dirname(REPO), "shared", "vendor", "detectron2-main-02b5c4e.tar.gz")
STAGES = ["res3", "res4", "res5"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    register_tiny_demo(root)
    return root


def _yacs_wnlb_backbone(stages, **wnlb):
    """The yacs wNLB R50-FPN backbone (MODEL.BACKBONE.NAME swap) with ``MODEL.WNLB`` values."""
    cfg = get_cfg()
    wnlb_d2.add_lowlight_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("Base-RCNN-FPN.yaml"))
    cfg.MODEL.BACKBONE.NAME = "build_resnet_wnlb_fpn_backbone"
    cfg.MODEL.WNLB.STAGES = list(stages)
    for key, value in wnlb.items():
        cfg.MODEL.WNLB[key.upper()] = value
    return build_backbone(cfg)


def _small_resnet(depth=18):
    return L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=depth, norm="FrozenBN"),
        out_features=["res2", "res3", "res4", "res5"],
    )


@pytest.mark.parametrize(
    "stages, wnlb", [(STAGES, {}), (["res2", "res4"], {"mode": "concatenate", "sub_sample": True})]
)
def test_one_line_gives_the_yacs_backbone_state_dict(stages, wnlb):
    model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
    model.backbone.bottom_up = with_wnlb_blocks(model.backbone.bottom_up, stages=stages, **wnlb)
    lazy = instantiate(model.backbone)
    yacs = _yacs_wnlb_backbone(stages, **wnlb)
    lazy_sd, yacs_sd = lazy.state_dict(), yacs.state_dict()
    assert list(lazy_sd) == list(yacs_sd)  # same keys, same order: bottom_up.wnlb.res3.theta.weight ...
    assert {k: v.shape for k, v in lazy_sd.items()} == {k: v.shape for k, v in yacs_sd.items()}
    assert sorted({k.split(".")[2] for k in lazy_sd if is_wnlb_key(k)}) == sorted(stages)
    lazy.load_state_dict(yacs_sd)  # strict: a yacs wNLB checkpoint loads as is
    block = lazy.bottom_up.wnlb[stages[-1]]
    assert block.mode == wnlb.get("mode", "embedded") and block.sub_sample == wnlb.get("sub_sample", False)


def test_wrap_defaults_are_those_of_model_wnlb():
    cfg = get_cfg()
    wnlb_d2.add_lowlight_config(cfg)
    params = inspect.signature(WNLBResNet.wrap).parameters
    for key, value in cfg.MODEL.WNLB.items():
        default = params[key.lower()].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key


def test_wrap_takes_weights_per_stage_and_names_bad_arguments():
    node = with_wnlb_blocks(_small_resnet(), stages=["res4", "res5"], weight_init=[0.25, 0.5])
    model = instantiate(node)
    assert [float(b.fusion_weight.detach()) for b in model.wnlb.values()] == [0.25, 0.5]
    assert model.wnlb["res5"].in_channels == 512  # read from the ResNet-18's stage, not typed
    assert list(model.output_shape()) == ["res2", "res3", "res4", "res5"]
    with pytest.raises(ValueError, match=r"WNLBResNet.wrap\(mode=...\) = 'nonlocal' is invalid; expected one of"):
        instantiate(with_wnlb_blocks(_small_resnet(), mode="nonlocal"))
    with pytest.raises(ValueError, match=r"weight_init=...\) has 2 values \[0.1, 0.2\] but .*stages=...\) has 3"):
        instantiate(with_wnlb_blocks(_small_resnet(), weight_init=[0.1, 0.2]))
    with pytest.raises(TypeError, match="takes a stock detectron2 ResNet, got WNLBResNet"):
        WNLBResNet.wrap(model)


def test_param_groups_give_w_no_decay_and_its_lr_factor():
    model = instantiate(with_wnlb_blocks(_small_resnet(), stages=["res4", "res5"]))
    groups = wnlb_param_groups(model, base_lr=0.1, weight_decay_norm=0.0, wnlb_lr_factor=2.0,
                               wnlb_weight_lr_factor=5.0)
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-4)
    setting = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(setting) == len([p for p in names.values() if p.requires_grad])
    for name, p in names.items():
        if is_fusion_weight_key(name):
            assert setting[id(p)] == pytest.approx((0.1 * 2.0 * 5.0, 0.0))
        elif is_wnlb_key(name) and name.endswith("theta.weight"):
            assert setting[id(p)] == pytest.approx((0.1 * 2.0, 1e-4))
        elif name.endswith("res2.0.conv1.weight"):
            assert setting[id(p)] == pytest.approx((0.1, 1e-4))
    with pytest.raises(ValueError, match=r"needs base_lr \(in a LazyConfig: base_lr='\$\{..lr\}'\)"):
        wnlb_param_groups(model, wnlb_weight_lr_factor=10.0)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_instantiate(name):
    cfg = LazyConfig.load(os.path.join(LAZY_DIR, name))
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(cfg)
    model = instantiate(cfg.model)
    has_blocks = "wnlb" in name
    assert isinstance(model.backbone.bottom_up, WNLBResNet) == has_blocks
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    instantiate(cfg.lr_multiplier)
    if has_blocks:
        assert sorted(model.backbone.bottom_up.wnlb) == STAGES
        w_groups = [g for g in optimizer.param_groups
                    if any(p is b.fusion_weight for b in model.backbone.bottom_up.wnlb.values() for p in g["params"])]
        assert w_groups and all(g["weight_decay"] == 0.0 for g in w_groups)


def _tiny(cfg, output_dir, prefix="tiny_demo"):
    """Shrink a COCO LazyConfig to the tiny demo set: 64 px, batch 2, CPU, 2 iterations."""
    cfg.train.update(device="cpu", max_iter=2, output_dir=str(output_dir), eval_period=0, log_period=1)
    cfg.train.amp.enabled = False
    cfg.dataloader.train.dataset.names = f"{prefix}_train"
    # No crop: LSJ's FixedSizeCrop of polygon masks needs shapely, not installed here.
    cfg.dataloader.train.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=64, max_size=64)]
    cfg.dataloader.train.update(total_batch_size=2, num_workers=0)
    cfg.dataloader.test.dataset.names = f"{prefix}_val"
    cfg.dataloader.pop("evaluator")
    cfg.model.roi_heads.num_classes = len(MetadataCatalog.get(f"{prefix}_train").thing_classes)
    cfg.model.roi_heads.batch_size_per_image = 32  # speed: few proposals suffice at 64 px
    cfg.model.proposal_generator.post_nms_topk = (64, 64)
    return cfg


def test_lsj_config_with_one_line_trains_and_logs_w(demo_root, tmp_path):
    cfg = _tiny(model_zoo.get_config(LSJ), tmp_path)
    # The one line of the issue, and w's optimizer policy.
    cfg.model.backbone.bottom_up = with_wnlb_blocks(cfg.model.backbone.bottom_up, stages=STAGES)
    cfg.optimizer.params = L(wnlb_param_groups)(base_lr="${..lr}", weight_decay_norm=0.0, wnlb_weight_lr_factor=10.0)

    # As tools/lazyconfig_train_net.py's do_train, with its hooks plus WNLBWeightLogger.
    model = instantiate(cfg.model).to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    trainer = SimpleTrainer(model, instantiate(cfg.dataloader.train), optimizer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        WNLBWeightLogger(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicWriter([JSONWriter(str(tmp_path / "metrics.json"))], period=cfg.train.log_period),
    ])
    w0 = {s: float(b.fusion_weight.detach()) for s, b in model.backbone.bottom_up.wnlb.items()}
    trainer.train(0, cfg.train.max_iter)

    history = trainer.storage.histories()
    for stage in STAGES:
        logged = [w for w, _ in history[f"wnlb/w_{stage}"].values()]
        assert len(logged) == 2 and logged[-1] == float(model.backbone.bottom_up.wnlb[stage].fusion_weight.detach())
        assert logged[-1] != w0[stage]  # w is in the optimizer and learns
    lines = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    assert all(f"wnlb/w_{s}" in lines[-1] for s in STAGES)
    (w_group,) = [g for g in optimizer.param_groups if any(p is model.backbone.bottom_up.wnlb["res3"].fusion_weight
                                                           for p in g["params"])]
    assert w_group["weight_decay"] == 0.0 and w_group["initial_lr"] == pytest.approx(cfg.optimizer.lr * 10.0)


_HOOK_LINE = "            hooks.IterationTimer(),\n"


def _script_with_the_hook_line(tmp_path):
    """detectron2 main's tools/lazyconfig_train_net.py from the vendored snapshot, plus the
    documented line (and its import) that logs w."""
    with tarfile.open(VENDORED) as tar:
        script = tar.extractfile("tools/lazyconfig_train_net.py").read().decode()
    assert script.count(_HOOK_LINE) == 1, "the vendored script's hook list changed"
    script = script.replace(_HOOK_LINE, _HOOK_LINE + "            WNLBWeightLogger(),\n")
    script = script.replace(
        "import logging\n", "import logging\n\nfrom wnlb_d2.engine.hooks import WNLBWeightLogger\n", 1
    )
    path = tmp_path / "lazyconfig_train_net.py"
    path.write_text(script)
    return path


@pytest.mark.skipif(not os.path.exists(VENDORED), reason=f"no vendored detectron2 main snapshot at {VENDORED}")
def test_detectron2_lazyconfig_train_net_trains_a_shipped_config(demo_root, tmp_path):
    """detectron2's own LazyConfig trainer script (newest main; it runs on v0.6 too) trains the
    shipped LSJ wNLB config, logs w, and saves the yacs checkpoint key layout."""
    config = tmp_path / "tiny_wnlb.py"
    config.write_text(
        "import sys\n"
        f"sys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
        "from detectron2.config import LazyConfig\n"
        "from engine_helpers import register_tiny_demo\n"
        "from test_lazyconfig import _tiny\n"
        f"register_tiny_demo({demo_root!r})\n"
        f"_cfg = _tiny(LazyConfig.load({os.path.join(LAZY_DIR, 'mask_rcnn_R_50_FPN_100ep_LSJ_wnlb.py')!r}), "
        f"{str(tmp_path / 'out')!r})\n"
        "_cfg.train.checkpointer.period = 100\n"
        "dataloader, lr_multiplier, model, optimizer, train = "
        "_cfg.dataloader, _cfg.lr_multiplier, _cfg.model, _cfg.optimizer, _cfg.train\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.run(
        [sys.executable, str(_script_with_the_hook_line(tmp_path)), "--config-file", str(config), "--num-gpus", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in open(tmp_path / "out" / "metrics.json")]
    assert lines[-1]["iteration"] == 1 and all(f"wnlb/w_{s}" in lines[-1] for s in STAGES)
    saved = torch.load(tmp_path / "out" / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    yacs = {f"backbone.{k}" for k in _yacs_wnlb_backbone(STAGES).state_dict() if is_wnlb_key(k)}
    assert {k for k in saved if is_wnlb_key(k)} == yacs


def test_saved_config_yaml_loads_back_to_the_same_model(tmp_path):
    """lazyconfig_train_net.py saves config.yaml (default_setup): the wrap target must round-trip."""
    cfg = LazyConfig.load(os.path.join(LAZY_DIR, "mask_rcnn_R_50_FPN_3x_wnlb.py"))
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    loaded = LazyConfig.load(str(tmp_path / "config.yaml"))
    assert isinstance(loaded.model.backbone.bottom_up._target_, str)  # written as a dotted name
    backbone = instantiate(loaded.model.backbone)
    assert isinstance(backbone.bottom_up, WNLBResNet)
    assert list(backbone.state_dict()) == list(_yacs_wnlb_backbone(STAGES).state_dict())


def test_shipped_solov2_wnlb_config_trains(demo_root, tmp_path):
    cfg = LazyConfig.load(os.path.join(LAZY_DIR, "solov2_R_50_FPN_3x_wnlb.py"))
    cfg.train.update(device="cpu", max_iter=2)
    cfg.dataloader.train.dataset.names = "tiny_demo_train"
    cfg.dataloader.train.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=64, max_size=64)]
    cfg.dataloader.train.update(total_batch_size=2, num_workers=0)
    cfg.model.num_classes = len(MetadataCatalog.get("tiny_demo_train").thing_classes)
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    trainer = SimpleTrainer(model, instantiate(cfg.dataloader.train), instantiate(cfg.optimizer))
    trainer.register_hooks([WNLBWeightLogger(), hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier))])
    trainer.train(0, cfg.train.max_iter)
    history = trainer.storage.histories()
    assert {"loss_cate", "loss_mask"} <= set(history)
    assert all(len(history[f"wnlb/w_{s}"].values()) == 2 for s in STAGES)
