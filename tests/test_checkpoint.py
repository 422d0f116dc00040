"""Stock checkpoints (.pth and model-zoo .pkl) load into wNLB models, whose outputs then equal
the stock model's outputs."""

import logging
import pickle

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from wnlb_d2 import WNLBCheckpointer
from wnlb_d2.checkpoint import is_wnlb_key

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
