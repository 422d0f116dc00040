"""Statistics of a study: spread over seeds, paired differences, image-level bootstrap of AP.

Student's t quantiles come from SciPy (``scipy.stats.t``); the bootstrap is plain NumPy that
re-accumulates COCOeval's per-image matches.

* :func:`summarise`: mean, sample standard deviation (ddof 1) and n of a list of values.
* :func:`paired_difference`: mean of per-seed differences ``a_i - b_i`` with a two-sided 95 %
  Student-t interval (the rows of one seed share pre-trained weights, data order and
  degradation draws, so pairing removes that shared noise).
* :func:`bootstrap_ap`: an interval for one run's AP from resampling test images with
  replacement, computed from a COCOeval's ``evalImgs`` without re-running inference.
"""

import math

import numpy as np
import scipy.stats

__all__ = ["summarise", "student_t_quantile", "paired_difference", "differs_from_zero",
           "accumulate_ap", "bootstrap_ap"]


def summarise(values):
    """Mean, sample standard deviation and count of finite values.

    Args:
        values (Sequence[float]): one value per run; NaN entries are left out.

    Returns:
        dict: ``{"mean", "std", "n"}``; ``std`` is NaN for n < 2, ``mean`` NaN for n = 0.
    """
    v = np.asarray([x for x in values if x == x], dtype=np.float64)
    n = int(v.size)
    mean = float(v.mean()) if n else float("nan")
    std = float(v.std(ddof=1)) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "n": n}


def student_t_quantile(p, df):
    """The p-quantile of Student's t distribution with ``df`` degrees of freedom.

    Args:
        p (float): probability in (0, 1), e.g. 0.975 for a two-sided 95 % interval.
        df (int or float): degrees of freedom, > 0.

    Returns:
        float: t with P(T <= t) = p (``scipy.stats.t.ppf``).

    Raises:
        ValueError: ``p`` outside (0, 1) or ``df`` not positive (SciPy would return NaN).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"student_t_quantile: p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"student_t_quantile: df must be positive, got {df}")
    return float(scipy.stats.t.ppf(p, df))


def paired_difference(a, b, confidence=0.95):
    """Mean difference of paired runs with a Student-t confidence interval.

    Args:
        a, b (Sequence[float]): one value per seed, in the same seed order; pairs with a NaN
            on either side are left out.
        confidence (float): coverage of the two-sided interval.

    Returns:
        dict: ``{"mean_diff", "ci95": [lo, hi], "std", "n"}``; the interval is ``[NaN, NaN]``
        for n < 2 (one pair says nothing about the noise).
    """
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} values against {len(b)}; pair them by seed")
    d = np.asarray([x - y for x, y in zip(a, b) if x == x and y == y], dtype=np.float64)
    n = int(d.size)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {"mean_diff": mean, "ci95": [float("nan"), float("nan")], "std": float("nan"), "n": n}
    std = float(d.std(ddof=1))
    half = student_t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return {"mean_diff": mean, "ci95": [mean - half, mean + half], "std": std, "n": n}


def differs_from_zero(interval):
    """Whether a ``[lo, hi]`` interval excludes 0 (False when it is undefined)."""
    lo, hi = interval
    return bool(lo == lo and hi == hi and (lo > 0 or hi < 0))


def _per_image_matches(coco_eval, iou_index=None):
    """COCOeval's matches regrouped per (category, image) for area "all" and the largest maxDet.

    Returns:
        list[list[tuple]]: ``groups[k][i] = (scores (D,), matched (T, D) bool, ignored (T, D) bool,
        n_gt_not_ignored)`` for category index k and image index i, or None where that image has
        neither detections nor ground truth of that category.
    """
    params = coco_eval.params
    n_cat = len(params.catIds) if params.useCats else 1
    n_area, n_img = len(params.areaRng), len(params.imgIds)
    max_det = params.maxDets[-1]
    area_all = [tuple(a) for a in params.areaRng].index((0 ** 2, 1e5 ** 2))
    groups = []
    for k in range(n_cat):
        per_img = []
        for i in range(n_img):
            e = coco_eval.evalImgs[k * n_area * n_img + area_all * n_img + i]
            if e is None:
                per_img.append(None)
                continue
            scores = np.asarray(e["dtScores"][:max_det], dtype=np.float64)
            matched = np.asarray(e["dtMatches"])[:, :max_det] > 0
            ignored = np.asarray(e["dtIgnore"])[:, :max_det].astype(bool)
            n_gt = int(np.count_nonzero(np.logical_not(np.asarray(e["gtIgnore"], dtype=bool))))
            per_img.append((scores, matched, ignored, n_gt))
        groups.append(per_img)
    return groups


def accumulate_ap(groups, rec_thrs, counts=None):
    """COCO AP (mean over IoU thresholds, recall points and categories) from per-image matches.

    Follows ``pycocotools.cocoeval.COCOeval.accumulate`` for one area range and maxDet: per
    category, detections of all images are sorted by score (stable), cumulative true and false
    positives give precision and recall, precision is made monotone from the right and read at
    the recall thresholds. ``counts`` weights each image (how often it is in a bootstrap sample),
    which is what duplicating the image and its detections would give.

    Args:
        groups: output of :func:`_per_image_matches`.
        rec_thrs (np.ndarray): recall thresholds (COCO: 101 points).
        counts (np.ndarray or None): (num_images,) non-negative integers; None means all ones.

    Returns:
        float: AP in [0, 1], or -1 if no category has ground truth.
    """
    precisions = []
    for per_img in groups:
        items = [(i, g) for i, g in enumerate(per_img) if g is not None and (counts is None or counts[i] > 0)]
        if not items:
            continue
        reps = [1 if counts is None else int(counts[i]) for i, _ in items]
        n_gt = sum(g[3] * r for (_, g), r in zip(items, reps))
        if n_gt == 0:
            continue
        scores = np.concatenate([np.tile(g[0], r) for (_, g), r in zip(items, reps)])
        matched = np.concatenate([np.tile(g[1], (1, r)) for (_, g), r in zip(items, reps)], axis=1)
        ignored = np.concatenate([np.tile(g[2], (1, r)) for (_, g), r in zip(items, reps)], axis=1)
        order = np.argsort(-scores, kind="mergesort")
        matched, ignored = matched[:, order], ignored[:, order]
        tps = np.logical_and(matched, np.logical_not(ignored))
        fps = np.logical_and(np.logical_not(matched), np.logical_not(ignored))
        tp_sum = np.cumsum(tps, axis=1, dtype=np.float64)
        fp_sum = np.cumsum(fps, axis=1, dtype=np.float64)
        for tp, fp in zip(tp_sum, fp_sum):
            q = np.zeros(len(rec_thrs))
            if tp.size:
                rc = tp / n_gt
                pr = tp / (fp + tp + np.spacing(1))
                pr = np.maximum.accumulate(pr[::-1])[::-1]
                inds = np.searchsorted(rc, rec_thrs, side="left")
                valid = inds < len(pr)
                q[valid] = pr[inds[valid]]
            precisions.append(q)
    if not precisions:
        return -1.0
    return float(np.mean(precisions))


def _python_evalimgs(coco_eval):
    # detectron2's compiled COCOeval_opt keeps its matches in C++ (evalImgs stays empty); the
    # bootstrap needs them in Python, so evaluate once more with pycocotools on the same inputs.
    if getattr(coco_eval, "evalImgs", None):
        return coco_eval
    from pycocotools.cocoeval import COCOeval

    redo = COCOeval(coco_eval.cocoGt, coco_eval.cocoDt, coco_eval.params.iouType)
    redo.params = coco_eval.params
    redo.evaluate()
    return redo


def bootstrap_ap(coco_eval, num_samples=1000, seed=0, confidence=0.95):
    """Image-level bootstrap interval of AP (in percent, as detectron2 reports it).

    Test images are drawn with replacement ``num_samples`` times; each sample's AP is
    re-accumulated from the evaluated matches (no inference, no re-matching), so the interval
    says how much the AP depends on which test images happened to be chosen.

    Args:
        coco_eval (COCOeval): after ``evaluate()`` (pycocotools, or detectron2's COCOeval_opt).
        num_samples (int): bootstrap samples.
        seed (int): seed of the resampling; the same seed gives the same interval.
        confidence (float): coverage of the percentile interval.

    Returns:
        dict: ``{"AP", "ci95": [lo, hi], "std", "num_samples", "num_images"}`` (AP values x 100).
    """
    if num_samples < 2:
        raise ValueError(f"bootstrap_ap: num_samples must be >= 2, got {num_samples}")
    coco_eval = _python_evalimgs(coco_eval)
    groups = _per_image_matches(coco_eval)
    rec_thrs = np.asarray(coco_eval.params.recThrs)
    n_img = len(coco_eval.params.imgIds)
    rng = np.random.default_rng(seed)
    full = 100.0 * accumulate_ap(groups, rec_thrs)
    samples = np.empty(num_samples)
    for s in range(num_samples):
        counts = np.bincount(rng.integers(0, n_img, size=n_img), minlength=n_img)
        samples[s] = 100.0 * accumulate_ap(groups, rec_thrs, counts)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return {"AP": full, "ci95": [float(lo), float(hi)], "std": float(samples.std(ddof=1)),
            "num_samples": int(num_samples), "num_images": int(n_img)}
