"""Feature denoising as a number: the NFE and the non-local share on hand-made maps, the clean
counterparts of each kind of test set, and both numbers of a real (tiny) detectron2 model."""

import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from engine_helpers import DEMO_CONFIG, register_tiny_demo, tiny_opts

from wnlb_d2.analysis import NoCleanCounterpartError, clean_pairs, nonlocal_share, normalised_feature_error, \
    summarise_per_image
from wnlb_d2.analysis.detectron2_features import detectron2_feature_errors


def test_nfe_on_hand_made_maps():
    clean = torch.tensor([[[0.0, 2.0]], [[10.0, 14.0]]])  # channel means 1 and 12: spread 1+1 + 4+4 = 10
    assert normalised_feature_error(clean, clean) == 0.0
    dark = clean + torch.tensor([[[1.0, -1.0]], [[0.0, 2.0]]])  # squared error 1 + 1 + 0 + 4 = 6
    assert normalised_feature_error(dark, clean) == pytest.approx(6 / 10)
    # a constant offset per channel is an error (the dark map is not the clean one) ...
    assert normalised_feature_error(clean + 1.0, clean) == pytest.approx(4 / 10)
    # ... and a constant clean map has nothing to normalise by
    assert math.isnan(normalised_feature_error(torch.ones(2, 1, 2), torch.zeros(2, 1, 2)))
    with pytest.raises(ValueError, match=r"\(2, 1, 2\) and \(2, 2, 1\)"):
        normalised_feature_error(clean, clean.reshape(2, 2, 1))


def test_nonlocal_share_on_hand_made_maps():
    x = torch.tensor([[[2.0, 0.0]]])  # ||x|| = 2
    term = torch.tensor([[[0.0, 4.0]]])  # ||W_z(y)|| = 4
    assert nonlocal_share(x, term, "weighted", 0.25) == pytest.approx(0.25 * 4 / (0.75 * 2))
    assert nonlocal_share(x, term, "weighted", -0.5) == pytest.approx(0.5 * 4 / (1.5 * 2))
    assert nonlocal_share(x, term, "residual") == pytest.approx(2.0)
    assert nonlocal_share(x, torch.zeros_like(term), "weighted", 0.3) == 0.0  # a path that never learned
    assert nonlocal_share(x, term, "weighted", 1.0) == math.inf
    with pytest.raises(ValueError, match="fusion"):
        nonlocal_share(x, term, "sum")


def test_summary_over_images_is_deterministic_for_a_seed():
    values = [0.1, 0.5, 0.2, float("nan"), 0.9, 0.3]
    a, b = summarise_per_image(values, 500, seed=3), summarise_per_image(values, 500, seed=3)
    assert a == b and a["n"] == 5 and a["mean"] == pytest.approx(np.mean([0.1, 0.5, 0.2, 0.9, 0.3]))
    assert a["ci95"][0] < a["mean"] < a["ci95"][1]
    assert summarise_per_image([0.4])["n"] == 1 and all(math.isnan(x) for x in summarise_per_image([0.4])["ci95"])


def test_clean_counterparts_of_each_kind_of_test_set(tmp_path):
    prefix = register_tiny_demo(str(tmp_path / "demo"), prefix="nfe_pairs")
    # an offline synthetic copy: its normal-light twin shares the image id (and the image size)
    pairs = clean_pairs(f"{prefix}_val_lowlight", degraded_on_the_fly=False)
    assert len(pairs) == len(DatasetCatalog.get(f"{prefix}_val"))
    for dark, clean in pairs:
        assert dark["image_id"] == clean["image_id"] and dark["file_name"] != clean["file_name"]
        assert "lowlight" in dark["file_name"] and "lowlight" not in clean["file_name"]
    # degraded on the fly: each image is its own twin
    assert [d is c for d, c in clean_pairs(f"{prefix}_val", degraded_on_the_fly=True, num_images=2)] == [True, True]
    # no counterpart: said, not a silent zero
    with pytest.raises(NoCleanCounterpartError, match=f"{prefix}_val: no clean counterpart"):
        clean_pairs(f"{prefix}_val", degraded_on_the_fly=False)
    # LIS: dark image 2n pairs with normal image 2n - 1
    DatasetCatalog.register("nfe_lis_dark", lambda: [{"file_name": f"/x/JPEGImages/{n}.JPG", "image_id": n}
                                                     for n in (2, 4, 8)])
    DatasetCatalog.register("nfe_lis_normal", lambda: [{"file_name": f"/x/JPEGImages/{n}.png", "image_id": n}
                                                       for n in (1, 3, 5)])
    MetadataCatalog.get("nfe_lis_dark").set(clean_counterpart="nfe_lis_normal", clean_pairing="lis")
    got = [(d["image_id"], c["image_id"]) for d, c in clean_pairs("nfe_lis_dark", degraded_on_the_fly=False)]
    assert got == [(2, 1), (4, 3)]  # 8 has no twin 7


def test_registered_low_light_sets_name_their_twins():
    import wnlb_d2  # noqa: F401  (registers the builtin datasets)

    assert MetadataCatalog.get("coco_2017_val_lowlight").clean_counterpart == "coco_2017_val"
    assert MetadataCatalog.get("coco_2017_train_lowlight").clean_counterpart == "coco_2017_train"
    assert MetadataCatalog.get("lis_test_dark").clean_counterpart == "lis_test_normal"
    assert MetadataCatalog.get("lis_raw_train_dark").clean_counterpart == "lis_raw_train_normal"
    assert MetadataCatalog.get("lis_test_dark").clean_pairing == "lis"
    assert MetadataCatalog.get("lis_test_normal").get("clean_counterpart", None) is None
    assert MetadataCatalog.get("wnlb_demo_val_lowlight").clean_counterpart == "wnlb_demo_val"


@pytest.fixture(scope="module")
def wnlb_model(tmp_path_factory):
    from wnlb_d2.engine import LowLightTrainer
    from wnlb_d2.engine.setup import setup_cfg

    root = tmp_path_factory.mktemp("nfe_demo")
    prefix = register_tiny_demo(str(root / "demo"), prefix="nfe_model")
    cfg = setup_cfg(DEMO_CONFIG, tiny_opts(str(root / "out"), prefix=prefix) + [
        "MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone", "MODEL.WNLB.STAGES", "('res3', 'res5')",
        "MODEL.WNLB.WEIGHT_INIT", "0.25"])
    torch.manual_seed(0)
    return cfg, LowLightTrainer.build_model(cfg), prefix


def test_feature_errors_of_a_detectron2_model(wnlb_model):
    cfg, model, prefix = wnlb_model
    out = detectron2_feature_errors(cfg, model, f"{prefix}_val", low_light=True, num_images=3)
    assert out["images"] == 3
    assert set(out["nfe"]) == {"res2", "res3", "res4", "res5", "res3.after", "res5.after",
                               "p2", "p3", "p4", "p5", "p6"}
    p6 = out["nfe"].pop("p6")  # 1 x 1 at 64 px: a single position has no spread to normalise by
    assert len(p6) == 3 and all(math.isnan(x) for x in p6)
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in out["nfe"].values())
    # At initialisation W_z's norm is zero: the non-local term is exactly 0, the block only
    # rescales by (1 - w), which leaves the NFE unchanged (both maps scale alike).
    assert out["nonlocal_share"] == {"res3": [0.0] * 3, "res5": [0.0] * 3}
    np.testing.assert_allclose(out["nfe"]["res3.after"], out["nfe"]["res3"], rtol=1e-5)


def test_a_learned_non_local_path_has_a_share_equal_to_its_norms(wnlb_model):
    cfg, model, prefix = wnlb_model
    block = model.backbone.bottom_up.wnlb["res3"]
    with torch.no_grad():
        block.w_z.norm.weight.fill_(0.5)
    try:
        out = detectron2_feature_errors(cfg, model, f"{prefix}_val_lowlight", low_light=False, num_images=2)
        assert all(s > 0 for s in out["nonlocal_share"]["res3"]) and out["nonlocal_share"]["res5"] == [0.0, 0.0]
        # Hand computation on the first image: ||w W_z(y)|| / ||(1 - w) x|| from the block's parts.
        from wnlb_d2.analysis.detectron2_features import backbone_features
        from wnlb_d2.engine.image_stages import build_low_light_mapper

        record = DatasetCatalog.get(f"{prefix}_val_lowlight")[0]
        plain = cfg.clone()
        plain.defrost()
        plain.INPUT.LOW_LIGHT.ENABLED = False  # the copy is dark already
        image = build_low_light_mapper(plain, is_train=False)(dict(record))["image"]
        model.eval()
        features, _ = backbone_features(model, image)
        x = features["res3"][None]
        with torch.no_grad():
            z = block(x)
        w = float(block.fusion_weight.detach())
        wz_y = (z - (1 - w) * x) / w
        assert out["nonlocal_share"]["res3"][0] == pytest.approx(float(w * wz_y.norm() / ((1 - w) * x.norm())),
                                                                  rel=1e-4)
        # and the block's output moved away from the rescaled input: res3.after != res3
        assert out["nfe"]["res3.after"][0] != pytest.approx(out["nfe"]["res3"][0], rel=1e-6)
    finally:
        model.train()
        with torch.no_grad():
            block.w_z.norm.weight.zero_()
