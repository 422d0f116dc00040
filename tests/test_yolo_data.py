"""Detectron2 datasets in Ultralytics' layout, and low-light images in its data pipeline.

References: pycocotools' masks of the detectron2 records, the detectron2 LowLightDatasetMapper,
and the offline low-light copies of the demo dataset (datasets/prepare_lowlight_coco.py).
"""

import importlib.util
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

# find_spec, not importorskip: importing ultralytics before wnlb_d2.yolo would skip the
# package's environment defaults (offline, config folder outside the home folder).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

import wnlb_d2  # noqa: E402,F401
from detectron2.data import DatasetCatalog  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.data.utils import check_det_dataset  # noqa: E402
from wnlb_d2.data import LowLightDatasetMapper, build_pipeline  # noqa: E402
from wnlb_d2.data.datasets import register_demo  # noqa: E402
from wnlb_d2.data.demo_dataset import DemoSpec  # noqa: E402
from wnlb_d2.yolo import LowLightSpec, export_yolo_dataset, write_data_yaml  # noqa: E402
from wnlb_d2.yolo.convert import annotation_polygons, read_index  # noqa: E402
from wnlb_d2.yolo.data import build_lowlight_dataset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = DemoSpec(image_size=64, num_train=4, num_val=4, seed=2)
PREFIX = "yolodata_demo"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    register_demo(prefix=PREFIX, root=str(root / "demo"), spec=SPEC)
    data_root = root / "export"
    index = export_yolo_dataset(f"{PREFIX}_val", str(data_root), "val")
    return data_root, index


def _fill(polygon_norm, h, w):
    # Rasterised as COCO rasterises polygons, so only the conversion is compared.
    pixels = (np.asarray(polygon_norm).reshape(-1, 2) * [w, h]).reshape(-1).tolist()
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects([pixels], h, w)))


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_export_layout_ids_and_polygons(export):
    data_root, index = export
    records = {d["image_id"]: d for d in DatasetCatalog.get(f"{PREFIX}_val")}
    assert [r["image_id"] for r in index["images"]] == sorted(records)
    assert index["names"] == dict(enumerate(["circle", "square", "triangle", "star", "cross", "ellipse"]))
    assert index["category_ids"] == {i: i + 1 for i in range(6)}
    assert read_index(str(data_root), "val")["images"] == index["images"]
    for r in index["images"]:
        rec = records[r["image_id"]]
        image = data_root / r["yolo_file"]
        assert os.path.islink(image) and os.path.samefile(image, rec["file_name"])
        assert os.path.basename(r["yolo_file"]) == f"{r['image_id']}.png"  # predictions map back by stem
        lines = (data_root / "labels" / "val" / f"{r['image_id']}.txt").read_text().splitlines()
        anns = [a for a in rec["annotations"] if not a.get("iscrowd")]
        assert len(lines) == len(anns) == r["objects"] > 0
        h, w = rec["height"], rec["width"]
        for line, ann in zip(lines, anns):
            values = [float(v) for v in line.split()]
            assert int(values[0]) == ann["category_id"]
            ref = mask_util.decode(mask_util.merge(mask_util.frPyObjects(ann["segmentation"], h, w)))
            assert _iou(_fill(values[1:], h, w).astype(bool), ref.astype(bool)) > 0.95


def test_rle_segmentation_becomes_its_outline():
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 10:30] = 1
    mask[25:35, 35:45] = 1  # two parts
    rle = mask_util.encode(np.asfortranarray(mask))
    polys = annotation_polygons(rle, 40, 50)
    assert len(polys) == 2
    filled = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polys, 40, 50)))
    assert _iou(filled.astype(bool), mask.astype(bool)) > 0.8


def test_export_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not registered"):
        export_yolo_dataset("no_such_dataset", str(tmp_path), "val")
    with pytest.raises(ValueError, match="link"):
        export_yolo_dataset(f"{PREFIX}_val", str(tmp_path), "val", link="move")
    with pytest.raises(ValueError, match="folder name"):
        export_yolo_dataset(f"{PREFIX}_val", str(tmp_path), "../val")


def _dataset(data_root, spec, mode, tmp_path):
    yaml_path = write_data_yaml(str(tmp_path / f"data_{mode}.yaml"), str(data_root), {i: str(i) for i in range(6)},
                                train="val", val="val", low_light=spec)
    data = check_det_dataset(yaml_path)
    cfg = get_cfg(overrides={"task": "segment", "imgsz": SPEC.image_size, "data": yaml_path})
    return build_lowlight_dataset(cfg, data["val"], 2, data, mode=mode, stride=32)


def test_validation_degradation_equals_detectron2_and_offline_copy(export, tmp_path):
    data_root, index = export
    records = {d["image_id"]: d for d in DatasetCatalog.get(f"{PREFIX}_val")}
    ds = _dataset(data_root, LowLightSpec("lv2021", seed=SPEC.seed), "val", tmp_path)
    mapper = LowLightDatasetMapper(False, pipeline=build_pipeline("lv2021"), eval_seed=SPEC.seed,
                                   augmentations=[], image_format="BGR")
    low_dir = os.path.join(os.path.dirname(os.path.dirname(next(iter(records.values()))["file_name"])),
                           "val_lowlight")
    for i, f in enumerate(ds.im_files):
        image_id = int(os.path.splitext(os.path.basename(f))[0])
        im, hw0, hw = ds.load_image(i)
        assert hw0 == hw == (SPEC.image_size, SPEC.image_size)  # native size: no resize in between
        d2 = mapper(dict(records[image_id]))["image"].numpy().transpose(1, 2, 0)
        assert np.array_equal(im, d2)
        offline = cv2.imread(os.path.join(low_dir, os.path.basename(records[image_id]["file_name"])))
        assert np.array_equal(im, offline)  # the prepared low-light test set, byte for byte
        assert np.array_equal(ds.load_image(i)[0], im)  # deterministic
        clean = cv2.imread(records[image_id]["file_name"])
        assert im.mean() < clean.mean() - 5
    other = _dataset(data_root, LowLightSpec("lv2021", seed=SPEC.seed + 1), "val", tmp_path)
    assert not np.array_equal(other.load_image(0)[0], ds.load_image(0)[0])


def _count_degradations(ds):
    calls = []
    real = ds.degraded_image
    ds.degraded_image = lambda i: calls.append(i) or real(i)
    return calls


def test_training_degrades_each_samples_own_image_afresh_and_reuses_buffered_partners(export, tmp_path):
    data_root, _ = export
    ds = _dataset(data_root, LowLightSpec("lv2021", train_seed=7), "train", tmp_path)
    assert ds.cache is None and ds.max_buffer_length == 4  # batch 2 x 8 > 4 images
    calls = _count_degradations(ds)
    a = ds.load_image(0)[0]
    assert ds.load_image(0)[0] is a and calls == [0]  # a mosaic partner's load: the buffered draw
    assert list(ds.buffer) == [0]
    sample = ds[0]  # the sample's own image: read and degraded afresh, kept in its place in the buffer
    assert calls == [0, 0] and list(ds.buffer) == [0] and sample["img"].shape[1:] == (SPEC.image_size,) * 2
    assert not np.array_equal(ds.ims[0], a)
    for k in (1, 2, 3, 0, 2):
        before = len(calls)
        ds[k]  # a mosaic of 4: its own image degraded, the 3 partners from the buffer
        assert calls[before:] == [k]
        assert all(ds.ims[j] is not None for j in ds.buffer) and len(set(ds.buffer)) == len(ds.buffer) <= 4
    # An image that left the buffer is read and degraded again when it is a partner's turn.
    assert [j for j in range(4) if ds.ims[j] is None] and ds.load_image(1)[0] is not None
    plain = _dataset(data_root, LowLightSpec("lv2021", train=False), "train", tmp_path)
    assert plain.mapper is None and plain.load_image(0)[0].mean() > a.mean() + 5


def test_fresh_tiles_degrade_every_load_as_before(export, tmp_path):
    data_root, _ = export
    ds = _dataset(data_root, LowLightSpec("lv2021", train_seed=7, fresh_tiles=True), "train", tmp_path)
    a, b = ds.load_image(0)[0], ds.load_image(0)[0]
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert list(ds.buffer) == [0, 0] and ds.ims[0] is None  # indices buffered, images not kept
    calls = _count_degradations(ds)
    ds[1]
    assert len(calls) == 4 and calls[0] == 1  # its own image, then 3 partners read and degraded afresh


def test_training_degradation_is_the_mappers_draw_for_draw(export, tmp_path):
    data_root, _ = export
    ds = _dataset(data_root, LowLightSpec("lv2021", train_seed=5), "train", tmp_path)
    mapper = LowLightDatasetMapper(True, pipeline=build_pipeline("lv2021"), train_seed=5, augmentations=[],
                                   image_format="BGR")
    for i in range(3):
        record = ds.records[ds._stem(ds.im_files[i])]
        kept = dict(record)
        ours, params = ds.degraded_image(i)
        theirs = mapper(dict(record))
        assert ours.dtype == np.uint8 and ours.flags["C_CONTIGUOUS"]
        assert np.array_equal(ours, theirs["image"].numpy().transpose(1, 2, 0))
        assert params == theirs["low_light_params"]
        assert record == kept


@pytest.mark.parametrize("kwargs, match", [
    ({"pipeline": "night"}, "unknown pipeline"),
    ({"pipeline": "lv2021", "overrides": {"gamma": (5.0, 1.0)}}, "gamma"),
    ({"seed": -1}, "seed"),
    ({"pipeline": "lv2021", "fresh_tiles": "yes"}, "fresh_tiles"),
])
def test_low_light_spec_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LowLightSpec(**kwargs)
    with pytest.raises(ValueError, match="unknown key"):
        LowLightSpec.from_dict({"pipline": "lv2021"})


def test_low_light_spec_from_a_detectron2_config_degrades_alike(tmp_path):
    from detectron2.config import get_cfg as d2_cfg
    from wnlb_d2.config import add_wnlb_config
    from wnlb_d2.data import build_pipeline_from_config, eval_rng

    cfg = d2_cfg()
    add_wnlb_config(cfg)
    cfg.INPUT.LOW_LIGHT.ENABLED = True
    cfg.INPUT.LOW_LIGHT.TEST = False
    cfg.INPUT.LOW_LIGHT.SEED = 11
    cfg.INPUT.LOW_LIGHT.LV2021.GAMMA = (3.0, 3.5)
    spec = LowLightSpec.from_config(cfg)
    assert spec["seed"] == 11 and spec["train"] and not spec["val"] and spec["overrides"]["gamma"] == [3.0, 3.5]
    image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    ours = build_pipeline(spec["pipeline"], **spec["overrides"])(image, eval_rng(1, 5))[0]
    theirs = build_pipeline_from_config(cfg)(image, eval_rng(1, 5))[0]
    assert np.array_equal(ours, theirs)
    write_data_yaml(str(tmp_path / "d.yaml"), str(tmp_path), {0: "a"}, low_light=spec)  # YAML-safe values
    cfg.INPUT.LOW_LIGHT.ENABLED = False
    assert LowLightSpec.from_config(cfg)["pipeline"] is None


def test_an_export_is_redone_when_the_dataset_changes(export, tmp_path):
    from wnlb_d2.yolo.api import export_splits

    name = f"{PREFIX}_val_subset"
    subset = {"n": 2}
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get(f"{PREFIX}_val")[:subset["n"]])
        from detectron2.data import MetadataCatalog
        MetadataCatalog.get(name).set(thing_classes=list(MetadataCatalog.get(f"{PREFIX}_val").thing_classes))
    first = export_splits([name], str(tmp_path))[name]
    label = tmp_path / "labels" / name / f"{first['images'][0]['image_id']}.txt"
    label.write_text("stale\n")
    assert export_splits([name], str(tmp_path))[name]["images"] == first["images"]
    assert label.read_text() == "stale\n"  # unchanged dataset: the export is reused
    subset["n"] = 3
    again = export_splits([name], str(tmp_path))[name]
    assert len(again["images"]) == 3 and label.read_text() != "stale\n"
