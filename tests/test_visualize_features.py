"""tools/visualize_features.py and wnlb_d2.visualization.features: hooks, reductions, the grid picture."""

import importlib.util
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from wnlb_d2.checkpoint import wnlb_layout_of_checkpoint
from wnlb_d2.visualization.features import capture_backbone_features, grid_columns, reduce_feature_map
from wnlb_d2.engine.setup import setup_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "Base-Demo-R18-FPN.yaml")
SMALL = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
         "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
WNLB = ["MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


def _model(tmp_path, extra=(), w=None):
    cfg = setup_cfg(DEMO_CONFIG, SMALL + list(extra) + ["OUTPUT_DIR", str(tmp_path)])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if w is not None:
        with torch.no_grad():
            for block in model.backbone.bottom_up.wnlb.values():
                block.fusion_weight.fill_(w)
                block.w_z.norm.weight.fill_(1.0)  # W_z no longer zero: the block really acts
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vis")
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cv2.rectangle(img, (10, 10), (40, 50), (30, 200, 60), -1)
    image = str(folder / "img.png")
    cv2.imwrite(image, img)
    paths = {}
    for name, extra, w in (("stock", [], None), ("wnlb", WNLB, 0.4)):
        sub = folder / name
        sub.mkdir()
        paths[name] = str(sub / "model_final.pth")
        torch.save({"model": _model(folder, extra, w).state_dict()}, paths[name])
    return image, paths


def _tensor():
    return torch.as_tensor(np.random.default_rng(1).integers(0, 255, (3, 64, 64)), dtype=torch.uint8)


def test_hooks_capture_before_and_after(tmp_path):
    feats = capture_backbone_features(_model(tmp_path, WNLB, w=0.4), _tensor())
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    assert feats["res2"]["before"].shape == (64, 16, 16) and feats["res5"]["before"].shape == (512, 2, 2)
    for info in feats.values():
        assert info["w"] == pytest.approx(0.4) and info["fusion"] == "weighted"
        assert not torch.allclose(info["after"], info["before"])
    # At initialisation (w = 0) every block is the identity: after == before.
    for info in capture_backbone_features(_model(tmp_path, WNLB), _tensor()).values():
        torch.testing.assert_close(info["after"], info["before"], rtol=0, atol=0)
    stock = capture_backbone_features(_model(tmp_path), _tensor())
    assert all(info["after"] is None and info["w"] is None for info in stock.values())


def test_reductions():
    f = torch.randn(8, 5, 6, dtype=torch.float64)
    mean, _ = reduce_feature_map(f, "mean")
    np.testing.assert_allclose(mean, f.mean(0).numpy())
    pca, basis = reduce_feature_map(f, "pca")
    assert pca.shape == (5, 6) and abs(np.linalg.norm(basis[1].numpy()) - 1) < 1e-9
    # The variance of the projection is the largest eigenvalue of the channel covariance.
    x = f.reshape(8, -1).numpy()
    cov = np.cov(x, bias=True)
    assert pca.var() == pytest.approx(np.linalg.eigvalsh(cov)[-1], rel=1e-6)
    same, _ = reduce_feature_map(f, "pca", basis)
    np.testing.assert_allclose(same, pca)
    with pytest.raises(ValueError, match="'mean' or 'pca'"):
        reduce_feature_map(f, "max")


def test_layout_read_from_checkpoint(files):
    _, paths = files
    assert wnlb_layout_of_checkpoint(paths["wnlb"]) == {"stages": ["res2", "res3", "res4", "res5"], "mode": None}
    assert wnlb_layout_of_checkpoint(paths["stock"])["stages"] == []


def test_tool_writes_the_grid(files, tmp_path, capsys):
    image, paths = files
    spec = importlib.util.spec_from_file_location("vis_tool", os.path.join(ROOT, "tools", "visualize_features.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as e:
        tool.main(["--help"])
    assert e.value.code == 0
    out = str(tmp_path / "grid.png")
    rc = tool.main(["--input", image, "--config-file", DEMO_CONFIG, "--weights", f"pretrained={paths['stock']}",
                    f"wnlb={paths['wnlb']}", "--low-light", "lv2021", "--reduce", "pca", "--panel-size", "1.0",
                    "--dpi", "60", "--output", out, "--opts"] + SMALL)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wnlb res3: w = 0.4000" in printed
    pic = cv2.imread(out)
    # 2 rows; columns: input + 4 stages x (before, after) = 9; panels 1 in, titles 0.45 in, title 0.4 in.
    assert pic.shape[:2] == (round((2 * 1.45 + 0.4) * 60), 9 * 60)
    assert pic.std() > 20  # not a blank or constant picture
    # The wNLB row's before/after panels differ (w != 0); the stock row has no 'after' panels.
    row_h = 1.45 * 60
    top = 0.4 * 60
    y0, y1 = int(top + row_h + 0.3 * 60), int(top + 2 * row_h - 10)
    before, after = pic[y0:y1, 3 * 60 + 10:4 * 60 - 10], pic[y0:y1, 4 * 60 + 10:5 * 60 - 10]
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 5
    stock_after = pic[int(top + 0.3 * 60):int(top + row_h - 10), 4 * 60 + 10:5 * 60 - 10]
    assert stock_after.std() < before.std()  # "no block": nearly white


def test_grid_columns_and_errors(files, tmp_path, capsys):
    feats = {"res4": {"before": torch.zeros(1), "after": None}}
    assert grid_columns([("a", None, feats)]) == [("input", None), ("res4", "before")]
    image, paths = files
    spec = importlib.util.spec_from_file_location("vis_tool2", os.path.join(ROOT, "tools", "visualize_features.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--input", image, "--config-file", DEMO_CONFIG, "--weights", "x=/nonexistent.pth",
                      "--output", str(tmp_path / "g.png")]) == 1
    assert "x=/nonexistent.pth" in capsys.readouterr().err
    assert tool.main(["--input", str(tmp_path / "none.png"), "--config-file", DEMO_CONFIG,
                      "--weights", f"a={paths['stock']}", "--output", str(tmp_path / "g.png"), "--opts"] + SMALL) == 1
    assert tool.main(["--input", image, "--weights", "noeq"]) == 1


def test_tool_with_solov2_checkpoint(files, tmp_path, capsys):
    """The feature grid of a wNLB SOLOv2 checkpoint (same backbone, other meta-architecture)."""
    image, _ = files
    config = os.path.join(ROOT, "configs", "demo", "SOLOv2-Demo-R18-FPN.yaml")
    cfg = setup_cfg(config, SMALL + WNLB + ["OUTPUT_DIR", str(tmp_path)])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for block in model.backbone.bottom_up.wnlb.values():
            block.fusion_weight.fill_(0.25)
    ckpt = str(tmp_path / "solo.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    spec = importlib.util.spec_from_file_location("vis_tool3", os.path.join(ROOT, "tools", "visualize_features.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / "solo_grid.png")
    assert tool.main(["--input", image, "--config-file", config, "--weights", f"solov2={ckpt}", "--dpi", "40",
                      "--panel-size", "1.0", "--output", out, "--opts"] + SMALL) == 0
    assert "solov2 res3: w = 0.2500" in capsys.readouterr().out
    assert cv2.imread(out).shape[1] == 9 * 40  # input + 4 stages x (before, after)
