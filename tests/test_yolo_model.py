"""YOLOv8-seg with non-local blocks: YAML generation, identity at initialisation, weights.

Reference: the plain YOLOv8-seg that Ultralytics builds from its own stock YAML.
"""

import ast
import importlib.util
import os

import numpy as np
import pytest
import torch
import yaml

# find_spec, not importorskip: importing ultralytics before wnlb_d2.yolo would skip the
# package's environment defaults (offline, config folder outside the home folder).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

import wnlb_d2.yolo as wy  # noqa: E402
from ultralytics.nn.tasks import SegmentationModel  # noqa: E402
from wnlb_d2.yolo.model_yaml import (SHIPPED_MODELS, insert_nonlocal_blocks, model_yaml_name,  # noqa: E402
                                     plain_layer_map, stage_layers)
from wnlb_d2.yolo.modules import YOLONonLocalBlock2d  # noqa: E402
from wnlb_d2.yolo.weights import load_plain_weights, read_yolo_state_dict  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NC = 6


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flat(v)]
    return []


def _calibrate(model, x):
    # A freshly initialised YOLO in eval mode has BN statistics (0, 1) that shrink activations
    # to ~1e-5 after a few layers, where any block change would vanish; statistics of a real
    # batch make the features O(1), so the identity comparison is sensitive.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


@pytest.fixture(scope="module")
def plain():
    torch.manual_seed(0)
    model = SegmentationModel("yolov8n-seg.yaml", nc=NC, verbose=False)
    x = torch.rand(2, 3, 96, 64)
    _calibrate(model, x)
    return model, x


def test_core_modules_do_not_import_ultralytics():
    # Static check of every module outside wnlb_d2/yolo (the dynamic check, `import wnlb_d2`
    # in a fresh interpreter, runs in test_yolo_train.py's offline subprocess).
    offenders = []
    for folder, _, files in os.walk(os.path.join(REPO, "wnlb_d2")):
        if os.path.join("wnlb_d2", "yolo") in folder:
            continue
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
                if any(m.split(".")[0] == "ultralytics" or "yolo" in m.split(".") for m in mods) or "yolo" in names:
                    offenders.append(os.path.relpath(path, REPO))
    assert offenders == []


def test_shipped_yamls_are_the_generated_ones():
    folder = os.path.join(REPO, "configs", "yolo")
    expected = {model_yaml_name(stock, fusion): (stock, fusion) for stock, fusion in SHIPPED_MODELS}
    assert sorted(f for f in os.listdir(folder) if f.endswith(".yaml")) == sorted(expected)
    for name, (stock, fusion) in expected.items():
        with open(os.path.join(folder, name)) as f:
            assert yaml.safe_load(f) == insert_nonlocal_blocks(stock, fusion=fusion), name


def test_stage_layers_of_yolov8_backbones():
    # P5 is the SPPF (layer 9): the feature the neck takes; channels scale with the width.
    n = stage_layers(wy.model_yaml.load_stock_yaml("yolov8n-seg.yaml"))
    assert n == {"P2": (2, 32), "P3": (4, 64), "P4": (6, 128), "P5": (9, 256)}
    m = stage_layers(wy.model_yaml.load_stock_yaml("yolov8m-seg.yaml"))
    assert m == {"P2": (2, 96), "P3": (4, 192), "P4": (6, 384), "P5": (9, 576)}  # max_channels 768 * 0.75


def test_insertion_rewires_every_from_index():
    stock = wy.model_yaml.load_stock_yaml("yolov8n-seg.yaml")
    d = insert_nonlocal_blocks("yolov8n-seg.yaml", stages=("P2", "P4"), fusion="residual")
    rows = d["backbone"] + d["head"]
    assert d["wnlb"]["block_layers"] == {"P2": 3, "P4": 8}
    assert [i for i, r in enumerate(rows) if r[2] == "YOLONonLocalBlock2d"] == [3, 8]
    assert rows[3][3] == [32, {"fusion": "residual"}] and rows[8][3] == [128, {"fusion": "residual"}]
    layer_map = plain_layer_map(d)
    stock_rows = stock["backbone"] + stock["head"]
    blocks_after = {2: 3, 6: 8}
    for i, (f, n, m, args) in enumerate(stock_rows):
        new = rows[layer_map[i]]
        assert new[1:3] == [n, m] and new[3] == args
        if i == 0:
            continue  # the input
        for old, nf in zip(f if isinstance(f, list) else [f], new[0] if isinstance(new[0], list) else [new[0]]):
            src = i + old if old < 0 else old
            got = layer_map[i] + nf if nf < 0 else nf
            # Every consumer of a stage's output now reads the block after it.
            assert got == blocks_after.get(src, layer_map[src]), (i, f, new[0])
    assert d["scales"] == {"n": [0.33, 0.25, 1024]}


@pytest.mark.parametrize("kwargs, match", [
    ({"stages": ("P6",)}, "unknown stage"),
    ({"stages": ()}, "empty"),
    ({"stages": ("P3", "P3")}, "repeat"),
    ({"fusion": "sum"}, "fusion"),
    ({"bogus": 1}, "unknown block option"),
])
def test_insertion_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        insert_nonlocal_blocks("yolov8n-seg.yaml", **kwargs)


def test_block_rejects_unknown_option():
    with pytest.raises(ValueError, match="unknown option"):
        YOLONonLocalBlock2d(64, {"weights": 0.1})


def _blocked_model(fusion, plain_model):
    d = insert_nonlocal_blocks("yolov8n-seg.yaml", fusion=fusion)
    torch.manual_seed(1)
    model = SegmentationModel(d, nc=NC, verbose=False)
    new = load_plain_weights(model, plain_model)
    return model, new


@pytest.mark.parametrize("fusion", ["weighted", "residual"])
def test_identity_at_initialisation_after_loading_plain_weights(plain, fusion):
    plain_model, x = plain
    model, new = _blocked_model(fusion, plain_model)
    blocks = [i for i, m in enumerate(model.model) if isinstance(m, YOLONonLocalBlock2d)]
    assert blocks == [5, 8, 12]
    assert sorted({k.split(".")[1] for k in new}) == ["12", "5", "8"]  # only the blocks' tensors are new
    model.eval()
    with torch.no_grad():
        ref, out = _flat(plain_model(x)), _flat(model(x))
    assert len(ref) == len(out) > 0
    assert all(torch.equal(a, b) for a, b in zip(ref, out))
    # The same comparison sees a block that is not the identity.
    with torch.no_grad():
        model.model[8].w_z.norm.weight.fill_(1.0)
        model.model[8].fusion_weight.fill_(0.5)
        changed = _flat(model(x))
    assert max((a - b).abs().max().item() for a, b in zip(ref, changed)) > 1e-3


def test_block_channels_match_the_plain_features(plain):
    plain_model, x = plain
    feats = {}
    hooks = [plain_model.model[i].register_forward_hook(lambda m, a, o, i=i: feats.__setitem__(i, o.shape[1]))
             for i in (4, 6, 9)]
    with torch.no_grad():
        plain_model(x)
    for h in hooks:
        h.remove()
    d = insert_nonlocal_blocks("yolov8n-seg.yaml")
    rows = d["backbone"]
    assert [rows[i][3][0] for i in (5, 8, 12)] == [feats[4], feats[6], feats[9]]


def test_state_dict_round_trip(plain, tmp_path):
    plain_model, x = plain
    model, _ = _blocked_model("weighted", plain_model)
    with torch.no_grad():  # a trained-looking block: w and W_z away from their initialisation
        for i in (5, 8, 12):
            model.model[i].fusion_weight.fill_(0.1 * i)
            model.model[i].w_z.norm.weight.normal_()
    model.eval()
    path = tmp_path / "wnlb.pt"
    torch.save({"model": model.state_dict(), "yaml": model.yaml}, path)
    saved = torch.load(path, weights_only=True)
    again = SegmentationModel(saved["yaml"], nc=NC, verbose=False)
    again.load_state_dict(saved["model"], strict=True)
    again.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(_flat(model(x)), _flat(again(x))))
    assert again.model[12].fusion_weight.item() == pytest.approx(1.2)


def test_plain_weights_of_another_model_are_refused(plain):
    plain_model, _ = plain
    sd = read_yolo_state_dict(plain_model)
    sd["model.22.cv3.0.2.weight"] = torch.zeros(3, 64, 1, 1)  # a 3-class head
    model = SegmentationModel(insert_nonlocal_blocks("yolov8n-seg.yaml"), nc=NC, verbose=False)
    with pytest.raises(ValueError, match="another shape"):
        load_plain_weights(model, sd)
    with pytest.raises(ValueError, match="not a layer"):
        load_plain_weights(model, {"model.99.weight": torch.zeros(1)})


def test_checkpoint_of_an_older_block_still_runs():
    # Ultralytics checkpoints pickle the module: simulate one written before an option existed.
    import pickle

    block = YOLONonLocalBlock2d(16, {"fusion": "weighted"}).eval()
    x = torch.randn(1, 16, 6, 5)
    with torch.no_grad():
        ref = block(x)
    del block.__dict__["impl"]
    again = pickle.loads(pickle.dumps(block))
    assert again.impl == "efficient"
    with torch.no_grad():
        assert torch.equal(again(x), ref)


def test_ultralytics_yolo_builds_a_shipped_yaml_by_name():
    # After `import wnlb_d2.yolo`, Ultralytics' own entry point resolves the block row; the
    # scale is the one entry of `scales` (s: channels 128, 256, 512 at P3-P5).
    from ultralytics import YOLO

    model = YOLO(os.path.join(REPO, "configs", "yolo", "yolov8s-seg-nlb.yaml"))
    assert model.task == "segment"
    blocks = [m for m in model.model.model if isinstance(m, YOLONonLocalBlock2d)]
    assert [b.in_channels for b in blocks] == [128, 256, 512] and {b.fusion for b in blocks} == {"residual"}


@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_block_learning_rate_factors_give_the_blocks_groups_of_their_own(name):
    # Bug: the YOLO rows trained the blocks' w at the one learning rate of every parameter, so
    # w barely left its initial value (|w| <= 0.013) where the detectron2 rows use w x 100.
    from types import SimpleNamespace

    from wnlb_d2.yolo.train import LowLightSegmentationTrainer

    model = SegmentationModel(insert_nonlocal_blocks("yolov8n-seg.yaml"), nc=NC, verbose=False)
    blocks = [m for m in model.modules() if isinstance(m, YOLONonLocalBlock2d)]
    block_params = {id(p) for m in blocks for p in m.parameters()}
    ws = {id(m.fusion_weight) for m in blocks}

    def groups(lr_factor, w_factor):
        trainer = LowLightSegmentationTrainer.__new__(LowLightSegmentationTrainer)
        trainer.args = SimpleNamespace(optimizer=name, lr0=1e-3, warmup_bias_lr=0.0)
        trainer.wnlb_lr_factor, trainer.wnlb_weight_lr_factor = lr_factor, w_factor
        opt = trainer.build_optimizer(model, name=name, lr=1e-3, momentum=0.9, decay=5e-4)
        return {id(p): (g["lr"], g["weight_decay"], g["param_group"]) for g in opt.param_groups for p in g["params"]}, opt

    plain, plain_opt = groups(1.0, 1.0)
    scaled, opt = groups(10.0, 100.0)
    assert len(plain_opt.param_groups) == 3  # Ultralytics' weight / bn / bias groups, nothing added
    assert set(scaled) == set(plain) == {id(p) for p in model.parameters()}  # every parameter, once
    assert sum(len(g["params"]) for g in opt.param_groups) == len(scaled)
    for i, (lr, decay, kind) in scaled.items():
        factor = (1000.0 if i in ws else 10.0) if i in block_params else 1.0
        assert lr == pytest.approx(plain[i][0] * factor), kind
        assert (decay, kind) == plain[i][1:]  # same decay and Ultralytics group kind (bias warm-up)
    assert {plain[i][1] for i in ws} == {0.0}  # w is never decayed
    # Ultralytics' own groups keep their places (its callbacks read param_groups[0]).
    assert [g["param_group"] for g in opt.param_groups[:3]] == ["weight", "bn", "bias"]
    with pytest.raises(ValueError, match="wnlb_weight_lr_factor must be a positive finite number, got -1"):
        LowLightSegmentationTrainer(overrides={}, wnlb_weight_lr_factor=-1)


def test_results_to_instances_keeps_boxes_scores_classes_and_full_size_masks():
    from ultralytics.engine.results import Results

    from wnlb_d2.yolo.pictures import results_to_instances

    image = np.zeros((20, 30, 3), np.uint8)
    masks = torch.zeros(2, 20, 30)
    masks[0, 2:5, 3:9] = 1
    masks[1, 10:, 20:] = 0.7
    boxes = torch.tensor([[3.0, 2.0, 9.0, 5.0, 0.9, 4], [20.0, 10.0, 30.0, 20.0, 0.6, 1]])
    inst = results_to_instances(Results(image, "x.png", {i: str(i) for i in range(NC)}, boxes=boxes, masks=masks),
                                (20, 30))
    assert inst.image_size == (20, 30) and len(inst) == 2
    assert inst.pred_boxes.tensor.tolist() == boxes[:, :4].tolist()
    assert inst.scores.tolist() == pytest.approx([0.9, 0.6]) and inst.pred_classes.tolist() == [4, 1]
    assert inst.pred_masks.dtype == torch.bool and torch.equal(inst.pred_masks, masks > 0.5)
    empty = results_to_instances(Results(image, "x.png", {0: "a"}, boxes=torch.zeros(0, 6)), (20, 30))
    assert len(empty) == 0 and empty.pred_masks.shape == (0, 20, 30)
    with pytest.raises(ValueError, match=r"masks of shape \(10, 15\) for an image of \(20, 30\); predict with retina"):
        results_to_instances(Results(image, "x.png", {0: "a"}, boxes=boxes[:1], masks=masks[:1, ::2, ::2]), (20, 30))
