"""The embedded demo dataset: deterministic bytes, valid COCO JSON whose masks are exactly the
rendered objects, all COCO size ranges, atomic generation, registration by name."""

import json
import os
import uuid

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO

import wnlb_d2.data  # noqa: F401  (registers the datasets)
from wnlb_d2.data import demo_dataset, demo_scenes
from wnlb_d2.data.datasets import register_demo
from wnlb_d2.data.demo_dataset import (
    AREA_LARGE,
    AREA_SMALL,
    DEMO_CLASSES,
    _SCENE_VERSION,
    DemoSpec,
    demo_split_paths,
    ensure_demo_dataset,
    render_scene,
)

SPEC = DemoSpec(image_size=128, num_train=6, num_val=10, seed=3)


def _tree(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    return root, ensure_demo_dataset(root, SPEC, progress=False, workers=1)


def test_generation_is_deterministic_whatever_the_worker_count(generated, tmp_path):
    root, folder = generated
    assert os.path.basename(folder) == SPEC.key
    other = ensure_demo_dataset(str(tmp_path), SPEC, progress=False, workers=2)
    first, second = _tree(folder), _tree(other)
    assert sorted(first) == sorted(second)
    assert len([n for n in first if n.endswith(".png")]) == 2 * (SPEC.num_train + SPEC.num_val)
    assert first == second
    # No temporary folder is left beside the result; a second call reuses it.
    assert os.listdir(root) == [SPEC.key]
    assert ensure_demo_dataset(root, SPEC) == folder


def test_coco_json_is_valid_and_masks_are_the_rendered_objects(generated):
    _, folder = generated
    for split, count, split_index in (("train", SPEC.num_train, 0), ("val", SPEC.num_val, 1)):
        image_dir, json_file = demo_split_paths(folder, split)
        low_dir, _ = demo_split_paths(folder, split, lowlight=True)
        coco = COCO(json_file)
        brightness = []
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
        assert sorted(coco.getImgIds()) == list(range(1, count + 1))
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            image = cv2.imread(os.path.join(image_dir, info["file_name"]))
            low = cv2.imread(os.path.join(low_dir, info["file_name"]))
            assert image.shape == low.shape == (SPEC.image_size, SPEC.image_size, 3)
            assert low.mean() < image.mean()
            brightness.append(low.mean() / image.mean())
            # Render the same scene again: the annotations must be exactly its objects.
            rng = np.random.default_rng([SPEC.seed, _SCENE_VERSION, split_index, image_id - 1])
            again, objects = render_scene(rng, SPEC.image_size)
            assert np.array_equal(again, image)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert [a["category_id"] - 1 for a in anns] == [cls for cls, _ in objects]
            for ann, (_, visible) in zip(anns, objects):
                assert np.array_equal(coco.annToMask(ann).astype(bool), visible)
                ys, xs = np.nonzero(visible)
                assert ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
                assert all(len(p) >= 6 for p in ann["segmentation"]) and ann["iscrowd"] == 0
                # The polygon area (what COCOEvaluator bins by) is close to the pixel count.
                assert 0.75 * visible.sum() <= ann["area"] <= visible.sum()
        assert np.mean(brightness) < 0.6
        manifest = os.path.join(low_dir, "manifest.jsonl")
        with open(manifest) as f:
            lines = [json.loads(line) for line in f]
        assert lines[0]["pipeline"] == SPEC.pipeline and len(lines) == count + 1


def test_default_val_set_has_small_medium_and_large_objects():
    spec = DemoSpec()
    areas = []
    for i in range(spec.num_val):
        rng = np.random.default_rng([spec.seed, _SCENE_VERSION, 1, i])
        _, objects = render_scene(rng, spec.image_size)
        for cls, mask in objects:
            areas.append(demo_scenes.annotation_fields(cls, mask)["area"])
    areas = np.array(areas)
    small, large = (areas < AREA_SMALL).sum(), (areas >= AREA_LARGE).sum()
    medium = len(areas) - small - large
    assert small >= 50 and medium >= 50 and large >= 10, (small, medium, large)
    # Every class is drawn in every size range (the class is not given away by the size).
    classes_by_size = {}
    for i in range(spec.num_val):
        rng = np.random.default_rng([spec.seed, _SCENE_VERSION, 1, i])
        for cls, mask in render_scene(rng, spec.image_size)[1]:
            size = "s" if mask.sum() < AREA_SMALL else ("l" if mask.sum() >= AREA_LARGE else "m")
            classes_by_size.setdefault(size, set()).add(cls)
    assert classes_by_size["s"] == classes_by_size["m"] == set(range(len(DEMO_CLASSES)))


def test_a_killed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    spec = DemoSpec(image_size=64, num_train=2, num_val=2, seed=1)
    root = str(tmp_path)
    stale = tmp_path / f".{spec.key}.tmp.999999999.x"  # left by a process that is gone
    stale.mkdir()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    from wnlb_d2.data import prepare

    monkeypatch.setattr(prepare, "prepare_lowlight", killed)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_dataset(root, spec, progress=False, workers=1)
    assert os.listdir(root) == []  # neither the stale folder nor a half-made set
    monkeypatch.undo()
    folder = ensure_demo_dataset(root, spec, progress=False, workers=1)
    assert os.listdir(root) == [spec.key] and os.path.isfile(os.path.join(folder, "info.json"))
    # A folder of that name that is not a complete dataset is refused, not used.
    os.remove(os.path.join(folder, "info.json"))
    with pytest.raises(RuntimeError, match="not a complete demo dataset"):
        ensure_demo_dataset(root, spec)
    with pytest.raises(ValueError, match="image_size"):
        ensure_demo_dataset(root, DemoSpec(image_size=16))


def test_registered_names_load_through_the_catalog(generated):
    root, _ = generated
    for name in ("wnlb_demo_train", "wnlb_demo_val", "wnlb_demo_train_lowlight", "wnlb_demo_val_lowlight"):
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).thing_classes == list(DEMO_CLASSES)
    prefix = f"test_demo_{uuid.uuid4().hex[:8]}"
    register_demo(prefix, root=root, spec=SPEC)
    normal = DatasetCatalog.get(f"{prefix}_val")
    low = DatasetCatalog.get(f"{prefix}_val_lowlight")
    assert len(normal) == len(low) == SPEC.num_val
    assert MetadataCatalog.get(f"{prefix}_val_lowlight").low_light == "synthetic"
    assert MetadataCatalog.get(f"{prefix}_val").low_light == "none"
    for a, b in zip(normal, low):
        assert a["annotations"] == b["annotations"] and a["image_id"] == b["image_id"]
        assert os.path.basename(a["file_name"]) == os.path.basename(b["file_name"])
        assert "_lowlight" in b["file_name"] and os.path.isfile(b["file_name"])
        assert all(0 <= obj["category_id"] < len(DEMO_CLASSES) for obj in a["annotations"])


def test_lowlight_val_is_the_on_the_fly_degradation_of_the_normal_val(generated):
    """wnlb_demo_val + INPUT.LOW_LIGHT.TEST and wnlb_demo_val_lowlight are one test set."""
    from helpers import make_cfg

    from wnlb_d2.data import LowLightDatasetMapper

    root, folder = generated
    assert os.path.basename(folder).startswith("v4_")  # bytes changed with the seed key: new folder
    prefix = f"test_demo_{uuid.uuid4().hex[:8]}"
    register_demo(prefix, root=root, spec=SPEC)
    cfg = make_cfg()
    cfg.INPUT.LOW_LIGHT.ENABLED, cfg.INPUT.LOW_LIGHT.TEST = True, True
    cfg.INPUT.LOW_LIGHT.PIPELINE, cfg.INPUT.LOW_LIGHT.SEED = SPEC.pipeline, SPEC.seed
    on_the_fly = LowLightDatasetMapper(cfg, is_train=False)
    cfg.INPUT.LOW_LIGHT.ENABLED = False
    plain = LowLightDatasetMapper(cfg, is_train=False)
    normal = DatasetCatalog.get(f"{prefix}_val")
    low = DatasetCatalog.get(f"{prefix}_val_lowlight")
    for a, b in list(zip(normal, low))[:4]:
        assert on_the_fly(a)["image"].numpy().tobytes() == plain(b)["image"].numpy().tobytes(), a["file_name"]
