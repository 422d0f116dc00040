"""Statistics of the study: summaries, paired t intervals, image-level bootstrap of COCO AP."""

import contextlib
import io
import math

import numpy as np
import pytest
import scipy.stats
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from wnlb_d2.experiment.stats import (accumulate_ap, bootstrap_ap, differs_from_zero, paired_difference,
                                      student_t_quantile, summarise)
from wnlb_d2.experiment.stats import _per_image_matches


def test_summarise_matches_hand_computation():
    s = summarise([20.0, 22.0, 24.0, float("nan")])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(22.0)
    # sample std: sqrt(((-2)^2 + 0 + 2^2) / (3 - 1)) = 2
    assert s["std"] == pytest.approx(2.0)
    one = summarise([5.0])
    assert one["n"] == 1 and one["mean"] == 5.0 and math.isnan(one["std"])


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_student_t_quantile_matches_tables(df, expected):
    # Two-sided 95 % critical values from any printed t table.
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.01])
def test_student_t_quantile_matches_closed_forms(p):
    # df = 1 is the Cauchy distribution, t = tan(pi (p - 1/2)); df = 2 has
    # t = (2p - 1) / sqrt(2 p (1 - p)). t(0.975, 2) = 4.30265272974946 exactly to 15 digits.
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
    assert student_t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
    assert student_t_quantile(0.975, 2) == pytest.approx(4.30265272974946, abs=1e-13)


def test_student_t_quantile_is_scipys_and_refuses_bad_input():
    for p, df in [(0.975, 3), (0.9, 7.5), (0.3, 12)]:
        assert student_t_quantile(p, df) == scipy.stats.t.ppf(p, df)
    for p in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="p must be in"):
            student_t_quantile(p, 3)
    for df in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="df must be positive"):
            student_t_quantile(0.975, df)


def test_paired_difference_hand_computation():
    a = [22.0, 21.0, 23.5]
    b = [21.0, 21.5, 22.0]
    d = paired_difference(a, b)
    diffs = np.array([1.0, -0.5, 1.5])
    sd = math.sqrt(((diffs - diffs.mean()) ** 2).sum() / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)
    assert d["n"] == 3
    assert d["mean_diff"] == pytest.approx(diffs.mean())
    assert d["ci95"] == pytest.approx([diffs.mean() - half, diffs.mean() + half], abs=1e-6)
    assert not differs_from_zero(d["ci95"])
    clear = paired_difference([5.0, 5.2, 4.9, 5.1], [1.0, 1.1, 0.9, 1.2])
    assert differs_from_zero(clear["ci95"])
    single = paired_difference([1.0], [0.0])
    assert single["n"] == 1 and all(math.isnan(x) for x in single["ci95"])
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_difference([1.0, 2.0], [1.0])


def _random_coco(num_images=14, num_cats=3, seed=0, duplicate=None):
    """A GT and a detection set with boxes jittered from the GT (some missed, some false)."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    base = []
    for i in range(num_images):
        objs = []
        for _ in range(int(rng.integers(0, 4))):
            x, y, w, h = rng.uniform(0, 80), rng.uniform(0, 80), rng.uniform(8, 40), rng.uniform(8, 40)
            objs.append((int(rng.integers(1, num_cats + 1)), [x, y, w, h]))
        ds = []
        for c, (x, y, w, h) in objs:
            if rng.random() < 0.8:
                j = rng.normal(0, 3, 4)
                ds.append((c, [x + j[0], y + j[1], max(2, w + j[2]), max(2, h + j[3])], float(rng.uniform(0.3, 1))))
        for _ in range(int(rng.integers(0, 3))):
            ds.append((int(rng.integers(1, num_cats + 1)),
                       [rng.uniform(0, 80), rng.uniform(0, 80), rng.uniform(8, 30), rng.uniform(8, 30)],
                       float(rng.uniform(0, 0.8))))
        base.append((objs, ds))
    order = list(range(num_images)) if duplicate is None else [i for i, c in enumerate(duplicate) for _ in range(c)]
    for new_id, i in enumerate(order, start=1):
        images.append({"id": new_id, "width": 128, "height": 128, "file_name": f"{new_id}.png"})
        objs, ds = base[i]
        for c, box in objs:
            anns.append({"id": len(anns) + 1, "image_id": new_id, "category_id": c, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
        for c, box, s in ds:
            dets.append({"image_id": new_id, "category_id": c, "bbox": box, "score": s})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_cats + 1)]}
    return gt, dets


def _evaluate(gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        dt = coco.loadRes(dets)
        ev = COCOeval(coco, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_accumulate_equals_pycocotools():
    gt, dets = _random_coco()
    ev = _evaluate(gt, dets)
    ap = accumulate_ap(_per_image_matches(ev), ev.params.recThrs)
    assert ap == pytest.approx(ev.stats[0], abs=1e-12)


def test_bootstrap_counts_equal_duplicated_images():
    # A bootstrap sample counts some images twice and leaves others out; pycocotools run on a
    # dataset that really contains those copies is the independent reference.
    gt, dets = _random_coco()
    ev = _evaluate(gt, dets)
    counts = np.array([2, 0, 1, 3, 1, 0, 1, 2, 0, 1, 1, 2, 0, 0])
    gt_dup, dets_dup = _random_coco(duplicate=counts)
    ev_dup = _evaluate(gt_dup, dets_dup)
    ap = accumulate_ap(_per_image_matches(ev), ev.params.recThrs, counts)
    assert ap == pytest.approx(ev_dup.stats[0], abs=1e-12)


def test_bootstrap_interval_deterministic_and_brackets_ap():
    gt, dets = _random_coco(num_images=20, seed=3)
    ev = _evaluate(gt, dets)
    a = bootstrap_ap(ev, num_samples=200, seed=7)
    b = bootstrap_ap(ev, num_samples=200, seed=7)
    c = bootstrap_ap(ev, num_samples=200, seed=8)
    assert a == b
    assert a["ci95"] != c["ci95"]
    assert a["AP"] == pytest.approx(100 * ev.stats[0])
    assert a["ci95"][0] < a["AP"] < a["ci95"][1]
    assert a["std"] > 0 and a["num_images"] == 20
