"""Two-stage baselines: classical enhancers, Zero-DCE++ (layout, losses, training), mapper, runner rows."""

import json
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from torch import nn

import wnlb_d2
from wnlb_d2.data import build_pipeline, eval_rng
from wnlb_d2.engine.image_stages import build_low_light_mapper
from wnlb_d2.enhance import (ZERO_DCE_KEYS, Clahe, GammaCorrection, HistogramEqualization,
                             NonLocalMeans, ZeroDCEEnhancer, ZeroDCEPP, ZeroDCEWeightsError, build_enhancer,
                             build_enhancer_from_config, color_constancy_loss,
                             exposure_control_loss, illumination_smoothness_loss, load_zero_dce_weights,
                             spatial_consistency_loss, train_zero_dce)
from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "Base-Demo-R18-FPN.yaml")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


def _load_tool(name):
    return load_script(f"tools/{name}.py")


def _dark_image(seed=0, h=48, w=64):
    """A dark, noisy, coloured BGR test image with some structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([20 + 15 * np.sin(xx / 5.0), 30 + 20 * (yy > h // 2), 15 + 10 * np.cos(yy / 4.0)], axis=2)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def _luma(bgr):
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)


# ---------------------------------------------------------------- classical enhancers

@pytest.mark.parametrize("name", ["gamma", "clahe", "histeq", "nlm", "nlm+clahe", "gamma+nlm"])
def test_enhancers_keep_shape_and_brighten_or_denoise(name):
    img = _dark_image()
    out = build_enhancer(name)(img)
    assert out.shape == img.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    if name != "nlm":
        assert _luma(out).mean() > _luma(img).mean() + 10  # all but pure denoising brighten a dark image
    # Deterministic: the same image gives the same result.
    np.testing.assert_array_equal(out, build_enhancer(name)(img))


def test_gamma_values():
    img = np.full((4, 4, 3), 64, np.uint8)
    out = GammaCorrection(value=0.5)(img)
    assert (out == round(255 * (64 / 255) ** 0.5)).all()
    auto = GammaCorrection(target_mean=0.5)(_dark_image())
    assert abs(_luma(auto).mean() / 255 - 0.5) < 0.08
    black = np.zeros((8, 8, 3), np.uint8)
    np.testing.assert_array_equal(GammaCorrection()(black), black)  # no gamma maps 0 to a mean of 0.5


def test_channel_order_is_respected():
    bgr = _dark_image()
    for enh in (Clahe(), HistogramEqualization(), NonLocalMeans(h=5.0), GammaCorrection()):
        np.testing.assert_array_equal(enh(bgr[:, :, ::-1].copy(), "RGB"), enh(bgr, "BGR")[:, :, ::-1])


def test_histeq_spreads_luma_and_nlm_removes_noise():
    out = HistogramEqualization()(_dark_image())
    y = cv2.cvtColor(out, cv2.COLOR_BGR2YCrCb)[:, :, 0]
    assert y.min() < 20 and y.max() > 235
    flat = np.full((40, 40, 3), 100.0)
    noisy = np.clip(flat + np.random.default_rng(1).normal(0, 8, flat.shape), 0, 255).astype(np.uint8)
    assert NonLocalMeans(h=15.0, h_color=15.0)(noisy).astype(float).std() < 0.5 * noisy.astype(float).std()


def test_chain_is_sequential():
    img = _dark_image()
    np.testing.assert_array_equal(build_enhancer("nlm+clahe")(img), Clahe()(NonLocalMeans()(img)))
    assert build_enhancer("nlm+clahe").name == "nlm+clahe"
    assert build_enhancer("none") is None


def _cfg(**enhancer):
    cfg = get_cfg()
    wnlb_d2.add_wnlb_config(cfg)
    for k, v in enhancer.items():
        node, _, key = k.rpartition("__")
        (cfg.INPUT.ENHANCER[node] if node else cfg.INPUT.ENHANCER)[key] = v
    return cfg


def test_config_errors_name_the_key():
    assert build_enhancer_from_config(_cfg()) is None
    with pytest.raises(ValueError, match=r"INPUT.ENHANCER.CLAHE.CLIP_LIMIT"):
        build_enhancer_from_config(_cfg(NAME="nlm+clahe", CLAHE__CLIP_LIMIT=-1.0))
    with pytest.raises(ValueError, match=r"INPUT.ENHANCER.NLM.TEMPLATE_WINDOW_SIZE.*odd"):
        build_enhancer_from_config(_cfg(NAME="nlm", NLM__TEMPLATE_WINDOW_SIZE=4))
    with pytest.raises(ValueError, match=r"unknown enhancer\(s\) \['retinex'\].*nlm\+clahe"):
        build_enhancer_from_config(_cfg(NAME="retinex+clahe"))
    with pytest.raises(ValueError, match=r"INPUT.ENHANCER.ZERO_DCE.WEIGHTS.*train_zero_dce"):
        build_enhancer_from_config(_cfg(NAME="zero_dce"))
    enh = build_enhancer_from_config(_cfg(NAME="gamma+clahe", CLAHE__CLIP_LIMIT=3.0))
    assert enh.enhancers[1].clip_limit == 3.0
    with pytest.raises(ValueError, match="uint8 array of shape"):
        Clahe()(np.zeros((4, 4), np.uint8))


# ---------------------------------------------------------------- Zero-DCE++

class _AuthorsBlock(nn.Module):
    """The authors' CSDN_Tem, written independently here to produce a state dict in their layout."""

    def __init__(self, cin, cout):
        super().__init__()
        self.depth_conv = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin)
        self.point_conv = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x):
        return self.point_conv(self.depth_conv(x))


class _AuthorsNet(nn.Module):
    """enhance_net_nopool of Zero-DCE++ (model.py), as published."""

    def __init__(self, scale_factor):
        super().__init__()
        self.scale_factor = scale_factor
        c = 32
        for i, (cin, cout) in enumerate([(3, c), (c, c), (c, c), (c, c), (2 * c, c), (2 * c, c), (2 * c, 3)], 1):
            setattr(self, f"e_conv{i}", _AuthorsBlock(cin, cout))

    def forward(self, x):
        s = self.scale_factor
        xd = x if s == 1 else F.interpolate(x, scale_factor=1 / s, mode="bilinear")
        x1 = F.relu(self.e_conv1(xd))
        x2 = F.relu(self.e_conv2(x1))
        x3 = F.relu(self.e_conv3(x2))
        x4 = F.relu(self.e_conv4(x3))
        x5 = F.relu(self.e_conv5(torch.cat([x3, x4], 1)))
        x6 = F.relu(self.e_conv6(torch.cat([x2, x5], 1)))
        r = torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))
        if s != 1:
            r = nn.UpsamplingBilinear2d(scale_factor=s)(r)
        for _ in range(8):
            x = x + r * (torch.pow(x, 2) - x)
        return x, r


@pytest.fixture(scope="module")
def authors_weights(tmp_path_factory):
    torch.manual_seed(3)
    net = _AuthorsNet(1)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # stronger curves than at initialisation, so a wrong wiring shows
    path = str(tmp_path_factory.mktemp("zdce") / "Epoch99.pth")
    torch.save(net.state_dict(), path)
    return net, path


def test_authors_layout_loads_and_matches(authors_weights, tmp_path):
    net, path = authors_weights
    assert sorted(net.state_dict()) == sorted(ZERO_DCE_KEYS)
    x = torch.rand(1, 3, 32, 40) * 0.3
    for scale in (1, 4):
        ours = load_zero_dce_weights(ZeroDCEPP(scale_factor=scale), path).eval()
        net.scale_factor = scale
        with torch.no_grad():
            (e1, a1), (e2, a2) = ours(x), net(x)
        torch.testing.assert_close(e1, e2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a1, a2, rtol=1e-5, atol=1e-6)
    # DataParallel's "module." prefix and a {"state_dict": ...} wrapper load too.
    wrapped = str(tmp_path / "wrapped.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, wrapped)
    load_zero_dce_weights(ZeroDCEPP(), wrapped)
    # The enhancer: uint8 in, uint8 out, the network's result on the RGB image.
    bgr = _dark_image(h=32, w=40)
    out = ZeroDCEEnhancer(weights=path)(bgr)
    rgb = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    net.scale_factor = 1
    with torch.no_grad():
        ref = (net(rgb)[0][0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()[:, :, ::-1]
    np.testing.assert_array_equal(out, ref)


def test_wrong_weights_are_named(tmp_path):
    bad = str(tmp_path / "other.pth")
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, bad)
    with pytest.raises(ZeroDCEWeightsError, match=r"other.pth.*missing \['e_conv1"):
        load_zero_dce_weights(ZeroDCEPP(), bad)
    with pytest.raises(ZeroDCEWeightsError, match="not found"):
        load_zero_dce_weights(ZeroDCEPP(), str(tmp_path / "missing.pth"))
    narrow = str(tmp_path / "narrow.pth")
    torch.save(ZeroDCEPP(channels=16).state_dict(), narrow)
    with pytest.raises(ZeroDCEWeightsError, match="wrong shapes"):
        load_zero_dce_weights(ZeroDCEPP(), narrow)


def test_zero_reference_losses():
    grey = torch.full((2, 3, 32, 32), 0.6)
    assert exposure_control_loss(grey).item() == pytest.approx(0.0, abs=1e-12)
    assert exposure_control_loss(grey * 0.5).item() == pytest.approx(0.09, rel=1e-5)
    assert color_constancy_loss(grey).item() < 1e-5
    tinted = grey.clone()
    tinted[:, 0] = 0.2
    assert color_constancy_loss(tinted).item() == pytest.approx((2 * 0.4 ** 4) ** 0.5, rel=1e-4)
    low = torch.rand(2, 3, 32, 32) * 0.2
    assert spatial_consistency_loss(low, low).item() == 0.0
    assert spatial_consistency_loss(low, low * 3).item() > 0.0
    assert illumination_smoothness_loss(torch.full((2, 3, 8, 8), 0.3)).item() == 0.0
    assert illumination_smoothness_loss(torch.rand(2, 3, 8, 8)).item() > 0.0


def test_training_brightens_dark_images():
    low = torch.stack([torch.from_numpy(_dark_image(s, 32, 32)[:, :, ::-1].copy()).permute(2, 0, 1)
                       for s in range(6)]).float() / 255
    model, history = train_zero_dce(low, iters=40, batch_size=4, crop=24, lr=3e-3, progress=False)
    assert history[-1]["total"] < 0.5 * history[0]["total"]
    with torch.no_grad():
        enhanced, alpha = model(low)
    assert enhanced.mean() > low.mean() + 0.15 and alpha.abs().max() <= 1
    with pytest.raises(ValueError, match=r"crop must be 0 or in \[16, 32\]"):
        train_zero_dce(low, iters=1, crop=64, progress=False)


def test_train_tool_writes_the_authors_layout(tmp_path):
    folder = tmp_path / "low"
    folder.mkdir()
    for s in range(3):
        cv2.imwrite(str(folder / f"{s}.png"), _dark_image(s, 40, 40))
    (folder / "broken.png").write_bytes(b"not an image")
    out = str(tmp_path / "zdce.pth")
    tool = _load_tool("train_zero_dce")
    assert tool.main(["--images", str(folder), "--iters", "3", "--size", "32", "--crop", "16", "--batch-size", "2",
                      "--output", out]) == 0
    assert sorted(torch.load(out, weights_only=True)) == sorted(ZERO_DCE_KEYS)
    assert tool.main(["--images", str(tmp_path / "nothing"), "--output", out]) == 1
    with pytest.raises(SystemExit) as e:
        tool.main(["--help"])
    assert e.value.code == 0


# ---------------------------------------------------------------- data path and experiment rows

def _register_tiny(name, folder, n=2, size=64):
    """A registered COCO-style dataset of ``n`` images with one square each."""
    os.makedirs(folder, exist_ok=True)
    dicts = []
    for i in range(n):
        img = _dark_image(10 + i, size, size)
        cv2.rectangle(img, (16, 16), (44, 44), (40, 60, 30), -1)
        path = os.path.join(folder, f"{i}.png")
        cv2.imwrite(path, img)
        poly = [16.0, 16.0, 44.0, 16.0, 44.0, 44.0, 16.0, 44.0]
        dicts.append({"file_name": path, "image_id": i + 1, "height": size, "width": size,
                      "annotations": [{"bbox": [16, 16, 28, 28], "bbox_mode": BoxMode.XYWH_ABS,
                                       "category_id": 1, "segmentation": [poly], "iscrowd": 0}]})
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    MetadataCatalog.get(name).set(thing_classes=[f"c{i}" for i in range(6)], evaluator_type="coco")
    return dicts


def test_mapper_degrades_then_enhances(tmp_path):
    dicts = _register_tiny("wnlb_test_enhance_tiny", str(tmp_path / "imgs"))
    cfg = _cfg(NAME="gamma")
    cfg.INPUT.LOW_LIGHT.ENABLED = True
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 64
    mapper = build_low_light_mapper(cfg, is_train=False)
    assert [type(st).__name__ for st in mapper.image_stages] == ["Lv2021Pipeline", "EnhancerStage"]
    out = mapper(dicts[0])
    raw = cv2.imread(dicts[0]["file_name"])
    low, _ = build_pipeline("lv2021")(raw, eval_rng(0, 1), "BGR")
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), GammaCorrection()(low))
    assert out["low_light_params"]["enhancer"] == "gamma" and out["low_light_params"]["pipeline"] == "lv2021"
    # Enhancer without degradation (low-light data already): only the enhancer acts.
    cfg.INPUT.LOW_LIGHT.ENABLED = False
    out = build_low_light_mapper(cfg, is_train=False)(dicts[0])
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), GammaCorrection()(raw))
    # TEST False, or NAME none: no enhancer stage.
    cfg.INPUT.ENHANCER.TEST = False
    assert build_low_light_mapper(cfg, is_train=False).image_stages == []
    assert build_low_light_mapper(_cfg(), is_train=True).image_stages == []
    # The trainer's loaders use it.
    from wnlb_d2.engine import LowLightTrainer

    cfg.INPUT.ENHANCER.TEST = True
    cfg.DATALOADER.NUM_WORKERS = 0
    batch = next(iter(LowLightTrainer.build_test_loader(cfg, "wnlb_test_enhance_tiny")))
    np.testing.assert_array_equal(batch[0]["image"].permute(1, 2, 0).numpy(), GammaCorrection()(raw))


def test_experiment_adds_two_stage_rows(tmp_path, monkeypatch):
    _register_tiny("wnlb_test_enhance_exp", str(tmp_path / "imgs"))
    from detectron2.modeling import build_model

    from wnlb_d2.engine.setup import setup_cfg

    opts = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
            "DATALOADER.NUM_WORKERS", "0", "DATASETS.TRAIN", "('wnlb_test_enhance_exp',)",
            "DATASETS.TEST", "('wnlb_test_enhance_exp',)"]
    cfg = setup_cfg(DEMO_CONFIG, opts + ["OUTPUT_DIR", str(tmp_path / "ckpt")])
    torch.manual_seed(0)
    ckpt = str(tmp_path / "pretrained.pth")
    torch.save({"model": build_model(cfg).state_dict()}, ckpt)
    out = str(tmp_path / "exp")
    tool = _load_tool("run_experiment")
    argv = ["--config-file", DEMO_CONFIG, "--output", out, "--weights", ckpt,
            "--finetune-data", "wnlb_test_enhance_exp", "--test-data", "wnlb_test_enhance_exp",
            "--rows", "pretrained", "--seeds", "0", "1", "--enhancers", "nlm+clahe", "zero_dce", "retinexformer",
            "--zero-dce-iters", "2", "--enhancer-iters", "2", "--quality-images", "3", "--pictures", "0",
            "--low-light-train", "--low-light-test"] + opts
    assert tool.main(argv) == 0
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    rows = ("pretrained", "nlm+clahe+pretrained", "zero_dce+pretrained", "retinexformer+pretrained")
    for row in rows:
        assert set(results[row]) >= {"bbox", "segm"}, row
    # Enhancers trained here: once per seed, each evaluated, with a spread and paired differences.
    assert [(r["row"], r["seed"]) for r in results["two_stage_runs"]] == [
        ("zero_dce+pretrained", 0), ("zero_dce+pretrained", 1), ("retinexformer+pretrained", 0),
        ("retinexformer+pretrained", 1)]
    assert results["summary"]["retinexformer+pretrained"]["segm"]["AP"]["n"] == 2
    assert results["paired"]["retinexformer+pretrained-vs-pretrained"]["segm"]["AP"]["n"] == 2
    for seed in (0, 1):
        weights = results["meta"]["enhancer_weights"][f"retinexformer seed {seed}"]["retinexformer"]
        assert os.path.isfile(weights) and f"enhancer_retinexformer_seed{seed}" in weights
    assert "nlm+clahe" in results["meta"]["enhancer_weights"]  # no weights, one evaluation
    # Image quality beside the AP: the dark images ("pretrained") and every enhancer's output.
    assert set(results["image_quality"]) == set(rows)
    assert all(q["psnr"]["mean"] > 0 and -1 <= q["ssim"]["mean"] <= 1 for q in results["image_quality"].values())
    # A rerun takes the image quality from the pre-trained run's record: nothing is enhanced again.
    from wnlb_d2.experiment import runner

    def measured_again(*args, **kwargs):
        raise AssertionError("image quality measured again on a rerun")

    with monkeypatch.context() as m:
        m.setattr(runner, "_image_quality", measured_again)
        assert tool.main(argv) == 0
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["image_quality"] == results["image_quality"]
    assert results["meta"]["spec"]["enhancers"] == ["nlm+clahe", "zero_dce", "retinexformer"]
    with open(os.path.join(out, "results.md")) as f:
        text = f.read()
    lines = text.splitlines()
    table = lines[:lines.index("")] if "" in lines else lines
    assert [ln.split("|")[1].strip() for ln in table[2:]] == list(rows)
    assert "| retinexformer+pretrained | " in text.split("Image quality of what the detector sees")[1]
    assert os.path.getsize(os.path.join(out, "ap.png")) > 0
    from wnlb_d2.experiment import ExperimentSpec

    with pytest.raises(ValueError, match="enhancer 'retinexformer' is trained here on paired"):
        ExperimentSpec(config_file=DEMO_CONFIG, output_dir=out, test_data="x", finetune_data="x", weights="w",
                       enhancers=["retinexformer"]).validate()
    with pytest.raises(FileNotFoundError, match="retinexformer='nope.pth': no such file"):
        ExperimentSpec(config_file=DEMO_CONFIG, output_dir=out, test_data="x", finetune_data="x", weights="w",
                       enhancers=["retinexformer"], enhancer_weights={"retinexformer": "nope.pth"}).validate()
    with pytest.raises(ValueError, match="unknown enhancer"):
        ExperimentSpec(config_file=DEMO_CONFIG, output_dir=out, test_data="x", finetune_data="x", weights="w",
                       enhancers=["sharpen"]).validate()
