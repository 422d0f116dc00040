"""Dataset registration: LIS and ExDark in COCO's label space (evaluated with COCOEvaluator),
the offline low-light COCO copy, degenerate annotations, and clear errors for missing files.
Every fixture is written by the test in the dataset's own format."""

import json
import logging
import os
import subprocess
import sys
import uuid

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

import wnlb_d2.data  # noqa: F401  (registers the datasets)
from wnlb_d2.data.datasets import (
    load_coco_instances,
    load_exdark,
    register_coco_lowlight,
    register_exdark,
    register_lis,
)
from wnlb_d2.data.datasets.coco_space import coco_metadata

COCO = coco_metadata()["thing_classes"]
# COCO's own category table (as in instances_val2017.json and its low-light copy).
COCO_CATEGORIES = [{"id": cid, "name": COCO[i]}
                   for cid, i in coco_metadata()["thing_dataset_id_to_contiguous_id"].items()]
# The category table of the revised LIS JSONs: ids 1..8 named as what they hold.
LIS_CATEGORIES = [
    {"id": i + 1, "name": n}
    for i, n in enumerate(
        ["bicycle", "car", "motorbike", "bus", "bottle", "chair", "diningtable", "tvmonitor"])
]
# The table of the original JSONs (Linwei-Chen/LIS issue #23): the same ids, wrong names.
LIS_ORIGINAL_CATEGORIES = [
    {"id": i + 1, "name": n, "supercategory": "none"}
    for i, n in enumerate(
        ["bicycle", "chair", "diningtable", "bottle", "motorbike", "car", "tvmonitor", "bus"])
]
# The authors' layout (their README): variant -> (folder, JSON name, image extension, first number).
LIS_LAYOUT = {
    ("rgb", "dark"): ("RGB-dark", "lis_coco_JPG_{split}+1.json", ".JPG", 2),
    ("rgb", "normal"): ("RGB-normal", "lis_coco_png_{split}.json", ".png", 1),
    ("raw", "dark"): ("RAW-dark", "lis_coco_png_{split}+1.json", ".png", 2),
    ("raw", "normal"): ("RAW-normal", "lis_coco_png_{split}.json", ".png", 1),
}


def _name():
    return f"test_{uuid.uuid4().hex[:10]}"


def _square(x, y, s):
    return [x, y, x + s, y, x + s, y + s, x, y + s]


def _write_lis(root, split="test", variant=("rgb", "dark"), categories=None, names="authors",
               extra_annotations=(), images=True):
    """A two-image LIS split in the authors' layout: e.g. RGB-dark/JPEGImages/{2,4}.JPG listed
    as "./JPEGImages/2.JPG" in annotations/lis_coco_JPG_test+1.json. The objects are, by true
    class: image 1 a motorbike and a dining table, image 2 a tv monitor and a bicycle (ids 3,
    7, 8, 1 in both the original and the revised JSONs, whose tables differ only in names)."""
    folder, json_name, ext, first = LIS_LAYOUT[variant]
    image_dir = os.path.join(root, "LIS", folder, "JPEGImages")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "LIS", "annotations"), exist_ok=True)
    entries = []
    for k in range(2):
        number = first + 2 * k
        if images:
            cv2.imwrite(os.path.join(image_dir, f"{number}{ext}"), np.full((60, 80, 3), 20, np.uint8))
        file_name = {"authors": f"./JPEGImages/{number}{ext}", "bare": f"{number}{ext}"}[names]
        entries.append({"id": number, "file_name": file_name, "height": 60, "width": 80})
    anns = [  # (image, LIS category, square polygon)
        {"id": 11, "image_id": entries[0]["id"], "category_id": 3, "segmentation": [_square(10, 10, 20)]},
        {"id": 12, "image_id": entries[0]["id"], "category_id": 7, "segmentation": [_square(40, 20, 30)]},
        {"id": 13, "image_id": entries[1]["id"], "category_id": 8, "segmentation": [_square(5, 30, 25)]},
        {"id": 14, "image_id": entries[1]["id"], "category_id": 1, "segmentation": [_square(45, 5, 12)]},
    ]
    for ann in anns:
        xs, ys = ann["segmentation"][0][0::2], ann["segmentation"][0][1::2]
        ann.update(bbox=[min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], iscrowd=0,
                   area=float((max(xs) - min(xs)) * (max(ys) - min(ys))))
    anns += [dict(a, image_id=entries[0]["id"]) for a in extra_annotations]
    json_file = os.path.join(root, "LIS", "annotations", json_name.format(split=split))
    with open(json_file, "w") as f:
        json.dump({"images": entries, "annotations": anns,
                   "categories": categories or LIS_CATEGORIES}, f)
    return json_file


def _instances(records, wrong=False, extra_person=True):
    """Predictions equal to the ground truth (or with shifted boxes), plus a false 'person'."""
    outputs = []
    for rec in records:
        h, w = rec["height"], rec["width"]
        boxes, classes, masks = [], [], []
        for obj in rec["annotations"]:
            box = BoxMode.convert(obj["bbox"], obj["bbox_mode"], BoxMode.XYXY_ABS)
            if wrong:
                box = [box[0] + 8, box[1] + 8, box[2] + 8, box[3] + 8]
            boxes.append(box)
            classes.append(obj["category_id"])
            mask = np.zeros((h, w), np.uint8)
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            mask[y0:y1, x0:x1] = 1
            masks.append(mask)
        if extra_person:  # COCO class 0 has no ground truth on LIS/ExDark: it must not count
            boxes.append([0, 0, 10, 10])
            classes.append(COCO.index("person"))
            masks.append(np.pad(np.ones((10, 10), np.uint8), ((0, h - 10), (0, w - 10))))
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.linspace(0.9, 0.5, len(boxes))
        inst.pred_classes = torch.tensor(classes)
        inst.pred_masks = torch.from_numpy(np.stack(masks).astype(bool))
        outputs.append({"instances": inst})
    return outputs


def _evaluate(name, records, outputs, out_dir, tasks=None):
    evaluator = COCOEvaluator(name, tasks=tasks, output_dir=out_dir, use_fast_impl=False)
    evaluator.reset()
    evaluator.process([{"image_id": r["image_id"]} for r in records], outputs)
    return evaluator.evaluate()


def test_lis_maps_onto_coco_classes_and_evaluates_with_coco_evaluator(tmp_path):
    root = str(tmp_path)
    _write_lis(root)
    name = _name()
    register_lis(name, root, "test", "dark")
    records = DatasetCatalog.get(name)
    assert [r["image_id"] for r in records] == [2, 4]
    assert records[0]["file_name"] == os.path.join(root, "LIS", "RGB-dark", "JPEGImages", "2.JPG")
    names = [[COCO[o["category_id"]] for o in r["annotations"]] for r in records]
    assert names == [["motorcycle", "dining table"], ["tv", "bicycle"]]
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == COCO and meta.evaluator_type == "coco" and meta.low_light == "real"

    perfect = _evaluate(name, records, _instances(records), str(tmp_path / "eval1"))
    for task in ("bbox", "segm"):
        assert perfect[task]["AP"] == pytest.approx(100.0)
        assert perfect[task]["AP-motorcycle"] == pytest.approx(100.0)
        assert np.isnan(perfect[task]["AP-person"])  # no LIS ground truth: not in the mean
    # The ground truth the evaluator built is in COCO's category ids.
    with open(tmp_path / "eval1" / f"{name}_coco_format.json") as f:
        gt = json.load(f)
    assert sorted({a["category_id"] for a in gt["annotations"]}) == [2, 4, 67, 72]
    shifted = _evaluate(name, records, _instances(records, wrong=True), str(tmp_path / "eval2"))
    assert shifted["bbox"]["AP"] < 50


@pytest.mark.parametrize("variant", sorted(LIS_LAYOUT))
@pytest.mark.parametrize("table", ["original", "revised"])
def test_lis_every_variant_loads_from_the_authors_layout(tmp_path, variant, table, caplog):
    root = str(tmp_path)
    categories = LIS_ORIGINAL_CATEGORIES if table == "original" else LIS_CATEGORIES
    json_file = _write_lis(root, split="traintest", variant=variant, categories=categories)
    folder, json_name, ext, first = LIS_LAYOUT[variant]
    assert json_file.endswith(json_name.format(split="traintest"))
    name = _name()
    register_lis(name, root, "traintest", variant[1], image_type=variant[0])
    with caplog.at_level(logging.WARNING, logger="wnlb_d2.data.datasets.lis"):
        records = DatasetCatalog.get(name)
    # "./JPEGImages/2.JPG" is relative to the variant folder, as the authors' img_prefix.
    expected = [os.path.join(root, "LIS", folder, "JPEGImages", f"{n}{ext}") for n in (first, first + 2)]
    assert [r["file_name"] for r in records] == expected
    assert all(os.path.isfile(p) for p in expected)
    names = [[COCO[o["category_id"]] for o in r["annotations"]] for r in records]
    assert names == [["motorcycle", "dining table"], ["tv", "bicycle"]]
    assert ("issue #23" in caplog.text) == (table == "original")
    meta = MetadataCatalog.get(name)
    assert meta.image_extension == ext and meta.low_light == ("real" if variant[1] == "dark" else "none")


def test_lis_normal_json_serves_both_normal_variants_and_bare_names(tmp_path):
    root = str(tmp_path)
    _write_lis(root, split="test", variant=("rgb", "normal"))
    json_file = _write_lis(root, split="test", variant=("raw", "normal"), names="bare")
    rgb, raw = _name(), _name()
    register_lis(rgb, root, "test", "normal", image_type="rgb")
    register_lis(raw, root, "test", "normal", image_type="raw")
    assert MetadataCatalog.get(rgb).lis_json_file == MetadataCatalog.get(raw).lis_json_file == json_file
    assert [r["file_name"] for r in DatasetCatalog.get(rgb)] == [
        os.path.join(root, "LIS", "RGB-normal", "JPEGImages", f"{n}.png") for n in (1, 3)]
    assert [r["file_name"] for r in DatasetCatalog.get(raw)] == [
        os.path.join(root, "LIS", "RAW-normal", "JPEGImages", f"{n}.png") for n in (1, 3)]


def test_lis_original_table_erratum_modes(tmp_path):
    root = str(tmp_path)
    _write_lis(root, categories=LIS_ORIGINAL_CATEGORIES)
    kept = _name()
    register_lis(kept, root, "test", "dark", erratum="keep")  # the names as written: wrong
    assert [[COCO[o["category_id"]] for o in r["annotations"]] for r in DatasetCatalog.get(kept)] == [
        ["dining table", "tv"], ["bus", "bicycle"]]
    fixed = _name()
    register_lis(fixed, root, "test", "dark", erratum="fix")
    assert COCO[DatasetCatalog.get(fixed)[0]["annotations"][0]["category_id"]] == "motorcycle"
    _write_lis(root, categories=LIS_CATEGORIES)
    with pytest.raises(ValueError, match="is not the original LIS table"):
        DatasetCatalog.get(fixed)
    with pytest.raises(ValueError, match="erratum mode 'maybe'"):
        register_lis(_name(), root, "test", "dark", erratum="maybe")


def test_lis_variants_and_missing_files(tmp_path):
    root = str(tmp_path)
    name = _name()
    register_lis(name, root, "train", "normal", image_type="raw")
    expected = os.path.join(root, "LIS", "annotations", "lis_coco_png_train.json")
    with pytest.raises(FileNotFoundError, match="datasets/README.md") as err:
        DatasetCatalog.get(name)
    assert expected in str(err.value)
    _write_lis(root, split="train", variant=("raw", "normal"))
    assert [r["image_id"] for r in DatasetCatalog.get(name)] == [1, 3]
    # The dark sRGB JSON has no non-"+1" twin: sRGB normal reads the PNG JSON.
    other = _name()
    register_lis(other, root, "traintest", "normal")
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get(other)
    assert os.path.join(root, "LIS", "annotations", "lis_coco_png_traintest.json") in str(err.value)
    # The JSON exists but the variant folder does not.
    with open(os.path.join(root, "LIS", "annotations", "lis_coco_JPG_traintest+1.json"), "w") as f:
        json.dump({"images": [{"id": 2, "file_name": "./JPEGImages/2.JPG", "height": 4, "width": 4}],
                   "annotations": [], "categories": LIS_CATEGORIES}, f)
    dark = _name()
    register_lis(dark, root, "traintest", "dark")
    with pytest.raises(FileNotFoundError, match="RGB-dark"):
        DatasetCatalog.get(dark)
    with pytest.raises(ValueError, match="split"):
        register_lis(_name(), root, "val", "dark")


def test_missing_images_are_reported_when_the_dataset_is_loaded(tmp_path):
    root = str(tmp_path)
    json_file = _write_lis(root)
    # The RAW PNG JSON's names beside the sRGB dark images: the names end in .png, the files in .JPG.
    with open(json_file) as f:
        data = json.load(f)
    for im in data["images"]:
        im["file_name"] = im["file_name"].replace(".JPG", ".png")
    data["images"][0]["file_name"] = "./JPEGImages/2.JPG"  # this one exists
    with open(json_file, "w") as f:
        json.dump(data, f)
    name = _name()
    register_lis(name, root, "test", "dark")
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get(name)
    message = str(err.value)
    assert "1 of 2 images are missing" in message
    assert os.path.join(root, "LIS", "RGB-dark", "JPEGImages", "4.png") in message
    assert "do not end in '.JPG'" in message and "\n" not in message
    # A plain COCO-format dataset: the same check.
    os.remove(os.path.join(root, "LIS", "RGB-dark", "JPEGImages", "2.JPG"))
    with pytest.raises(FileNotFoundError, match="2 of 2 images are missing; the first is .*2.JPG"):
        load_coco_instances(json_file, os.path.join(root, "LIS", "RGB-dark"))


def test_lis_unknown_class_empty_and_corrupt_json(tmp_path):
    root = str(tmp_path)
    json_file = _write_lis(root)
    with open(json_file) as f:
        data = json.load(f)
    data["categories"].append({"id": 9, "name": "unicorn"})
    with open(json_file, "w") as f:
        json.dump(data, f)
    name = _name()
    register_lis(name, root, "test", "dark")
    with pytest.raises(ValueError, match="'unicorn'"):
        DatasetCatalog.get(name)
    with open(json_file, "w") as f:
        json.dump({"images": [], "annotations": [], "categories": LIS_CATEGORIES}, f)
    with pytest.raises(ValueError, match=r"lis_coco_JPG_test\+1.json lists no images \(empty dataset\)"):
        DatasetCatalog.get(name)
    with open(json_file, "w") as f:
        f.write('{"images": [{"id": 1,')
    with pytest.raises(ValueError, match="is not valid JSON"):
        DatasetCatalog.get(name)


def test_degenerate_boxes_and_segmentations_are_dropped_counted_and_logged(tmp_path, caplog):
    root = str(tmp_path)
    bad = [  # each would later break or mislead detectron2
        {"id": 91, "category_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 0, "segmentation": []},
        {"id": 92, "category_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 0, "segmentation": [[1, 1, 5, 5]]},
        {"id": 93, "category_id": 2, "bbox": [1, 1, 5, 0], "iscrowd": 0,
         "segmentation": [[1, 1, 3, 1, 6, 1, 2, 1]]},  # zero-height box
        {"id": 94, "category_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 0,
         "segmentation": {"size": [60, 80], "counts": [4800]}},  # empty RLE
        {"id": 96, "category_id": 2, "bbox": [9, 9, -4, 5], "iscrowd": 0,
         "segmentation": [_square(5, 9, 4)]},  # negative width
    ]
    partly = {"id": 95, "category_id": 2, "bbox": [1, 1, 9, 9], "iscrowd": 0,
              "segmentation": [[1, 1, 2, 2], _square(1, 1, 9)]}  # one bad part, one good
    json_file = _write_lis(root, extra_annotations=bad + [partly])
    report = {}
    with caplog.at_level(logging.WARNING, logger="wnlb_d2.data.datasets.coco_instances"):
        records = load_coco_instances(json_file, os.path.join(root, "LIS", "RGB-dark"), report=report)
    objs = records[0]["annotations"]
    assert len(objs) == 3  # the 2 good ones of image 2 and the partly good one
    assert objs[-1]["segmentation"] == [_square(1, 1, 9)]
    assert report == {"bad_boxes": 2, "bad_polygons": 1, "no_mask": 3}
    assert "skipped 3 of 10 annotations" in caplog.text and "Annotation ids: 91, 92, 94" in caplog.text
    assert "dropped 2 of 10 annotations whose box has zero or negative width" in caplog.text
    assert "Annotation ids: 93, 96" in caplog.text
    assert "dropped 1 invalid polygons (fewer than 3 points" in caplog.text
    # What detectron2 then does with them works (mixed masks used to fail here).
    from detectron2.data import detection_utils as utils
    for rec in records:
        annos = [dict(o, bbox_mode=o["bbox_mode"]) for o in rec["annotations"]]
        inst = utils.annotations_to_instances(annos, (60, 80), mask_format="polygon")
        assert len(inst) == len(annos)


def test_coco_json_without_required_keys_names_file_and_key(tmp_path):
    json_file = str(tmp_path / "instances.json")
    os.makedirs(tmp_path / "images")
    for content, key in (({}, r"\['images', 'categories'\]"),
                         ({"images": [{"id": 1, "file_name": "a.png", "height": 2, "width": 2}]},
                          r"\['categories'\]")):
        with open(json_file, "w") as f:
            json.dump(content, f)
        with pytest.raises(ValueError, match=f"instances.json lacks the key\\(s\\) {key}"):
            load_coco_instances(json_file, str(tmp_path / "images"))
    with open(json_file, "w") as f:
        json.dump({"images": [{"id": 1, "file_name": "a.png", "height": 2, "width": 2}],
                   "categories": {"id": 1}}, f)
    with pytest.raises(ValueError, match="'categories' is a dict; expected a list"):
        load_coco_instances(json_file, str(tmp_path / "images"))


def _write_coco_lowlight(root, segmentations):
    """coco/lowlight/{val2017, annotations} with one 40x40 image and one bicycle per segmentation."""
    base = os.path.join(root, "coco", "lowlight")
    os.makedirs(os.path.join(base, "val2017"), exist_ok=True)
    os.makedirs(os.path.join(base, "annotations"), exist_ok=True)
    cv2.imwrite(os.path.join(base, "val2017", "000000000139.jpg"), np.full((40, 40, 3), 9, np.uint8))
    anns = [{"id": i + 1, "image_id": 139, "category_id": 2, "iscrowd": 0, "area": 100.0,
             "bbox": [2 + 12 * i, 2, 10, 10], "segmentation": segm}
            for i, segm in enumerate(segmentations)]
    json_file = os.path.join(base, "annotations", "instances_val2017.json")
    with open(json_file, "w") as f:
        json.dump({"images": [{"id": 139, "file_name": "000000000139.jpg", "height": 40, "width": 40}],
                   "annotations": anns, "categories": COCO_CATEGORIES}, f)
    return json_file


def test_invalid_polygons_never_reach_the_evaluator(tmp_path):
    root = str(tmp_path)
    # A 2-point polygon alone (instance dropped) and before a good one (polygon dropped).
    json_file = _write_coco_lowlight(root, [
        [_square(2, 2, 10)], [[14, 2, 24, 12]], [[26, 2, 36, 12], _square(26, 2, 10)]])
    # The defect: pycocotools, reading this JSON as ground truth, fails on the short polygon.
    from pycocotools.coco import COCO as PyCOCO
    with pytest.raises((TypeError, ValueError)):  # TypeError in pycocotools 2.0.x
        gt = PyCOCO(json_file)
        gt.annToRLE(gt.anns[2])
    name = _name()
    register_coco_lowlight(name, root, "val2017")
    records = DatasetCatalog.get(name)
    assert [o["bbox"][0] for o in records[0]["annotations"]] == [2, 26]
    assert not hasattr(MetadataCatalog.get(name), "json_file")  # so COCOEvaluator converts the dicts
    result = _evaluate(name, records, _instances(records, extra_person=False), str(tmp_path / "eval"))
    assert result["segm"]["AP"] == pytest.approx(100.0) and result["bbox"]["AP"] == pytest.approx(100.0)
    # A clean file is scored as it is, like the stock coco_2017_* (json_file set on loading).
    clean_root = str(tmp_path / "clean")
    clean_json = _write_coco_lowlight(clean_root, [[_square(2, 2, 10)]])
    clean = _name()
    register_coco_lowlight(clean, clean_root, "val2017")
    records = DatasetCatalog.get(clean)
    assert MetadataCatalog.get(clean).json_file == clean_json
    result = _evaluate(clean, records, _instances(records, extra_person=False), str(tmp_path / "eval2"))
    assert result["segm"]["AP"] == pytest.approx(100.0)


def _write_exdark(root, exif_image=True):
    base = os.path.join(root, "ExDark")
    rows = ["Name | Class | Light | In/Out | Train/Val/Test"]

    def add(cls, name, split, boxes, size=(40, 60), exif=None, on_disk=None):
        img_dir = os.path.join(base, "ExDark", cls)
        ann_dir = os.path.join(base, "ExDark_Annno", cls)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        disk = on_disk or name
        img = Image.fromarray(np.full((size[0], size[1], 3), 30, np.uint8))
        if exif:
            ex = Image.Exif()
            ex[0x0112] = exif
            img.save(os.path.join(img_dir, disk), exif=ex)
        else:
            img.save(os.path.join(img_dir, disk))
        with open(os.path.join(ann_dir, disk + ".txt"), "w") as f:
            f.write("% bbGt version=3\n")
            for b in boxes:
                f.write(" ".join(str(v) for v in b) + " 0 0 0 0 0 0 0\n")
        label = ["Bicycle", "Boat", "Bottle", "Bus", "Car", "Cat", "Chair", "Cup", "Dog",
                 "Motorbike", "People", "Table"].index(cls) + 1
        rows.append(f"{name} {label} 2 1 {split}")

    add("People", "2015_00001.jpg", 1, [("People", 5, 5, 10, 20), ("Table", 30, 10, 20, 20)])
    add("Motorbike", "2015_00002.JPG", 1, [("Motorbike", 50, 30, 30, 20)],  # reaches outside: clipped
        on_disk="2015_00002.jpg")  # the list and the disk disagree on the case
    add("Cup", "2015_00003.png", 3, [("Cup", 10, 10, 0, 5), ("Cup", 2, 3, 10, 8)])  # zero width: skipped
    if exif_image:
        # Stored 40x60 (h x w), EXIF 6: detectron2 reads it rotated to 60x40.
        add("Car", "2015_00004.jpg", 3, [("Car", 0, 0, 20, 10)], exif=6)
    rows.append("2015_00005.jpg 5 2 1 2")  # listed, not on disk
    with open(os.path.join(base, "imageclasslist.txt"), "w") as f:
        f.write("\n".join(rows) + "\n")
    return base


def test_exdark_parses_bbgt_maps_to_coco_and_evaluates(tmp_path, caplog):
    root = str(tmp_path)
    _write_exdark(root)
    with caplog.at_level(logging.WARNING, logger="wnlb_d2.data.datasets.exdark"):
        train = load_exdark(root, "train")
        test = load_exdark(root, "test")
        everything = load_exdark(root, "all")
    assert [r["image_id"] for r in train] == [1, 2] and [r["image_id"] for r in test] == [3, 4]
    assert len(everything) == 4  # image 5 is missing on disk
    people = train[0]["annotations"]
    assert [COCO[o["category_id"]] for o in people] == ["person", "dining table"]
    assert people[0]["bbox"] == [5, 5, 15, 25] and people[0]["bbox_mode"] == BoxMode.XYXY_ABS
    assert train[1]["file_name"].endswith(os.path.join("Motorbike", "2015_00002.jpg"))
    assert train[1]["annotations"][0]["bbox"] == [50, 30, 60, 40]  # clipped to the 60x40 image
    assert [o["bbox"] for o in test[0]["annotations"]] == [[2, 3, 12, 11]]
    car = test[1]
    assert (car["height"], car["width"]) == (60, 40)
    # Box (0, 0, 20, 10) in the stored 60x40 frame, rotated 90 deg clockwise with the image.
    assert car["annotations"][0]["bbox"] == [30, 0, 40, 20]
    for message in ("missing, skipped (1)", "2015_00005.jpg", "zero area", "clipped to it (1)",
                    "EXIF orientation"):
        assert message in caplog.text

    name = _name()
    register_exdark(name, root, "all")
    records = DatasetCatalog.get(name)
    # A Mask R-CNN's output (with masks), scored on boxes as the metadata says.
    tasks = MetadataCatalog.get(name).evaluation_tasks
    result = _evaluate(name, records, _instances(records), str(tmp_path / "eval"), tasks)
    assert sorted(result) == ["bbox"] and result["bbox"]["AP"] == pytest.approx(100.0)
    assert np.isnan(result["bbox"]["AP-bus"])


def test_exdark_skips_class_names_that_are_not_exdark_classes(tmp_path, caplog):
    root = str(tmp_path)
    base = _write_exdark(root, exif_image=False)
    with open(os.path.join(base, "ExDark_Annno", "Cup", "2015_00003.png.txt"), "a") as f:
        # "Horse" is a COCO class (it used to load silently as one), "Unicorn" is not even that.
        f.write("Horse 1 1 3 3 0 0 0 0 0 0 0\nUnicorn 1 1 3 3 0 0 0 0 0 0 0\ncup 20 20 5 5 0 0 0 0 0 0 0\n")
    with caplog.at_level(logging.WARNING, logger="wnlb_d2.data.datasets.exdark"):
        (cup,) = load_exdark(root, "test")
    assert [COCO[o["category_id"]] for o in cup["annotations"]] == ["cup", "cup"]  # case-insensitive
    assert "is not one of ExDark's 12" in caplog.text and "skipped (2)" in caplog.text
    assert "2015_00003.png.txt:4 ('Horse')" in caplog.text and "txt:5 ('Unicorn')" in caplog.text


def test_exdark_bad_input(tmp_path):
    root = str(tmp_path)
    name = _name()
    register_exdark(name, root, "val")
    with pytest.raises(FileNotFoundError, match="ExDark image folder not found") as err:
        DatasetCatalog.get(name)
    assert os.path.join(root, "ExDark", "ExDark") in str(err.value)
    base = _write_exdark(root, exif_image=False)
    # val's only image is listed under Car, whose folders were never unzipped.
    with pytest.raises(FileNotFoundError, match=r"image folder of class Car \(1 images of split 'val'"):
        load_exdark(root, "val")
    os.makedirs(os.path.join(base, "ExDark", "Car"))
    with pytest.raises(FileNotFoundError, match="ExDark annotation folder of class Car"):
        load_exdark(root, "val")
    os.makedirs(os.path.join(base, "ExDark_Annno", "Car"))
    with pytest.raises(ValueError, match="No image of ExDark split 'val'"):
        load_exdark(root, "val")  # only the missing image is in val
    with open(os.path.join(base, "ExDark_Annno", "Cup", "2015_00003.png.txt"), "w") as f:
        f.write("% bbGt version=3\nCup 1 x 3 3 0 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match=r"2015_00003.png.txt:2: cannot parse"):
        load_exdark(root, "test")
    with open(os.path.join(base, "imageclasslist.txt"), "w") as f:
        f.write("Name | Class | Light | In/Out | Train/Val/Test\n2015_00001.jpg 13 2 1 1\n")
    with pytest.raises(ValueError, match=r"imageclasslist.txt:2: cannot parse"):
        load_exdark(root, "train")
    with open(os.path.join(base, "imageclasslist.txt"), "w") as f:
        f.write("Name | Class | Light | In/Out | Train/Val/Test\n")
    with pytest.raises(ValueError, match="lists no images"):
        load_exdark(root, "train")


def test_coco_lowlight_copy_needs_the_finished_rendering(tmp_path):
    root = str(tmp_path)
    name = _name()
    register_coco_lowlight(name, root, "val2017")
    meta = MetadataCatalog.get(name)
    expected = os.path.join(root, "coco", "lowlight", "annotations", "instances_val2017.json")
    assert meta.annotation_file == expected and meta.thing_classes == COCO and meta.low_light == "synthetic"
    with pytest.raises(FileNotFoundError, match="prepare_lowlight_coco.py") as err:
        DatasetCatalog.get(name)
    assert expected in str(err.value)
    os.makedirs(os.path.join(root, "coco", "lowlight", "val2017"))
    os.makedirs(os.path.dirname(expected))
    with open(expected, "w") as f:
        json.dump({"images": [{"id": 139, "file_name": "000000000139.jpg", "height": 4, "width": 4}],
                   "annotations": [{"id": 1, "image_id": 139, "category_id": 90, "iscrowd": 0,
                                    "bbox": [0, 0, 2, 2], "segmentation": [_square(0, 0, 2)]}],
                   "categories": [{"id": 90, "name": "toothbrush"}]}, f)
    # The copy lists an image that was never rendered: one clear error at loading time.
    with pytest.raises(FileNotFoundError, match="1 of 1 images are missing; the first is .*000000000139.jpg"):
        DatasetCatalog.get(name)
    cv2.imwrite(os.path.join(root, "coco", "lowlight", "val2017", "000000000139.jpg"),
                np.zeros((4, 4, 3), np.uint8))
    (record,) = DatasetCatalog.get(name)
    assert record["file_name"] == os.path.join(root, "coco", "lowlight", "val2017", "000000000139.jpg")
    assert COCO[record["annotations"][0]["category_id"]] == "toothbrush"
    assert meta.json_file == expected  # clean: COCOEvaluator reads COCO's own file


def test_builtin_names_use_detectron2_datasets(tmp_path):
    # Registration reads $DETECTRON2_DATASETS on import, as detectron2 does: a fresh process.
    root = str(tmp_path)
    _write_lis(root)
    _write_exdark(root)
    code = (
        "import wnlb_d2.data\n"
        "from detectron2.data import DatasetCatalog\n"
        "names = ['coco_2017_train_lowlight', 'coco_2017_val_lowlight', 'exdark_train', 'exdark_val',\n"
        "         'exdark_test', 'exdark_all', 'wnlb_demo_train', 'wnlb_demo_val',\n"
        "         'wnlb_demo_train_lowlight', 'wnlb_demo_val_lowlight']\n"
        "names += [f'lis{r}_{s}_{l}' for r in ('', '_raw') for s in ('train', 'test', 'traintest')\n"
        "          for l in ('dark', 'normal')]\n"
        "missing = sorted(set(names) - set(DatasetCatalog.list()))\n"
        "assert not missing, missing\n"
        "print(len(DatasetCatalog.get('lis_test_dark')), len(DatasetCatalog.get('exdark_all')))\n"
        "try:\n"
        "    DatasetCatalog.get('coco_2017_val_lowlight')\n"
        "except FileNotFoundError as e:\n"
        "    print('missing:', e)\n"
    )
    env = dict(os.environ, DETECTRON2_DATASETS=root, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "2 4"
    assert os.path.join(root, "coco", "lowlight", "annotations", "instances_val2017.json") in lines[1]


# --- issue 20: repeated image ids, RLE masks with the polygon format --------------------------------


def test_repeated_image_ids_are_refused(tmp_path):
    """Two images with one id: an annotation of image 7 used to land on both (or the wrong one)."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(images / name), np.zeros((20, 20, 3), np.uint8))
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.png", "height": 20, "width": 20},
                   {"id": 7, "file_name": "b.png", "height": 20, "width": 20},
                   {"id": 8, "file_name": "c.png", "height": 20, "width": 20}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0,
                         "segmentation": [_square(1, 1, 5)]}],
        "categories": [{"id": 1, "name": "thing"}],
    }))
    with pytest.raises(ValueError) as info:
        load_coco_instances(str(json_file), str(images))
    msg = str(info.value)
    assert msg.startswith(f"{json_file}: 1 image ids are listed more than once (7)") and "\n" not in msg, msg


def test_rle_masks_with_the_polygon_format_name_input_mask_format(tmp_path):
    """A non-crowd RLE mask and INPUT.MASK_FORMAT 'polygon' (the default): detectron2 says only
    "Failed to use mask_format=='polygon'"; the mapper names the key and the fix. Crowd RLEs
    (dropped in training) and 'bitmask' keep working."""
    import pycocotools.mask as mask_util
    from detectron2.data import transforms as T

    from wnlb_d2.data.mapper import LowLightDatasetMapper

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((20, 20, 3), np.uint8))
    mask = np.zeros((20, 20), np.uint8, order="F")
    mask[2:9, 3:12] = 1
    rle = mask_util.encode(mask)
    rle["counts"] = rle["counts"].decode()

    def record(iscrowd):
        return {"file_name": str(path), "height": 20, "width": 20, "image_id": 1,
                "annotations": [{"bbox": [3, 2, 9, 7], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
                                 "iscrowd": iscrowd, "segmentation": dict(rle)},
                                {"bbox": [1, 1, 5, 5], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
                                 "iscrowd": 0, "segmentation": [_square(1, 1, 5)]}]}

    def mapper(fmt):
        return LowLightDatasetMapper(True, augmentations=[T.NoOpTransform()], image_format="BGR",
                                     use_instance_mask=True, instance_mask_format=fmt)

    with pytest.raises(ValueError) as info:
        mapper("polygon")(record(0))
    msg = str(info.value)
    assert str(path) in msg and "INPUT.MASK_FORMAT" in msg and "'bitmask'" in msg and "\n" not in msg, msg
    assert len(mapper("polygon")(record(1))["instances"]) == 1  # the crowd RLE is dropped, as before
    assert len(mapper("bitmask")(record(0))["instances"]) == 2
