"""The study's feature sections: NFE per row and place, non-local share per block, paired differences.

Inputs are the per-image measurements of each run (:func:`wnlb_d2.analysis.detectron2_features.
detectron2_feature_errors` or a family's equivalent), kept in ``run["feature_errors"]``. Outputs,
in ``results.json``:

* ``features[row][place] = {"nfe": {"mean", "ci95": [lo, hi], "n", "unit"}}``: with several seeds
  the mean over seeds of each seed's mean over images, with a Student-t interval over seeds
  (``unit`` "seeds"); with one seed (and for the pre-trained row) the mean over images with an
  image-level bootstrap interval (``unit`` "images");
* ``nonlocal_share[row][block] = {"mean", "n"}``: mean over seeds of each seed's mean over images;
* ``paired_features["wnlb-vs-finetuned"][place] = {"mean_diff", "ci95", "n", "unit"}``: the
  first row's NFE minus the second's on the same images, paired by seed as AP is. A place
  ``resK`` compares the stage's output as the network passes it on: after the block where the
  row has one (``resK.after``), else the stage's own output.
"""

import math

import numpy as np

from ..analysis import summarise_per_image
from .spec import FINETUNE_ROWS, PAIRS, pair_name
from .stats import differs_from_zero, paired_difference

__all__ = ["feature_sections", "features_in_words", "effective_place"]


def effective_place(nfe, place):
    """``"res3"`` -> ``"res3.after"`` when the run has a block there (what the next stage sees)."""
    return f"{place}.after" if f"{place}.after" in nfe else place


def _mean(values):
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _over_seeds(per_seed_means):
    """Mean over seeds with a two-sided 95 % Student-t interval (NaN for fewer than two seeds)."""
    d = paired_difference(per_seed_means, [0.0] * len(per_seed_means))
    return {"mean": d["mean_diff"], "ci95": d["ci95"], "n": d["n"], "unit": "seeds"}


def feature_sections(runs, pretrained_errors, bootstrap_samples):
    """The three sections above from the runs' per-image measurements.

    Args:
        runs (list[dict]): the study's fine-tuning runs; each with ``row``, ``seed`` and
            ``feature_errors`` (``{"nfe": {place: [per image]}, "nonlocal_share": {block: [...]}}``).
        pretrained_errors (dict or None): the pre-trained row's measurements.
        bootstrap_samples (int): image-level resamples of single-run intervals.

    Returns:
        dict: ``{"features": ..., "nonlocal_share": ..., "paired_features": ...}``.
    """
    features, share = {}, {}
    measured = [r for r in runs if r.get("feature_errors")]
    if pretrained_errors:
        features["pretrained"] = {p: {"nfe": {**summarise_per_image(v, bootstrap_samples), "unit": "images"}}
                                  for p, v in pretrained_errors["nfe"].items()}
    for row in FINETUNE_ROWS:
        row_runs = [r for r in measured if r["row"] == row]
        if not row_runs:
            continue
        places = list(row_runs[0]["feature_errors"]["nfe"])
        if len(row_runs) == 1:
            features[row] = {p: {"nfe": {**summarise_per_image(row_runs[0]["feature_errors"]["nfe"][p],
                                                                bootstrap_samples), "unit": "images"}}
                             for p in places}
        else:
            features[row] = {p: {"nfe": _over_seeds([_mean(r["feature_errors"]["nfe"][p]) for r in row_runs])}
                             for p in places}
        blocks = list(row_runs[0]["feature_errors"].get("nonlocal_share", {}))
        if blocks:
            share[row] = {b: {"mean": _mean([_mean(r["feature_errors"]["nonlocal_share"][b]) for r in row_runs]),
                              "n": len(row_runs)} for b in blocks}
    return {"features": features, "nonlocal_share": share, "paired_features": _paired(measured, bootstrap_samples)}


def _paired(runs, bootstrap_samples):
    by = {(r["row"], r["seed"]): r["feature_errors"]["nfe"] for r in runs}
    out = {}
    for first, second in PAIRS:
        seeds = [s for (row, s) in by if row == first and (second, s) in by]
        if not seeds:
            continue
        places = [p for p in by[(second, seeds[0])] if not p.endswith(".after")]
        entry = {}
        for place in places:
            diffs = []  # per seed: per-image differences of the passed-on features
            for s in seeds:
                a, b = by[(first, s)], by[(second, s)]
                diffs.append(np.asarray(a[effective_place(a, place)]) - np.asarray(b[effective_place(b, place)]))
            if len(seeds) >= 2:
                d = paired_difference([_mean(d) for d in diffs], [0.0] * len(diffs))
                entry[place] = {"mean_diff": d["mean_diff"], "ci95": d["ci95"], "n": d["n"], "unit": "seeds"}
            else:
                d = summarise_per_image(diffs[0].tolist(), bootstrap_samples)
                entry[place] = {"mean_diff": d["mean"], "ci95": d["ci95"], "n": d["n"], "unit": "images"}
        out[pair_name(first, second)] = entry
    return out


def features_in_words(results):
    """Markdown lines: the NFE table, the non-local share, and per place whether the first row's
    features are nearer the clean ones than the second's beyond the noise."""
    features = results.get("features") or {}
    lines = []
    if results.get("features_note"):
        lines += ["", f"Feature denoising: {results['features_note']}"]
    if not features:
        return lines
    # Every row's places in order (the block rows add "<stage>.after" beside their stage).
    places = list(dict.fromkeys(p for entry in features.values() for p in entry))
    stage_order = list(dict.fromkeys(p.split(".")[0] for p in places))
    places = [p for stage in stage_order for p in (stage, f"{stage}.after") if p in places]
    lines += ["", "Normalised feature error NFE = sum ||F(dark) - F(clean)||^2 / sum ||F(clean) - mean||^2 per "
              "image (lower: the dark image's features are nearer the clean image's), mean [95 % interval]:", "",
              "| row | " + " | ".join(places) + " |", "|---|" + "---|" * len(places)]
    for row, entry in features.items():
        cells = []
        for p in places:
            e = entry.get(p, {}).get("nfe")
            cells.append("-" if e is None else f"{e['mean']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    share = results.get("nonlocal_share") or {}
    for row, blocks in share.items():
        lines.append("")
        lines.append(f"Non-local share of the {row} blocks (||w W_z(y)|| / ||(1 - w) x|| weighted, "
                     f"||W_z(y)|| / ||x|| residual; 0: the block only rescales its input): "
                     + ", ".join(f"{b} {v['mean']:.4f}" for b, v in blocks.items()) + ".")
    for pair, entry in (results.get("paired_features") or {}).items():
        lines.append("")
        lines.append(f"{pair}, NFE difference per place (first minus second; negative: the first row's features "
                     "are nearer the clean ones):")
        for place, d in entry.items():
            if d["n"] < 2 or any(x != x for x in d["ci95"]):
                verdict = "no interval (too few seeds or images)"
            elif differs_from_zero(d["ci95"]):
                verdict = ("nearer the clean features beyond the noise" if d["mean_diff"] < 0
                           else "farther from the clean features beyond the noise")
            else:
                verdict = "within the noise"
            if d["unit"] == "images" and d["n"] >= 2:
                # One seed: the interval resamples test images; two training runs differ by more.
                verdict += " of the test images (one seed: the run-to-run noise is not in this interval)"
            lines.append(f"- {place}: {d['mean_diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] over "
                         f"{d['n']} {d['unit']}: {verdict}.")
    return lines
