"""COCO scoring of YOLO predictions: detectron2's metric names, values computed by hand."""

import importlib.util
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest

# find_spec, not importorskip: importing ultralytics before wnlb_d2.yolo would skip the
# package's environment defaults (offline, config folder outside the home folder).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

from wnlb_d2.yolo.evaluate import COCO_METRICS, results_to_dataset_ids, score_coco  # noqa: E402

H, W = 40, 60


def _rle(x, y, w, h):
    m = np.zeros((H, W), np.uint8, order="F")
    m[y:y + h, x:x + w] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _gt():
    # Image 7: one cat-3 object (20x20 px, "small"); image 9: one cat-3 object and a crowd region.
    anns = [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0,
         "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
        {"id": 2, "image_id": 9, "category_id": 3, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0,
         "segmentation": [[5, 5, 25, 5, 25, 25, 5, 25]]},
        {"id": 3, "image_id": 9, "category_id": 3, "bbox": [35, 5, 20, 30], "area": 600, "iscrowd": 1,
         "segmentation": _rle(35, 5, 20, 30)},
    ]
    return {"images": [{"id": 7, "height": H, "width": W, "file_name": "7.png"},
                       {"id": 9, "height": H, "width": W, "file_name": "9.png"}],
            "annotations": anns,
            "categories": [{"id": 3, "name": "star"}, {"id": 5, "name": "cross"}]}


def _det(image_id, x, y, w, h, score, cat=3):
    return {"image_id": image_id, "category_id": cat, "bbox": [x, y, w, h], "score": score,
            "segmentation": _rle(x, y, w, h)}


def test_perfect_detections_score_100():
    res = score_coco(_gt(), [_det(7, 10, 10, 20, 20, 0.9), _det(9, 5, 5, 20, 20, 0.8)])
    for task in ("segm", "bbox"):
        assert [res[task][m] for m in ("AP", "AP50", "AP75", "APs")] == pytest.approx([100.0] * 4)
        assert math.isnan(res[task]["APm"]) and math.isnan(res[task]["APl"])  # no such objects
        assert res[task]["AP-star"] == pytest.approx(100.0) and math.isnan(res[task]["AP-cross"])


def test_hand_computed_ap_with_a_false_positive_and_a_crowd_hit():
    # Sorted by score: FP (0.95, image 7, no overlap), TP (0.9, image 7), crowd hit (0.85,
    # ignored by COCOeval), TP (0.8, image 9). Precision/recall after each counted detection:
    # (0, 0), (1/2, 1/2), (2/3, 1). COCO's interpolated precision is max precision at recall
    # >= r: 2/3 for every r in the 101 recall points, at every IoU threshold (exact boxes):
    # AP = 2/3.
    dets = [_det(7, 40, 25, 10, 10, 0.95), _det(7, 10, 10, 20, 20, 0.9), _det(9, 35, 5, 20, 30, 0.85),
            _det(9, 5, 5, 20, 20, 0.8)]
    res = score_coco(_gt(), dets)
    for task in ("segm", "bbox"):
        assert res[task]["AP"] == pytest.approx(200 / 3)
        assert res[task]["AP50"] == pytest.approx(200 / 3) and res[task]["AP75"] == pytest.approx(200 / 3)
    # A box shifted by 4 px: intersection 16x20 = 320, union 480, IoU 2/3: a hit at the
    # thresholds 0.50, 0.55, 0.60, 0.65 (4 of 10) and a miss above, so AP = 40 with one object.
    gt = _gt()
    gt["annotations"] = gt["annotations"][:1]
    gt["images"] = gt["images"][:1]
    res = score_coco(gt, [_det(7, 14, 10, 20, 20, 0.9)])
    assert res["bbox"]["AP50"] == pytest.approx(100.0) and res["bbox"]["AP75"] == pytest.approx(0.0)
    assert res["bbox"]["AP"] == pytest.approx(40.0)
    assert set(COCO_METRICS) <= set(res["segm"])


def test_results_map_back_to_dataset_ids():
    index = {"dataset": "d", "images": [{"yolo_file": "images/val/7.png", "image_id": 7},
                                        {"yolo_file": "images/val/abc.png", "image_id": "abc"}],
             "category_ids": {0: 3, 1: 5}}
    raw = [{"image_id": 7, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5},
           {"image_id": "abc", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.4, "segmentation": {"x": 1}}]
    index["images"].append({"yolo_file": "images/val/007.png", "image_id": "007"})
    # Ultralytics writes image_id int("007") = 7 and the file name: the file name decides.
    raw.append({"image_id": 7, "file_name": "007.png", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.3})
    out = results_to_dataset_ids(raw, index)
    assert [(r["image_id"], r["category_id"]) for r in out] == [(7, 5), ("abc", 3), ("007", 3)]
    assert "segmentation" not in out[0] and out[1]["segmentation"] == {"x": 1}
    with pytest.raises(ValueError, match="not in the export index"):
        results_to_dataset_ids([{"image_id": 8, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], index)
    with pytest.raises(ValueError, match="iou type"):
        score_coco(_gt(), raw[:0] + [_det(7, 10, 10, 20, 20, 0.9)], iou_types=("keypoints",))


def test_bootstrap_interval_as_the_detectron2_evaluator():
    # Bug: the YOLO rows had no image-level bootstrap interval (results.json "bootstrap" empty)
    # while the detectron2 rows have one from TEST.BOOTSTRAP_SAMPLES.
    from wnlb_d2.experiment.stats import bootstrap_ap

    dets = [_det(7, 40, 25, 10, 10, 0.95), _det(7, 10, 10, 20, 20, 0.9), _det(9, 5, 5, 20, 20, 0.8)]
    plain = score_coco(_gt(), dets)
    assert "AP-ci95-lo" not in plain["segm"]
    res = score_coco(_gt(), dets, bootstrap_samples=50, bootstrap_seed=3)
    for task in ("segm", "bbox"):
        lo, hi = res[task]["AP-ci95-lo"], res[task]["AP-ci95-hi"]
        assert 0.0 <= lo <= res[task]["AP"] <= hi <= 100.0 and lo < hi
        assert res[task]["AP"] == pytest.approx(plain[task]["AP"])
    again = score_coco(_gt(), dets, bootstrap_samples=50, bootstrap_seed=3)  # seeded: the same interval
    assert [again[t][k] for t in res for k in ("AP-ci95-lo", "AP-ci95-hi")] == \
        [res[t][k] for t in res for k in ("AP-ci95-lo", "AP-ci95-hi")]
    # The interval is the one bootstrap_ap gives for the same COCOeval (the detectron2 evaluator's).
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = _gt()
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes([{k: v for k, v in d.items() if k != "segmentation"} for d in dets]), "bbox")
    ev.evaluate()
    ev.accumulate()
    assert bootstrap_ap(ev, num_samples=50, seed=3)["ci95"] == pytest.approx([res["bbox"]["AP-ci95-lo"],
                                                                              res["bbox"]["AP-ci95-hi"]])
    none = score_coco(_gt(), [], bootstrap_samples=50)  # no detections: AP 0 and a zero-width interval
    assert [none["segm"][k] for k in ("AP", "AP-ci95-lo", "AP-ci95-hi")] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="bootstrap_samples"):
        score_coco(_gt(), dets, bootstrap_samples=1)
