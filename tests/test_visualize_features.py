"""tools/visualize_features.py and wnlb_d2.visualization.features: hooks, reductions, the grid picture."""

import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from wnlb_d2.checkpoint import wnlb_layout_of_checkpoint
from wnlb_d2.analysis.feature_error import normalised_feature_error
from wnlb_d2.visualization.features import capture_backbone_features, error_map, grid_columns, reduce_feature_map
from wnlb_d2.engine.setup import setup_cfg
from helpers import load_script

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
    tool = _tool("vis_tool")
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
    # --low-light: the clean counterpart is the undegraded input; its NFE per stage is printed.
    assert "pretrained res3: NFE against the clean image " in printed
    assert "wnlb res3: NFE against the clean image " in printed and ", after block " in printed
    pic = cv2.imread(out)
    # 2 rows; columns: input, clean input + 4 stages x (before, after, clean, error) = 18; panels
    # 1 in, titles 0.45 in, title 0.4 in.
    assert pic.shape[:2] == (round((2 * 1.45 + 0.4) * 60), 18 * 60)
    assert pic.std() > 20  # not a blank or constant picture
    # The wNLB row's res3 before/after panels (columns 6, 7) differ (w != 0); the stock row has no 'after'.
    before, after = _panel(pic, 1, 6), _panel(pic, 1, 7)
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 5
    assert _panel(pic, 0, 7).std() < before.std()  # "no block": nearly white
    # The clean input differs from the dark one; the error maps (column 9) show an error.
    assert np.abs(_panel(pic, 0, 0).astype(int) - _panel(pic, 0, 1).astype(int)).mean() > 5
    for row in (0, 1):
        assert _panel(pic, row, 9).std() > 5


def _panel(pic, row, col, dpi=60, panel=1.0, title=0.4):
    """The image area of one panel of a grid (see plot_feature_grid's layout), a few pixels inside."""
    top = int((title + row * (panel + 0.45) + 0.5) * dpi)
    return pic[top + 5:top + int((panel - 0.1) * dpi) - 5, col * dpi + 8:(col + 1) * dpi - 8]


def _tool(name):
    return load_script("tools/visualize_features.py", name)


def test_error_map_on_hand_made_maps():
    clean = torch.tensor([[[0.0, 2.0]], [[10.0, 14.0]]])  # spread 10 over 2 positions: 5 a position
    dark = clean + torch.tensor([[[1.0, -1.0]], [[0.0, 2.0]]])  # squared distances 1 and 1 + 4
    np.testing.assert_allclose(error_map(dark, clean), [[(1 / 5) ** 0.5, (5 / 5) ** 0.5]])
    # Its mean square is the NFE, and an identical pair is zero everywhere.
    assert (error_map(dark, clean) ** 2).mean() == pytest.approx(normalised_feature_error(dark, clean))
    f = torch.randn(6, 4, 5)
    assert not error_map(f, f).any()
    with pytest.raises(ValueError, match=r"\(2, 1, 2\) and \(2, 2, 1\)"):
        error_map(clean, clean.reshape(2, 2, 1))


def test_grid_columns_with_a_clean_counterpart():
    block = {"before": torch.zeros(1), "after": torch.zeros(1)}
    plain = {"before": torch.zeros(1), "after": None}
    entries = [("a", None, {"res3": plain, "res4": plain}, None),
               ("b", None, {"res3": block, "res4": plain}, {"image": None, "features": {}})]
    assert grid_columns(entries) == [("input", None), ("clean input", None),
                                     ("res3", "before"), ("res3", "after"), ("res3", "clean"), ("res3", "error"),
                                     ("res4", "before"), ("res4", "clean"), ("res4", "error")]
    assert grid_columns(entries[:1]) == [("input", None), ("res3", "before"), ("res4", "before")]


def test_panel_titles_give_the_nfe(tmp_path, monkeypatch):
    import matplotlib.axes

    from wnlb_d2.visualization.features import plot_feature_grid

    model = _model(tmp_path, WNLB, w=0.4)
    dark_tensor = _tensor()
    clean_tensor = torch.as_tensor(np.random.default_rng(2).integers(0, 255, (3, 64, 64)), dtype=torch.uint8)
    dark, clean = capture_backbone_features(model, dark_tensor), capture_backbone_features(model, clean_tensor)
    titles, shown = [], []
    set_title, imshow = matplotlib.axes.Axes.set_title, matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, label, *a, **k: (titles.append(label), set_title(self, label, *a, **k))[1])
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow",
                        lambda self, x, *a, **k: (shown.append(np.asarray(x)), imshow(self, x, *a, **k))[1])
    rgb = np.zeros((64, 64, 3), np.uint8)
    size = plot_feature_grid([("wnlb", rgb, dark, {"image": rgb, "features": clean})], str(tmp_path / "t.png"),
                             panel_inches=1.0, dpi=30)
    assert size["cols"] == 18 and len(titles) == 18 and len(shown) == 18
    nfe_before = normalised_feature_error(dark["res3"]["before"], clean["res3"]["before"])
    nfe_after = normalised_feature_error(dark["res3"]["after"], clean["res3"]["after"])
    assert abs(nfe_before - nfe_after) > 1e-3  # the block (w = 0.4, W_z not zero) changed the error
    assert f"res3 before block\n8x8, NFE {nfe_before:.3f}" in titles
    assert f"res3 after wNLB\nw = 0.400, NFE {nfe_after:.3f}" in titles
    # The error map is of the stage's final output: after the block.
    assert f"res3 |dark - clean|\nNFE {nfe_after:.3f}" in titles and "res3 clean\nafter block" in titles
    drawn = shown[titles.index(f"res3 |dark - clean|\nNFE {nfe_after:.3f}")]
    np.testing.assert_allclose(drawn, error_map(dark["res3"]["after"], clean["res3"]["after"]))


def test_identical_dark_and_clean_images_give_zero_error_maps(files, tmp_path, capsys):
    image, paths = files
    out = str(tmp_path / "same.png")
    assert _tool("vis_tool_same").main(["--input", image, "--clean-input", image, "--config-file", DEMO_CONFIG,
                                        "--weights", f"wnlb={paths['wnlb']}", "--panel-size", "1.0", "--dpi", "60",
                                        "--output", out, "--opts"] + SMALL) == 0
    printed = capsys.readouterr().out
    for stage in ("res2", "res3", "res4", "res5"):
        assert f"wnlb {stage}: NFE against the clean image 0.0000, after block 0.0000" in printed
    pic = cv2.imread(out)
    assert pic.shape[1] == 18 * 60
    for col in (5, 9, 13, 17):  # every stage's error map: uniformly the colour map's zero (near black)
        panel = _panel(pic, 0, col).reshape(-1, 3)
        assert panel.max() < 30 and panel.std(axis=0).max() < 1, col
    assert _panel(pic, 0, 2).std() > 5  # the features themselves are drawn


def test_without_a_clean_image_the_error_maps_are_skipped_in_one_line(files, tmp_path):
    import logging

    class Keep(logging.Handler):
        # Its own handler: detectron2's setup_logger stops propagation at "wnlb_d2", out of caplog's reach.
        def __init__(self):
            super().__init__(logging.INFO)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    image, paths = files
    out = str(tmp_path / "plain.png")
    tool = _tool("vis_tool_plain")
    tool_logger, keep = logging.getLogger("wnlb_d2.visualize_features"), Keep()
    tool_logger.addHandler(keep)
    try:
        assert tool.main(["--input", image, "--config-file", DEMO_CONFIG, "--weights", f"stock={paths['stock']}",
                          "--panel-size", "1.0", "--dpi", "60", "--output", out, "--opts"] + SMALL) == 0
    finally:
        tool_logger.removeHandler(keep)
    said = [m for m in keep.messages if "clean counterpart" in m]
    assert len(said) == 1 and "\n" not in said[0] and "skipped" in said[0] and "--clean-input" in said[0]
    assert cv2.imread(out).shape[1] == 5 * 60  # today's picture: input + 4 stages, no clean or error columns


def test_bad_clean_inputs(files, tmp_path, capsys):
    image, paths = files
    tool = _tool("vis_tool_bad_clean")
    other = str(tmp_path / "other.png")
    cv2.imwrite(other, np.zeros((32, 48, 3), np.uint8))
    base = ["--input", image, "--config-file", DEMO_CONFIG, "--weights", f"stock={paths['stock']}",
            "--output", str(tmp_path / "g.png")]
    assert tool.main(base + ["--clean-input", other, "--opts"] + SMALL) == 1
    err = capsys.readouterr().err
    assert "--clean-input" in err and "other.png is 48x32 px" in err and err.count("\n") == 1
    assert tool.main(base + ["--clean-input", image, "--low-light", "lv2021", "--opts"] + SMALL) == 1
    assert "--clean-input and --low-light" in capsys.readouterr().err
    assert tool.main(base + ["--clean-input", str(tmp_path / "none.png"), "--opts"] + SMALL) == 1
    assert "none.png" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "g.png")


def test_grid_columns_and_errors(files, tmp_path, capsys):
    feats = {"res4": {"before": torch.zeros(1), "after": None}}
    assert grid_columns([("a", None, feats)]) == [("input", None), ("res4", "before")]
    image, paths = files
    tool = _tool("vis_tool2")
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
    tool = _tool("vis_tool3")
    out = str(tmp_path / "solo_grid.png")
    assert tool.main(["--input", image, "--config-file", config, "--weights", f"solov2={ckpt}", "--dpi", "40",
                      "--panel-size", "1.0", "--output", out, "--opts"] + SMALL) == 0
    assert "solov2 res3: w = 0.2500" in capsys.readouterr().out
    assert cv2.imread(out).shape[1] == 9 * 40  # input + 4 stages x (before, after)
