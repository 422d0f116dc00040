"""The training device path: workers ship native 8-bit images with their draws; the model's
forward pre-hook degrades, resizes and flips them where it runs, like the CPU path."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T

from test_mapper import dataset, mapper_args, small_cfg  # noqa: F401  (fixture)
from wnlb_d2.data import LowLightDatasetMapper, build_pipeline, read_image
from wnlb_d2.data.synthesis.torch_render import draw_noise
from wnlb_d2.data.device_path import (DEVICE_KEY, DeviceDegradation, ShapeOnlyAugInput, apply_steps,
                                      attach_device_degradation, geometric_steps)


def mappers(name="lv2021", seed=7, **kwargs):
    args = dict(mapper_args(), train_seed=seed, **kwargs)
    cpu = LowLightDatasetMapper(True, pipeline=build_pipeline(name), **args)
    device = LowLightDatasetMapper(True, pipeline=build_pipeline(name), on_device=True, **args)
    return cpu, device


class Recorder(torch.nn.Module):
    """Stands in for a detector: records what reaches its forward."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = None

    def forward(self, batched_inputs):
        self.seen = batched_inputs
        return {}


@pytest.mark.parametrize("name", ["lv2021", "unprocess"])
def test_device_path_ships_the_native_image_with_the_cpu_paths_draws_and_annotations(dataset, name):  # noqa: F811
    cpu, device = mappers(name)
    a, b = cpu(dataset[0]), device(dataset[0])
    native = read_image(dataset[0]["file_name"], format="BGR")
    assert torch.equal(b["image"], torch.from_numpy(native.transpose(2, 0, 1)))
    info = b[DEVICE_KEY]
    # The same generator state gives the same parameters (the noise is a seed on the device path).
    assert dict(info["params"], pipeline=name) == a["low_light_params"] == b["low_light_params"]
    assert info["steps"][0][0] == "resize" and info["steps"][-1] == ("hflip",)
    for field in ("gt_boxes", "gt_classes", "gt_masks", "gt_keypoints"):
        x, y = a["instances"].get(field), b["instances"].get(field)
        x = getattr(x, "tensor", getattr(x, "polygons", x))
        y = getattr(y, "tensor", getattr(y, "polygons", y))
        assert str(x) == str(y), field
    assert a["instances"].image_size == b["instances"].image_size


@pytest.mark.parametrize("name", ["lv2021", "unprocess"])
def test_the_hook_gives_images_of_the_cpu_paths_size_and_statistics(dataset, name):  # noqa: F811
    cpu, device = mappers(name)
    model = Recorder()
    attach_device_degradation(model, build_pipeline(name), "BGR")
    for d in dataset:
        a, b = cpu(d), device(d)
        model([b])
        got = model.seen[0]
        assert DEVICE_KEY not in got and got["image"].dtype == torch.uint8
        assert got["image"].shape == a["image"].shape
        # Same parameters, other noise: per-image mean and per-channel means within a level.
        ga, gb = a["image"].float(), got["image"].float()
        assert abs(ga.mean() - gb.mean()) < 1.0
        assert (ga.mean(dim=(1, 2)) - gb.mean(dim=(1, 2))).abs().max() < 1.5
        # With the device's noise, the NumPy render then detectron2's own transforms give the
        # same image (up to the resize's rounding): the degradation is at native size, before
        # the resize and the flip.
        info = b[DEVICE_KEY]
        native = b["image"].numpy().transpose(1, 2, 0)
        noise = draw_noise(device.pipeline, 1, *native.shape[:2], torch.Generator().manual_seed(info["noise_seed"]), "cpu")
        noise = noise[0].numpy()
        noise = np.ascontiguousarray(noise.transpose(1, 2, 0)) if noise.ndim == 3 else noise.copy()
        expected = device.pipeline.render(native, info["params"], noise, "BGR")
        for t in ShapeOnlyAugInput_transforms(device, native):
            expected = t.apply_image(expected)
        diff = np.abs(got["image"].numpy().transpose(1, 2, 0).astype(int) - expected.astype(int))
        assert diff.mean() < 0.6 and diff.max() <= 3, (diff.mean(), diff.max())


def ShapeOnlyAugInput_transforms(mapper, native):
    """The transforms the mapper's (deterministic) augmentations choose for an image of this size."""
    inp = ShapeOnlyAugInput(*native.shape[:2])
    mapper.augmentations(inp)
    return inp.transforms


def test_the_hook_passes_other_inputs_and_steps_match_detectron2s_transforms():
    model = Recorder()
    attach_device_degradation(model, build_pipeline("lv2021"), "BGR")
    plain = [{"image": torch.zeros(3, 4, 4, dtype=torch.uint8)}]
    model(plain)
    assert model.seen is plain
    # Resize (PIL bilinear, as detectron2's ResizeTransform on 8 bits), flips and crop.
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    tfms = [T.ResizeTransform(37, 53, 60, 85, 2), T.HFlipTransform(85), T.CropTransform(3, 5, 40, 30),
            T.VFlipTransform(30), T.ResizeTransform(30, 40, 15, 20, 2)]
    expected = img
    for t in tfms:
        expected = t.apply_image(expected)
    got = apply_steps(torch.from_numpy(img.transpose(2, 0, 1)), geometric_steps(tfms)).numpy().transpose(1, 2, 0)
    assert got.shape == expected.shape
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.mean() < 0.6 and diff.max() <= 3, (diff.mean(), diff.max())


def test_shape_only_input_keeps_geometric_transforms_and_refuses_others():
    aug = T.AugmentationList([T.ResizeShortestEdge(96, 160), T.RandomFlip(prob=1.0), T.RandomCrop("absolute", (50, 60))])
    inp = ShapeOnlyAugInput(64, 96)
    aug(inp)
    assert inp.shape == (50, 60) and [s[0] for s in geometric_steps(inp.transforms)] == ["resize", "hflip", "crop"]
    with pytest.raises(ValueError, match="ON_DEVICE: the augmentation transform BlendTransform"):
        T.AugmentationList([T.RandomBrightness(0.5, 1.5)])(ShapeOnlyAugInput(8, 8))


def test_device_path_configuration_errors(dataset):  # noqa: F811
    from wnlb_d2.engine.image_stages import EnhancerStage

    with pytest.raises(ValueError, match="ON_DEVICE needs exactly one stage"):
        LowLightDatasetMapper(True, image_stages=[build_pipeline("lv2021"), EnhancerStage.__new__(EnhancerStage)],
                              on_device=True, **mapper_args())
    with pytest.raises(ValueError, match="ON_DEVICE: pipeline 'x' has no torch implementation"):
        from wnlb_d2.data.synthesis import LowLightPipeline

        class X(LowLightPipeline):
            name = "x"

            def config(self):
                return {}
        DeviceDegradation(X(), "BGR")
    # Evaluation never takes the device path.
    assert not LowLightDatasetMapper(small_cfg(ON_DEVICE=True), is_train=False).on_device
    assert LowLightDatasetMapper(small_cfg(ON_DEVICE=True), is_train=True).on_device


def test_trainer_attaches_the_hook_and_a_detector_trains_on_device_path_inputs(dataset):  # noqa: F811
    from wnlb_d2.engine import LowLightTrainer

    cfg = small_cfg(ON_DEVICE=True, TRAIN_SEED=1)
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.KEYPOINT_ON = False
    model = LowLightTrainer.build_model(cfg)
    assert model._wnlb_device_degradation is not None
    mapper = LowLightDatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in dataset[:2]]
    for d in batch:
        if d["instances"].has("gt_keypoints"):
            d["instances"].remove("gt_keypoints")
    model.train()
    from detectron2.utils.events import EventStorage

    seen = []  # what the model's own forward gets, after the device hook (hooks run in order)
    model.register_forward_pre_hook(lambda m, a: seen.extend(
        (tuple(d["image"].shape[1:]), tuple(d["instances"].image_size), DEVICE_KEY in d) for d in a[0]))
    with EventStorage(0):
        losses = model(batch)
    assert len(seen) == 2 and all(s[0] == s[1] and not s[2] for s in seen), seen
    assert all(s[0] != tuple(d["image"].shape[1:]) for s, d in zip(seen, batch))  # resized on the device
    assert losses and all(torch.isfinite(v) for v in losses.values())
