"""Stock checkpoints (.pth and model-zoo .pkl) load into wNLB models, whose outputs then equal
the stock model's outputs."""

import logging
import pickle

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from wnlb_d2 import WNLBCheckpointer
from wnlb_d2.naming import is_wnlb_key

from helpers import make_cfg


def _image():
    g = torch.Generator().manual_seed(0)
    # Smooth random blobs: gives the random-init RPN something other than noise to score.
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=g), size=(96, 128), mode="bilinear")
    return (img[0] * 255).round()


def _predict(model):
    model.eval()
    with torch.no_grad():
        return model([{"image": _image(), "height": 96, "width": 128}])[0]["instances"]


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    """A stock Mask R-CNN R50-FPN with random weights, saved as .pth and as model-zoo .pkl."""
    torch.manual_seed(0)
    cfg = make_cfg()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random heads score about 1/81: keep them all
    model = build_model(cfg)
    out = tmp_path_factory.mktemp("stock")
    DetectionCheckpointer(model, save_dir=str(out)).save("model_final")
    pkl = out / "model_final_zoo.pkl"
    with open(pkl, "wb") as f:  # the layout of detectron2's model-zoo files
        pickle.dump({"model": {k: v.numpy() for k, v in model.state_dict().items()},
                     "__author__": "Detectron2 Model Zoo"}, f)
    return cfg, model, {"pth": str(out / "model_final.pth"), "pkl": str(pkl)}


@pytest.mark.parametrize("fmt", ["pth", "pkl"])
@pytest.mark.parametrize("stages, mode", [
    (["res3", "res4", "res5"], "embedded"),
    (["res2", "res3", "res4", "res5"], "concatenate"),
])
def test_stock_checkpoint_loads_and_outputs_equal_stock(stock, fmt, stages, mode, caplog):
    cfg, stock_model, files = stock
    torch.manual_seed(123)  # different init: every stock weight must come from the file
    wcfg = cfg.clone()
    wcfg.MODEL.BACKBONE.NAME = "build_resnet_wnlb_fpn_backbone"
    wcfg.MODEL.WNLB.STAGES = stages
    wcfg.MODEL.WNLB.MODE = mode
    model = build_model(wcfg)
    with caplog.at_level(logging.INFO, logger="wnlb_d2.checkpoint"):
        WNLBCheckpointer(model).load(files[fmt])

    lines = [r.getMessage() for r in caplog.records if r.name == "wnlb_d2.checkpoint"]
    assert len(lines) == 1, lines  # one clear line, no warning
    weights = lambda m: [k for k in m.state_dict() if not k.endswith("num_batches_tracked")]  # noqa: E731
    n_stock = len(weights(stock_model))
    n_new = sum(is_wnlb_key(k) for k in weights(model))
    assert lines[0].startswith(f"Checkpoint loaded {n_stock}/{n_stock + n_new} model tensors; every checkpoint tensor was used;")
    assert f"{n_new} wNLB tensors are new" in lines[0]
    for s in stages:
        assert f"backbone.bottom_up.wnlb.{s}" in lines[0]

    for k, v in stock_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k

    expected, got = _predict(stock_model), _predict(model)
    assert len(expected) > 0
    assert len(got) == len(expected)
    for field in ("pred_classes", "scores", "pred_masks"):
        assert torch.equal(getattr(got, field), getattr(expected, field)), field
    assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)


def test_mismatched_checkpoint_warns(stock, caplog, tmp_path):
    cfg, stock_model, _ = stock
    state = {k: v for k, v in stock_model.state_dict().items() if "roi_heads.mask_head" not in k}
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(3, 1024)  # wrong shape
    path = tmp_path / "partial.pth"
    torch.save({"model": state}, path)
    wcfg = cfg.clone()
    wcfg.MODEL.BACKBONE.NAME = "build_resnet_wnlb_fpn_backbone"
    model = build_model(wcfg)
    with caplog.at_level(logging.INFO, logger="wnlb_d2.checkpoint"):
        WNLBCheckpointer(model).load(str(path))
    records = [r for r in caplog.records if r.name == "wnlb_d2.checkpoint"]
    assert "1 checkpoint tensors unused" in records[0].getMessage()
    warning = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "roi_heads.mask_head" in warning[0]
    assert "roi_heads.box_predictor.cls_score.weight" in warning[0]


def test_wnlb_checkpoint_round_trip(stock, tmp_path):
    cfg, _, _ = stock
    wcfg = cfg.clone()
    wcfg.MODEL.BACKBONE.NAME = "build_resnet_wnlb_fpn_backbone"
    a = build_model(wcfg)
    with torch.no_grad():
        for p in a.backbone.bottom_up.wnlb.parameters():
            p.uniform_(-0.1, 0.1)
    WNLBCheckpointer(a, save_dir=str(tmp_path)).save("wnlb")
    b = build_model(wcfg)
    incompatible = WNLBCheckpointer(b).load(str(tmp_path / "wnlb.pth"))
    assert incompatible is not None
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k


# --- unreadable, non-finite and mismatched checkpoints (issue 10) -------------------------------

import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from wnlb_d2.checkpoint import CheckpointMismatchError, CheckpointReadError, remove_stale_temporaries  # noqa: E402
from wnlb_d2.utils.io import temporary_name  # noqa: E402


class _Tiny(nn.Module):
    """Keys laid out as in a detectron2 model: a bottom-up stage, optional wNLB block, a head."""

    def __init__(self, block=False):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.bottom_up = nn.Module()
        self.backbone.bottom_up.res2 = nn.Conv2d(3, 4, 1)
        if block:
            self.backbone.bottom_up.wnlb = nn.ModuleDict({"res2": nn.Conv2d(4, 4, 1)})
        self.head = nn.Linear(4, 2)


def _unreadable_files(folder):
    good = folder / "good.pth"
    torch.save({"model": _Tiny().state_dict()}, good)
    data = good.read_bytes()
    files = {
        "missing": (folder / "nope.pth", "does not exist"),
        "empty": (folder / "empty.pth", "is empty"),
        "folder": (folder / "adir.pth", "is a folder"),
        "truncated": (folder / "truncated.pth", "not a complete torch checkpoint"),
        "text": (folder / "notes.pth", "it is not a torch or pickle checkpoint"),
        "random": (folder / "random.pth", "it is not a torch or pickle checkpoint"),
        "random pkl": (folder / "random.pkl", "it is not a torch or pickle checkpoint"),
        "not a state dict": (folder / "list.pth", "holds no state dict"),
    }
    files["empty"][0].write_bytes(b"")
    files["folder"][0].mkdir()
    files["truncated"][0].write_bytes(data[: len(data) // 2])
    files["text"][0].write_text("these are not weights\n")
    rng = np.random.default_rng(0)
    files["random"][0].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["random pkl"][0].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    torch.save({"model": [1, 2, 3]}, files["not a state dict"][0])
    return files


CASES = ["missing", "empty", "folder", "truncated", "text", "random", "random pkl", "not a state dict"]


@pytest.mark.parametrize("case", CASES)
def test_unreadable_checkpoint_is_one_clear_error(tmp_path, case):
    path, words = _unreadable_files(tmp_path)[case]
    model = _Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointReadError) as info:
        WNLBCheckpointer(model).load(str(path))
    msg = str(info.value)
    assert repr(str(path)) in msg and words in msg and "\n" not in msg, msg
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), "nothing may be loaded from a broken file"


def test_url_without_network_names_the_url(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))  # nothing cached
    url = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    with pytest.raises(CheckpointReadError, match=re.escape(repr(url)) + ".*could not be downloaded"):
        WNLBCheckpointer(_Tiny()).load(url)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("fmt", ["pth", "pkl"])
def test_non_finite_weights_are_refused(tmp_path, bad, fmt):
    state = _Tiny().state_dict()
    state["head.weight"][0, 1] = bad
    path = tmp_path / f"nan.{fmt}"
    if fmt == "pth":
        torch.save({"model": state}, path)
    else:  # model-zoo layout: numpy arrays in a latin1 pickle
        with open(path, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}, f)
    model = _Tiny()
    before = model.state_dict()["head.weight"].clone()
    with pytest.raises(CheckpointReadError, match=r"holds NaN/Inf in 1 tensors \(first: \['head.weight'\]\)"):
        WNLBCheckpointer(model).load(str(path))
    assert torch.equal(model.state_dict()["head.weight"], before)


def test_wnlb_tensors_the_model_cannot_take_are_an_error(tmp_path):
    path = tmp_path / "wnlb.pth"
    torch.save({"model": _Tiny(block=True).state_dict()}, path)
    # Not strict (library use): loads with the warning, as before.
    WNLBCheckpointer(_Tiny()).load(str(path))
    with pytest.raises(CheckpointMismatchError, match="holds non-local blocks the model cannot take.*backbone.bottom_up.wnlb.res2"):
        WNLBCheckpointer(_Tiny(), strict_backbone=True).load(str(path))
    # A stock checkpoint into a wNLB model stays fine under strict_backbone.
    stock = tmp_path / "stock.pth"
    torch.save({"model": _Tiny().state_dict()}, stock)
    WNLBCheckpointer(_Tiny(block=True), strict_backbone=True).load(str(stock))


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # The names WNLBCheckpointer.save writes through (wnlb_d2.utils.io.atomic_write).
    stale = tmp_path / os.path.basename(temporary_name("model_0000009.pth", dead.pid))
    stale.write_bytes(b"x" * 1000)
    stale_tag = tmp_path / os.path.basename(temporary_name("last_checkpoint", dead.pid))
    stale_tag.write_text("model_0000009.pth")
    live = tmp_path / os.path.basename(temporary_name("model_0000010.pth"))  # a live process may be saving it now
    live.write_bytes(b"y")
    other = tmp_path / f"notes.txt.tmp.{dead.pid}"  # not ours: never touched
    other.write_text("z")
    with caplog.at_level(logging.INFO, logger="wnlb_d2.checkpoint"):
        removed = remove_stale_temporaries(str(tmp_path))
    assert sorted(removed) == sorted([stale.name, stale_tag.name])
    assert not stale.exists() and not stale_tag.exists() and live.exists() and other.exists()
    assert any("Removed 2 stale checkpoint temporaries" in r.getMessage() for r in caplog.records)
    assert remove_stale_temporaries(str(tmp_path)) == []


# --- weights of another architecture (issue 20) ---------------------------------------------------

from detectron2.config import get_cfg  # noqa: E402

import wnlb_d2  # noqa: E402
from wnlb_d2.checkpoint import architecture_of_keys  # noqa: E402

DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo")


def _demo_cfg(name, **opts):
    """The demo R18-FPN Mask R-CNN or SOLOv2 (one backbone, other heads), small heads."""
    cfg = get_cfg()
    wnlb_d2.add_lowlight_config(cfg)
    wnlb_d2.merge_from_file(cfg, os.path.join(DEMO_DIR, name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SOLOV2.NUM_GRIDS = [8, 6, 4, 3, 2]
    cfg.MODEL.SOLOV2.INSTANCE_CHANNELS = 32
    cfg.MODEL.SOLOV2.MASK_CHANNELS = 32
    cfg.MODEL.SOLOV2.NUM_KERNELS = 32
    for k, v in opts.items():
        *parents, leaf = k.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = v
    return cfg


@pytest.fixture(scope="module")
def two_architectures(tmp_path_factory):
    """Checkpoints of the demo Mask R-CNN and the demo SOLOv2 (same R18-FPN backbone)."""
    out = tmp_path_factory.mktemp("arch")
    torch.manual_seed(0)
    files = {}
    for arch, name in (("maskrcnn", "Base-Demo-R18-FPN.yaml"), ("solov2", "SOLOv2-Demo-R18-FPN.yaml")):
        model = build_model(_demo_cfg(name))
        DetectionCheckpointer(model, save_dir=str(out)).save(arch)
        files[arch] = str(out / f"{arch}.pth")
    return files


@pytest.mark.parametrize("source, target, words", [
    ("solov2", "Base-Demo-R18-FPN.yaml", "holds the heads of SOLOv2 .* but the model is Mask R-CNN \\(GeneralizedRCNN\\): "
                                         "it gives only 0/\\d+ of the model's head tensors"),
    ("maskrcnn", "SOLOv2-Demo-R18-FPN.yaml", "holds the heads of Mask R-CNN \\(GeneralizedRCNN\\) .* but the model is "
                                             "SOLOv2: it gives only 0/\\d+ of the model's head tensors"),
])
@pytest.mark.parametrize("backbone", ["build_resnet_fpn_backbone", "build_resnet_wnlb_fpn_backbone"])
def test_checkpoint_of_another_architecture_is_an_error(two_architectures, source, target, words, backbone):
    model = build_model(_demo_cfg(target, **{"MODEL.BACKBONE.NAME": backbone}))
    with pytest.raises(CheckpointMismatchError, match=words) as info:
        WNLBCheckpointer(model, strict_backbone=True).load(two_architectures[source])
    msg = str(info.value)
    assert repr(two_architectures[source]) in msg and "MODEL.META_ARCHITECTURE" in msg and "\n" not in msg


def test_legitimate_partial_checkpoints_still_load(two_architectures, tmp_path, caplog):
    # Another class count: the predictors are of the wrong shape, which fvcore skips.
    for name, key in (("Base-Demo-R18-FPN.yaml", "MODEL.ROI_HEADS.NUM_CLASSES"),
                      ("SOLOv2-Demo-R18-FPN.yaml", "MODEL.SOLOV2.NUM_CLASSES")):
        model = build_model(_demo_cfg(name, **{key: 3}))
        arch = "maskrcnn" if "Base" in name else "solov2"
        WNLBCheckpointer(model, strict_backbone=True).load(two_architectures[arch])
    # A classification backbone (only backbone tensors and its classifier): the heads initialise.
    state = torch.load(two_architectures["maskrcnn"])["model"]
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    backbone["fc.weight"], backbone["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save({"model": backbone}, tmp_path / "imagenet.pth")
    # detectron2's converted torchvision / Caffe2 ImageNet files (matched by name heuristics),
    # whose classifier ends up as stem.fc / fc1000.
    bottom_up = {k[len("backbone.bottom_up."):]: v.numpy() for k, v in state.items() if k.startswith("backbone.bottom_up.")}
    bottom_up["stem.fc.weight"] = np.zeros((1000, 512), np.float32)
    bottom_up["fc1000_w"] = np.zeros((1000, 512), np.float32)
    with open(tmp_path / "R-18.pkl", "wb") as f:
        pickle.dump({"model": bottom_up, "__author__": "torchvision", "matching_heuristics": True}, f)
    for name in ("Base-Demo-R18-FPN.yaml", "SOLOv2-Demo-R18-FPN.yaml"):
        for path in ("imagenet.pth", "R-18.pkl"):
            WNLBCheckpointer(build_model(_demo_cfg(name)), strict_backbone=True).load(str(tmp_path / path))
    # A stock checkpoint into a model with non-local blocks: the blocks initialise.
    wnlb = build_model(_demo_cfg("SOLOv2-Demo-R18-FPN.yaml", **{"MODEL.BACKBONE.NAME": "build_resnet_wnlb_fpn_backbone"}))
    WNLBCheckpointer(wnlb, strict_backbone=True).load(two_architectures["solov2"])


def test_architecture_of_keys():
    assert architecture_of_keys(["backbone.x.weight", "instance_head.cate_pred.weight", "mask_head.pred.0.weight"]) == "SOLOv2"
    assert architecture_of_keys(["roi_heads.box_predictor.cls_score.weight"]) == "Faster R-CNN (GeneralizedRCNN)"
    assert architecture_of_keys(["roi_heads.mask_head.predictor.weight"]) == "Mask R-CNN (GeneralizedRCNN)"
    assert architecture_of_keys(["head.cls_subnet.0.weight", "head.bbox_pred.weight"]) == "RetinaNet"
    assert architecture_of_keys(["backbone.bottom_up.stem.conv1.weight", "fc.weight"]) is None


def test_unreadable_checkpoint_permission_denied_is_named(tmp_path, monkeypatch):
    path = tmp_path / "locked.pth"
    torch.save({"model": _Tiny().state_dict()}, path)
    real_open = open

    def denied(file, *args, **kwargs):  # tests may run as root, where chmod 000 still reads
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(CheckpointReadError) as info:
        WNLBCheckpointer(_Tiny()).load(str(path))
    msg = str(info.value)
    assert repr(str(path)) in msg and "permission denied" in msg and "not a torch or pickle" not in msg, msg
