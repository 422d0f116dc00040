"""LowLightDatasetMapper: image-only degradation, before augmentation, reproducible evaluation,
fresh training draws in every worker and epoch, and exact DatasetMapper behaviour when off."""

import logging
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from helpers import make_cfg
from wnlb_d2.data import ImageReadError, LowLightDatasetMapper, build_pipeline, eval_rng, read_image
from wnlb_d2.data import mapper as mapper_module

H, W = 64, 96


def write_image(path, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 120)], axis=-1).astype(np.uint8)
    img[8:28, 10:40] = rng.integers(60, 256, 3)
    Image.fromarray(img).save(path)
    return str(path)


def record(path, image_id):
    return {
        "file_name": path, "image_id": image_id, "height": H, "width": W,
        "annotations": [{
            "bbox": [10, 8, 30, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0,
            "segmentation": [[10, 8, 40, 8, 40, 28, 10, 28]],
            "keypoints": [12, 10, 2, 38, 10, 2, 25, 26, 2],
        }, {
            "bbox": [50, 30, 20, 25], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0,
            "segmentation": [[50, 30, 70, 30, 60, 55]],
            "keypoints": [52, 31, 2, 68, 31, 2, 60, 54, 1],
        }],
    }


@pytest.fixture
def dataset(tmp_path):
    return [record(write_image(tmp_path / f"{i}.png", seed=i), image_id=100 + i) for i in range(3)]


def mapper_args():
    # Deterministic augmentations, so a plain DatasetMapper transforms annotations identically.
    return dict(augmentations=[T.ResizeShortestEdge(96, 160), T.RandomFlip(prob=1.0)], image_format="BGR",
                use_instance_mask=True, use_keypoint=True, keypoint_hflip_indices=np.array([1, 0, 2]))


def small_cfg(enabled=True, **low_light):
    cfg = make_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    cfg.INPUT.MAX_SIZE_TRAIN = 160
    cfg.INPUT.LOW_LIGHT.ENABLED = enabled
    for k, v in low_light.items():
        cfg.INPUT.LOW_LIGHT[k] = v
    return cfg


def image_bytes(out):
    return out["image"].numpy().tobytes()


@pytest.mark.parametrize("name", ["lv2021", "unprocess"])
def test_only_the_image_changes(dataset, name):
    plain = DatasetMapper(True, **mapper_args())
    ours = LowLightDatasetMapper(True, pipeline=build_pipeline(name), **mapper_args())
    for d in dataset:
        a, b = plain(d), ours(d)
        assert a["image"].shape == b["image"].shape and image_bytes(a) != image_bytes(b)
        assert b["image"].float().mean() < a["image"].float().mean()
        ia, ib = a["instances"], b["instances"]
        assert len(ia) == 2
        assert torch.equal(ia.gt_boxes.tensor, ib.gt_boxes.tensor)
        assert torch.equal(ia.gt_classes, ib.gt_classes)
        assert torch.equal(ia.gt_keypoints.tensor, ib.gt_keypoints.tensor)
        for pa, pb in zip(ia.gt_masks.polygons, ib.gt_masks.polygons):
            assert all(np.array_equal(x, y) for x, y in zip(pa, pb))
        assert b["low_light_params"]["pipeline"] == name and "low_light_params" not in a
        assert set(a) | {"low_light_params"} == set(b)
    assert d["annotations"][0]["bbox"] == [10, 8, 30, 20]  # the input dict is not modified


def test_degradation_is_applied_before_augmentation(dataset):
    pipe = build_pipeline("lv2021")
    ours = LowLightDatasetMapper(False, pipeline=pipe, eval_seed=3, **mapper_args())
    d = dataset[0]
    # Expected: degrade the native-resolution image with the image's own generator, then augment.
    dark, params = pipe(read_image(d["file_name"]), eval_rng(3, d["image_id"]))
    aug_input = T.AugInput(dark)
    T.AugmentationList(mapper_args()["augmentations"])(aug_input)
    out = ours(d)
    assert out["image"].shape[1:] == (96, 144)
    assert out["image"].numpy().tobytes() == np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)).tobytes()
    assert out["low_light_params"] == params


@pytest.mark.parametrize("is_train,settings", [(True, {"ENABLED": False}), (False, {"ENABLED": False}),
                                               (True, {"TRAIN": False}), (False, {"TEST": False})])
def test_off_behaves_exactly_like_dataset_mapper(dataset, is_train, settings):
    cfg = small_cfg(**settings)
    plain, ours = DatasetMapper(cfg, is_train), LowLightDatasetMapper(cfg, is_train)
    assert ours.pipeline is None
    for d in dataset:
        np.random.seed(0)  # stock augmentations (random flip) draw from NumPy's global state
        a = plain(d)
        np.random.seed(0)
        b = ours(d)
        assert set(a) == set(b) and image_bytes(a) == image_bytes(b)
        if is_train:
            assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)


def test_off_keeps_formats_only_detectron2_reads(dataset):
    cfg = small_cfg(enabled=False)
    cfg.INPUT.FORMAT = "L"
    a, b = DatasetMapper(cfg, False)(dataset[0]), LowLightDatasetMapper(cfg, False)(dataset[0])
    assert b["image"].shape[0] == 1 and image_bytes(a) == image_bytes(b)


def eval_images(mapper, dataset, num_workers):
    loader = build_detection_test_loader(dataset, mapper=mapper, num_workers=num_workers)
    return [image_bytes(batch[0]) for batch in loader]


def test_evaluation_is_identical_across_instances_workers_and_ranks(dataset, monkeypatch):
    cfg = small_cfg(PIPELINE="unprocess", SEED=11)
    first = [image_bytes(LowLightDatasetMapper(cfg, is_train=False)(d)) for d in dataset]
    assert len(set(first)) == 3
    assert [image_bytes(LowLightDatasetMapper(cfg, is_train=False)(d)) for d in dataset] == first
    assert eval_images(LowLightDatasetMapper(cfg, is_train=False), dataset, num_workers=0) == first
    assert eval_images(LowLightDatasetMapper(cfg, is_train=False), dataset, num_workers=2) == first
    monkeypatch.setattr(mapper_module.comm, "get_rank", lambda: 3)
    assert [image_bytes(LowLightDatasetMapper(cfg, is_train=False)(d)) for d in dataset] == first
    # The seed matters: another SEED gives another test set.
    other = small_cfg(PIPELINE="unprocess", SEED=12)
    assert image_bytes(LowLightDatasetMapper(other, is_train=False)(dataset[0])) != first[0]


def test_evaluation_key_is_image_id_else_base_name(tmp_path, dataset):
    mapper = LowLightDatasetMapper(False, pipeline=build_pipeline("lv2021"), **mapper_args())
    d = {k: v for k, v in dataset[0].items() if k != "image_id"}
    os.makedirs(tmp_path / "elsewhere")
    moved = dict(d, file_name=write_image(tmp_path / "elsewhere" / os.path.basename(d["file_name"]), seed=0))
    assert mapper(d)["low_light_params"] == mapper(moved)["low_light_params"]
    assert mapper(d)["low_light_params"] != mapper(dataset[0])["low_light_params"]


class MappedList(torch.utils.data.Dataset):
    def __init__(self, dicts, mapper):
        self.dicts, self.mapper = dicts, mapper

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, i):
        return self.mapper(self.dicts[i])["low_light_params"]


def train_draws(mapper, dicts, num_workers):
    loader = torch.utils.data.DataLoader(MappedList(dicts, mapper), batch_size=None, num_workers=num_workers,
                                         collate_fn=lambda p: p)
    return [str(p) for p in loader]


def test_training_draws_are_fresh_per_load_worker_and_epoch(dataset):
    mapper = LowLightDatasetMapper(small_cfg(), is_train=True)
    d = dataset[0]
    assert mapper(d)["low_light_params"] != mapper(d)["low_light_params"]  # same image, next epoch
    # The mapper has drawn in the main process: forked workers must not inherit that state.
    same_image = [d] * 4
    epoch1 = train_draws(mapper, same_image, num_workers=2)
    epoch2 = train_draws(mapper, same_image, num_workers=2)
    main = train_draws(mapper, same_image, num_workers=0)
    assert len(set(epoch1 + epoch2 + main)) == 12


def test_train_seed_makes_training_draws_reproducible(dataset):
    draws = lambda cfg: [LowLightDatasetMapper(cfg, is_train=True)(dataset[0])["low_light_params"]  # noqa: E731
                         for _ in range(2)]
    assert draws(small_cfg(TRAIN_SEED=5)) == draws(small_cfg(TRAIN_SEED=5))
    assert draws(small_cfg(TRAIN_SEED=-1)) != draws(small_cfg(TRAIN_SEED=-1))


def test_rgb_input_format_gives_the_same_degradation(dataset):
    bgr = LowLightDatasetMapper(small_cfg(), is_train=False)(dataset[1])["image"]
    cfg = small_cfg()
    cfg.INPUT.FORMAT = "RGB"
    rgb = LowLightDatasetMapper(cfg, is_train=False)(dataset[1])["image"]
    assert torch.equal(rgb, bgr.flip(0))


def test_mapper_pickles_for_spawned_workers(dataset):
    mapper = LowLightDatasetMapper(small_cfg(), is_train=False)
    clone = pickle.loads(pickle.dumps(mapper))
    assert image_bytes(clone(dataset[0])) == image_bytes(mapper(dataset[0]))


def test_configuration_errors_name_the_key():
    cfg = small_cfg()
    cfg.INPUT.FORMAT = "L"
    with pytest.raises(ValueError, match="INPUT.FORMAT.*'L'"):
        LowLightDatasetMapper(cfg, is_train=False)
    with pytest.raises(ValueError, match="INPUT.LOW_LIGHT.SEED.*-1"):
        LowLightDatasetMapper(small_cfg(SEED=-1), is_train=False)
    with pytest.raises(ValueError, match="INPUT.LOW_LIGHT.TRAIN_SEED.*-2"):
        LowLightDatasetMapper(small_cfg(TRAIN_SEED=-2), is_train=True)
    cfg = small_cfg()
    cfg.INPUT.LOW_LIGHT.LV2021.BETA = (0.8, 0.2)
    with pytest.raises(ValueError, match="INPUT.LOW_LIGHT.LV2021.BETA"):
        LowLightDatasetMapper(cfg, is_train=True)


def test_unreadable_image_names_the_file(tmp_path, dataset):
    broken = tmp_path / "broken.png"
    broken.write_bytes(open(dataset[0]["file_name"], "rb").read()[:100])
    mapper = LowLightDatasetMapper(small_cfg(), is_train=True)
    with pytest.raises(ImageReadError, match="broken.png"):
        mapper(dict(dataset[0], file_name=str(broken)))


def _with_broken(tmp_path, dataset):
    broken = tmp_path / "broken.png"
    broken.write_bytes(open(dataset[0]["file_name"], "rb").read()[:100])  # truncated PNG
    return [dataset[0], dict(dataset[1], file_name=str(broken)), dataset[2]]


def test_skip_unreadable_is_off_by_default_and_the_worker_error_is_one_line(tmp_path, dataset):
    assert small_cfg().DATALOADER.SKIP_UNREADABLE_IMAGES is False
    dicts = _with_broken(tmp_path, dataset)
    loader = build_detection_test_loader(dicts, mapper=LowLightDatasetMapper(small_cfg(), is_train=False),
                                         num_workers=1)
    with pytest.raises(ImageReadError) as err:
        list(loader)
    assert "Traceback" in str(err.value)  # what PyTorch makes of a worker's error ...
    line = mapper_module.worker_error_message(err.value)  # ... and the line the tools print
    assert "broken.png" in line and "\n" not in line and "Traceback" not in line
    assert line.startswith("Cannot read image")
    assert mapper_module.worker_error_message(ValueError("plain")) == "plain"


def test_skip_unreadable_in_training_maps_another_image(tmp_path, dataset, caplog):
    from detectron2.data import build_detection_train_loader

    cfg = small_cfg()
    cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = True
    dicts = _with_broken(tmp_path, dataset)
    first = LowLightDatasetMapper(cfg, is_train=True)
    with caplog.at_level(logging.WARNING, logger="wnlb_d2.data.mapper"):
        blank = first(dicts[1])  # nothing read well yet: a blank without objects
        assert int(blank["image"].max()) == 0 and len(blank["instances"]) == 0
        assert len(first(dicts[0])["instances"]) == 2
        out = first(dicts[1])  # now: an image read well before, with its objects
    assert out["file_name"] == dicts[0]["file_name"] and len(out["instances"]) == 2
    assert "unreadable" not in out and "low_light_params" in out
    assert "skipping unreadable image" in caplog.text and "broken.png" in caplog.text
    assert "2 skipped by this process" in caplog.text and first.skipped == 2
    # Through detectron2's loader (its own retry of a None would fail on Python >= 3.11).
    loader = build_detection_train_loader(dicts, mapper=LowLightDatasetMapper(cfg, is_train=True),
                                          total_batch_size=2, num_workers=0)
    seen = [d for _, batch in zip(range(4), loader) for d in batch]
    assert len(seen) == 8
    # Only a very first image can be the blank stand-in; later the broken one is replaced.
    stand_ins = [i for i, d in enumerate(seen) if d["file_name"] == str(tmp_path / "broken.png")]
    assert stand_ins in ([], [0]) and all(len(seen[i]["instances"]) == 0 for i in stand_ins)


def test_skip_unreadable_in_evaluation_keeps_every_image(tmp_path, dataset, caplog):
    cfg = small_cfg()
    cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = True
    dicts = _with_broken(tmp_path, dataset)
    with caplog.at_level(logging.WARNING, logger="wnlb_d2.data.mapper"):
        outs = [b[0] for b in build_detection_test_loader(dicts, mapper=LowLightDatasetMapper(cfg, is_train=False),
                                                          num_workers=0)]
    # The same images in the same order (no random substitute evaluated twice).
    assert [o["image_id"] for o in outs] == [d["image_id"] for d in dicts]
    assert "broken.png" in outs[1]["unreadable"] and "unreadable" not in outs[0]
    assert outs[1]["image"].shape == outs[0]["image"].shape and int(outs[1]["image"].max()) == 0
    assert "low_light_params" not in outs[1] and "low_light_params" in outs[0]
    assert "broken.png" in caplog.text and "its objects count as missed" in caplog.text


def test_training_noise_comes_from_torch_by_default_and_evaluation_from_numpy(dataset):
    d = dataset[0]
    image = read_image(d["file_name"], format="BGR")
    pipe = build_pipeline("lv2021")
    train = LowLightDatasetMapper(small_cfg(TRAIN_SEED=3), is_train=True)
    assert train.pipeline.noise_source == "torch"
    assert LowLightDatasetMapper(small_cfg(), is_train=False).pipeline.noise_source == "numpy"
    # With "numpy" the training draws are exactly the pipeline's with the mapper's generator.
    numpy_train = LowLightDatasetMapper(small_cfg(TRAIN_SEED=3, TRAIN_NOISE="numpy"), is_train=True)
    expect, params = pipe(image, numpy_train._train_rng(), "BGR")
    numpy_train._rng = None  # the same generator again
    out = numpy_train.image_stages[0](image, numpy_train._train_rng(), "BGR")
    assert np.array_equal(out[0], expect) and out[1] == params
    # "torch": the same parameters from the same generator, other noise, the same statistics.
    t_img, t_params = pipe.with_noise_source("torch")(image, np.random.default_rng(9), "BGR")
    n_img, n_params = pipe(image, np.random.default_rng(9), "BGR")
    assert t_params == n_params and not np.array_equal(t_img, n_img)
    assert abs(float(t_img.mean()) - float(n_img.mean())) < 1.0
    # Evaluation images are the reference: the config key does not reach them.
    ev = [LowLightDatasetMapper(small_cfg(TRAIN_NOISE=n), is_train=False)(d) for n in ("numpy", "torch")]
    assert image_bytes(ev[0]) == image_bytes(ev[1])


def test_train_noise_key_is_checked():
    with pytest.raises(ValueError, match="INPUT.LOW_LIGHT.TRAIN_NOISE.*'cuda'"):
        LowLightDatasetMapper(small_cfg(TRAIN_NOISE="cuda"), is_train=True)
