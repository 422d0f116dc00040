"""The supervised enhancers' (dark, clean) pairs: the clean image is the photo, the dark one its degradation."""

import os

import cv2
import numpy as np
import pytest

from wnlb_d2.data.synthesis import build_pipeline, eval_rng
from wnlb_d2.enhance.training_pairs import load_training_pairs


def _write(folder, name, seed):
    rng = np.random.default_rng(seed)
    img = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    path = os.path.join(folder, name)
    cv2.imwrite(path, img)
    return path, img


def test_pairs_are_the_photo_and_its_seeded_degradation(tmp_path):
    p1, img1 = _write(tmp_path, "a.png", 1)
    p2, _ = _write(tmp_path, "b.png", 2)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    pipe = build_pipeline("lv2021")
    dark, clean, failed = load_training_pairs([p1, str(bad), p2], pipe, size=16, seed=3, progress=False)
    assert dark.shape == clean.shape == (2, 3, 16, 16) and failed == [str(bad)]
    rgb = img1[:, :, ::-1]
    expect_clean = cv2.resize(rgb, (16, 16), interpolation=cv2.INTER_AREA)
    low, _ = pipe(np.ascontiguousarray(rgb), eval_rng(3, "a.png"), "RGB")
    expect_dark = cv2.resize(low, (16, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal((clean[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), expect_clean)
    np.testing.assert_array_equal((dark[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), expect_dark)
    assert dark.mean() < clean.mean()
    again, _, _ = load_training_pairs([p1, p2], pipe, size=16, seed=3, progress=False)
    assert (again == dark).all()


def test_pairs_refuse_no_pipeline_and_unreadable_sets(tmp_path):
    with pytest.raises(ValueError, match="pipeline is required"):
        load_training_pairs([], None)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match="None of the 1"):
        load_training_pairs([str(bad)], build_pipeline("lv2021"), progress=False)


def test_registered_pairs_train_a_paired_enhancer_on_a_dark_set_with_a_clean_counterpart(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from helpers import make_cfg
    from wnlb_d2.enhance.retinexformer import RetinexFormerEnhancer
    from wnlb_d2.enhance.trainable import train_enhancer_on_dataset
    from wnlb_d2.enhance.training_pairs import load_registered_pairs

    pipe = build_pipeline("lv2021")
    clean_records, dark_records = [], []
    for i in range(4):
        path, img = _write(tmp_path, f"c{i}.png", i)
        dark_path = str(tmp_path / f"d{i}.png")
        cv2.imwrite(dark_path, pipe(img, eval_rng(0, i), "BGR")[0])
        clean_records.append({"file_name": path, "image_id": i, "height": 40, "width": 56})
        dark_records.append({"file_name": dark_path, "image_id": i, "height": 40, "width": 56})
    DatasetCatalog.register("pairs_test_clean", lambda: clean_records)
    DatasetCatalog.register("pairs_test_dark", lambda: dark_records)
    DatasetCatalog.register("pairs_test_dark_alone", lambda: dark_records)
    MetadataCatalog.get("pairs_test_dark").set(clean_counterpart="pairs_test_clean")
    try:
        pairs = list(zip(dark_records, clean_records))
        dark, clean, failed = load_registered_pairs(pairs, size=16, progress=False)
        assert dark.shape == clean.shape == (4, 3, 16, 16) and not failed
        expect = cv2.resize(cv2.imread(dark_records[2]["file_name"])[:, :, ::-1], (16, 16), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal((dark[2].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), expect)
        assert dark.mean() < clean.mean()
        out = str(tmp_path / "w" / "retinexformer.pth")
        train_enhancer_on_dataset("retinexformer", "pairs_test_dark", make_cfg(), out, degrade=False, iters=2,
                                  size=64, progress=False)
        enhanced = RetinexFormerEnhancer(weights=out)(cv2.imread(dark_records[0]["file_name"]))
        assert enhanced.shape == (40, 56, 3)
        with pytest.raises(ValueError, match="retinexformer trains on paired clean and dark images: "
                                             "pairs_test_dark_alone: no clean counterpart"):
            train_enhancer_on_dataset("retinexformer", "pairs_test_dark_alone", make_cfg(), out, degrade=False,
                                      iters=2, progress=False)
    finally:
        for name in ("pairs_test_clean", "pairs_test_dark", "pairs_test_dark_alone"):
            DatasetCatalog.remove(name)
        MetadataCatalog.remove("pairs_test_dark")
