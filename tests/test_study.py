"""The study runner with a stand-in detector family: seeds, summaries, paired intervals, severity,
results layout, bad input. (The real Mask R-CNN family is trained in tests/test_experiment.py.)"""

import json
import math
import os

import numpy as np
import pytest
from detectron2.config import get_cfg

from wnlb_d2.config import add_wnlb_config
from wnlb_d2.experiment import DETECTOR_FAMILY_REGISTRY, DetectorFamily, ExperimentSpec, TrainedRow, run_experiment
from wnlb_d2.experiment.report import plot_results, plot_severity, plot_w_trajectory, results_markdown
from wnlb_d2.experiment.stats import paired_difference
from wnlb_d2.utils.io import FolderLockedError

# A row's "AP" in the stand-in family: a base per row, a per-seed offset shared by the rows of one
# seed (what pairing removes), a per-(row, seed) wiggle, and a fall with the severity level.
BASE = {"pretrained": 12.0, "finetuned": 22.0, "nlb": 22.5, "wnlb": 25.0}
SEED_OFFSET = {0: 0.0, 1: 1.5, 2: -1.0, 3: 0.7}
WIGGLE = {("finetuned", 0): 0.1, ("finetuned", 1): -0.2, ("finetuned", 2): 0.3,
          ("nlb", 0): 0.8, ("nlb", 1): -0.9, ("nlb", 2): 0.2,
          ("wnlb", 0): 0.2, ("wnlb", 1): 0.1, ("wnlb", 2): -0.1}


def expected_ap(row, seed, t=None):
    ap = BASE[row] + (SEED_OFFSET[seed] + WIGGLE[(row, seed)] if seed is not None else 0.0)
    return ap - (10.0 * t if t is not None else 0.0)


class StandInFamily(DetectorFamily):
    """Deterministic metrics without training, recording what the runner asked for."""

    name = "test_stand_in"
    calls = []

    def low_light_config(self):
        cfg = get_cfg()
        add_wnlb_config(cfg)
        return cfg

    def pretrain(self, output_dir, resume=False):
        StandInFamily.calls.append(("pretrain", output_dir))
        return TrainedRow("pretrained", None, os.path.join(output_dir, "model_final.pth"), output_dir)

    def load(self, weights, output_dir):
        StandInFamily.calls.append(("load", weights))
        return TrainedRow("pretrained", None, weights, output_dir)

    def finetune(self, row, pretrained, seed, output_dir, resume=False):
        StandInFamily.calls.append(("finetune", row, seed, pretrained.weights))
        traj = [{"iteration": i, "res3": 0.01 * i} for i in (19, 39)] if row == "wnlb" else []
        return TrainedRow(row, seed, os.path.join(output_dir, "model_final.pth"), output_dir, w_trajectory=traj)

    def evaluate(self, trained, dataset, *, low_light, output_dir, overrides=None):
        StandInFamily.calls.append(("evaluate", trained.row, trained.seed, dataset, bool(overrides)))
        t = None
        if overrides and "INPUT.LOW_LIGHT.LV2021.GAMMA" in overrides:
            gamma = overrides["INPUT.LOW_LIGHT.LV2021.GAMMA"][0]
            t = (gamma - 1.5) / 3.5
        ap = expected_ap(trained.row, trained.seed, t)
        metrics = {m: ap + k for k, m in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl"))}
        return {"segm": dict(metrics), "bbox": {m: v + 1.0 for m, v in metrics.items()}}

    def block_weights(self, trained):
        return {"res3": 0.39} if trained.row == "wnlb" else {}

    def feature_errors(self, trained, dataset, *, low_light, num_images):
        StandInFamily.calls.append(("features", trained.row, trained.seed))
        return stand_in_features(trained.row, trained.seed, num_images)


# NFE of the stand-in per image i: a base per row and place, a seed offset, a per-image wiggle;
# the wnlb row's block lowers res3's NFE by 0.05 + 0.01 * seed.
NFE_BASE = {"pretrained": 0.9, "finetuned": 0.6, "nlb": 0.58, "wnlb": 0.55}


def stand_in_features(row, seed, num_images):
    s = 0.0 if seed is None else 0.02 * seed
    per_image = [0.01 * (i % 3) for i in range(num_images)]
    nfe = {"res3": [NFE_BASE[row] + s + d for d in per_image], "p3": [NFE_BASE[row] + 0.1 + s + d for d in per_image]}
    out = {"nfe": nfe, "nonlocal_share": {}, "images": num_images}
    if row in ("nlb", "wnlb"):
        nfe["res3.after"] = [x - 0.05 - 0.01 * (seed or 0) for x in nfe["res3"]]
        out["nonlocal_share"] = {"res3": [0.2 + 0.1 * (seed or 0)] * num_images}
    return out


if "StandInFamily" not in DETECTOR_FAMILY_REGISTRY:
    DETECTOR_FAMILY_REGISTRY.register()(StandInFamily)


def _spec(tmp_path, **kw):
    base = dict(config_file="unused.yaml", output_dir=str(tmp_path / "study"), test_data="wnlb_demo_val_lowlight",
                finetune_data="wnlb_demo_train_lowlight", pretrain_data="wnlb_demo_train",
                normal_test_data="wnlb_demo_val", detector="test_stand_in", seeds=[0, 1, 2])
    base.update(kw)
    return ExperimentSpec(**base)


def test_every_row_once_per_seed_from_the_same_weights(tmp_path):
    StandInFamily.calls = []
    results, _ = run_experiment(_spec(tmp_path))
    finetunes = [c for c in StandInFamily.calls if c[0] == "finetune"]
    assert [(c[1], c[2]) for c in finetunes] == [(r, s) for s in (0, 1, 2) for r in ("finetuned", "nlb", "wnlb")]
    assert len({c[3] for c in finetunes}) == 1  # all from the one pre-trained checkpoint
    assert sum(c[0] == "pretrain" for c in StandInFamily.calls) == 1
    assert [(r["row"], r["seed"]) for r in results["runs"]] == [(c[1], c[2]) for c in finetunes]
    for run in results["runs"]:
        assert run["segm"]["AP"] == pytest.approx(expected_ap(run["row"], run["seed"]))


def test_summary_and_paired_intervals_match_hand_computation(tmp_path):
    results, _ = run_experiment(_spec(tmp_path))
    wnlb = [expected_ap("wnlb", s) for s in (0, 1, 2)]
    fin = [expected_ap("finetuned", s) for s in (0, 1, 2)]
    s = results["summary"]["wnlb"]["segm"]["AP"]
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(np.mean(wnlb))
    assert s["std"] == pytest.approx(np.std(wnlb, ddof=1))
    # per-row entries keep COCOEvaluator's layout, with the mean over seeds
    assert results["wnlb"]["segm"]["AP"] == pytest.approx(np.mean(wnlb))
    p = results["paired"]["wnlb-vs-finetuned"]["segm"]["AP"]
    d = np.array(wnlb) - np.array(fin)
    half = 4.302652729911275 * d.std(ddof=1) / math.sqrt(3)
    assert p["n"] == 3 and p["mean_diff"] == pytest.approx(d.mean())
    assert p["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-6)
    assert set(results["paired"]) == {"wnlb-vs-finetuned", "nlb-vs-finetuned", "wnlb-vs-nlb"}
    md = results_markdown(results)
    # wnlb - finetuned ~ +3 with a tight interval; nlb - finetuned ~ +0.5 with a wide one
    assert "wnlb-vs-finetuned, segm AP: +3.0" in md and "larger than the run-to-run noise" in md
    nlb = paired_difference([expected_ap("nlb", s) for s in (0, 1, 2)], fin)
    assert nlb["ci95"][0] < 0 < nlb["ci95"][1]
    assert "nlb-vs-finetuned, segm AP: +0.5" in md and "within the run-to-run noise" in md
    assert f"{np.mean(wnlb):.1f} ± {np.std(wnlb, ddof=1):.1f}" in md
    on_disk = json.loads((tmp_path / "study" / "results.json").read_text())
    assert on_disk["paired"]["wnlb-vs-finetuned"]["segm"]["AP"]["ci95"] == pytest.approx(p["ci95"])
    assert on_disk["meta"]["wnlb_weights"] == {"seed0": {"res3": 0.39}, "seed1": {"res3": 0.39}, "seed2": {"res3": 0.39}}


def test_severity_curves_every_row_and_plots(tmp_path):
    results, _ = run_experiment(_spec(tmp_path, seeds=[0, 1], severities=[0.0, 0.5, 1.0, 1.25, 1.5]))
    levels = list(results["severity_levels"])
    assert levels == ["t=0.00", "t=0.50", "t=1.00", "t=1.25", "t=1.50"]
    assert set(results["severity"]) == {"pretrained", "finetuned", "nlb", "wnlb"}
    for row in ("finetuned", "wnlb"):
        for level, t in zip(levels, (0.0, 0.5, 1.0, 1.25, 1.5)):
            want = np.mean([expected_ap(row, s, t) for s in (0, 1)])
            assert results["severity"][row][level]["segm"]["AP"] == pytest.approx(want)
    assert results["severity"]["pretrained"]["t=1.00"]["bbox"]["AP"] == pytest.approx(expected_ap("pretrained", None, 1.0) + 1)
    for plot, name in ((plot_severity, "severity.png"), (plot_results, "ap.png"), (plot_w_trajectory, "w.png")):
        plot(results, str(tmp_path / name))
        assert (tmp_path / name).stat().st_size > 1000
    assert "AP against darkness" in results_markdown(results)


def test_bad_seeds_and_severities_fail_before_anything_runs(tmp_path):
    StandInFamily.calls = []
    with pytest.raises(ValueError, match="seeds .* is empty"):
        run_experiment(_spec(tmp_path, seeds=[]))
    with pytest.raises(ValueError, match=r"repeat \[1\]"):
        run_experiment(_spec(tmp_path, seeds=[0, 1, 1]))
    with pytest.raises(ValueError, match=r"integers in \[0, 2\*\*32\)"):
        run_experiment(_spec(tmp_path, seeds=[-1]))
    with pytest.raises(ValueError, match="outside the pipeline's valid range"):
        run_experiment(_spec(tmp_path, severities=[0.0, 3.0]))
    with pytest.raises(ValueError, match="normal_test_data"):
        run_experiment(_spec(tmp_path, severities=[0.5], normal_test_data=""))
    with pytest.raises(ValueError, match="unknown detector family"):
        run_experiment(_spec(tmp_path, detector="nope"))
    assert StandInFamily.calls == []
    assert not (tmp_path / "study").exists()


def test_results_of_another_experiment_are_never_replaced(tmp_path):
    run_experiment(_spec(tmp_path, seeds=[0], preset="quick"))
    first = (tmp_path / "study" / "results.json").read_text()
    with pytest.raises(FileExistsError, match="another experiment.*preset 'quick' -> 'demo'.*--overwrite"):
        run_experiment(_spec(tmp_path, seeds=[0], preset="demo"))
    assert (tmp_path / "study" / "results.json").read_text() == first
    run_experiment(_spec(tmp_path, seeds=[0], preset="quick"))  # the same experiment may be re-run
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text(json.dumps({"pretrained": {"segm": {"AP": 1.0}}, "meta": {"spec": {}}}))
    with pytest.raises(FileExistsError, match="older results layout"):
        run_experiment(_spec(tmp_path, seeds=[0], output_dir=str(old)))
    run_experiment(_spec(tmp_path, seeds=[0], output_dir=str(old)), overwrite=True)
    assert json.loads((old / "results.json").read_text())["version"] == 2


@pytest.mark.parametrize("change", [dict(rows=["pretrained", "finetuned"], seeds=[5], finetune_iters=2),
                                    dict(finetune_iters=2), dict(finetune_lr=1e-3), dict(severities=[0.5]),
                                    dict(wnlb_weight_lr_factor=10.0), dict(bootstrap_samples=20),
                                    dict(test_data="wnlb_demo_val")])
def test_every_field_that_changes_a_result_is_another_experiment(tmp_path, change):
    first = dict(rows=["pretrained", "finetuned", "wnlb"], seeds=[0], finetune_iters=60)
    run_experiment(_spec(tmp_path, **first))
    before = {p: p.read_bytes() for p in (tmp_path / "study").rglob("*") if p.is_file() and p.name != ".lock"}
    StandInFamily.calls = []
    with pytest.raises(FileExistsError, match="another experiment .*--overwrite") as e:
        run_experiment(_spec(tmp_path, **{**first, **change}))
    differs = str(e.value).split("differs in ")[1]
    for key, value in change.items():
        assert f"{key} {first.get(key, getattr(_spec(tmp_path), key))!r} -> {value!r}" in differs
    assert StandInFamily.calls == []
    after = {p: p.read_bytes() for p in (tmp_path / "study").rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_overwrite_removes_stale_rows_and_keeps_runs_it_would_repeat(tmp_path):
    out = tmp_path / "study"
    run_experiment(_spec(tmp_path, rows=["pretrained", "finetuned", "wnlb"], seeds=[0], finetune_iters=60))
    (out / "pictures").mkdir()
    (out / "pictures" / "000001.png").write_bytes(b"old picture")
    (out / "w_trajectory.png").write_bytes(b"old plot")
    (out / "notes.txt").write_text("the user's own file")
    StandInFamily.calls = []
    results, _ = run_experiment(_spec(tmp_path, rows=["pretrained", "finetuned"], seeds=[0], finetune_iters=2),
                                overwrite=True)
    # the pre-training is the same (same data, length, seed): kept; the finetuned row changed: retrained
    assert [c[0] for c in StandInFamily.calls if c[0] in ("pretrain", "finetune")] == ["finetune"]
    assert not (out / "wnlb").exists() and not (out / "pictures").exists() and not (out / "w_trajectory.png").exists()
    assert (out / "notes.txt").read_text() == "the user's own file"
    on_disk = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in on_disk["runs"]] == ["finetuned"] and "wnlb" not in on_disk
    assert on_disk["meta"]["spec"]["finetune_iters"] == 2


def test_a_rerun_keeps_every_finished_run_and_evaluation(tmp_path):
    spec = _spec(tmp_path, seeds=[0, 1], severities=[0.0, 1.0])
    first, _ = run_experiment(spec)
    StandInFamily.calls = []
    again, _ = run_experiment(spec)
    assert StandInFamily.calls == []  # nothing trained, nothing evaluated
    for key in ("runs", "summary", "paired", "severity", "pretrained", "pretrained_normal_light"):
        assert json.dumps(again[key], sort_keys=True) == json.dumps(first[key], sort_keys=True), key


class _Killed(Exception):
    pass


def test_an_interrupted_study_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    spec = _spec(tmp_path, seeds=[0, 1], severities=[0.0, 1.0])
    real = StandInFamily.finetune

    def killed_at_wnlb_seed1(self, row, pretrained, seed, output_dir, resume=False):
        if (row, seed) == ("wnlb", 1):
            raise _Killed()
        return real(self, row, pretrained, seed, output_dir, resume)

    monkeypatch.setattr(StandInFamily, "finetune", killed_at_wnlb_seed1)
    with pytest.raises(_Killed):
        run_experiment(spec)
    assert not (tmp_path / "study" / "results.json").exists()
    monkeypatch.setattr(StandInFamily, "finetune", real)
    StandInFamily.calls = []
    results, _ = run_experiment(spec)
    trained = [c[:3] for c in StandInFamily.calls if c[0] in ("pretrain", "finetune")]
    assert trained == [("finetune", "wnlb", 1)]
    evaluated = {(c[1], c[2], c[4]) for c in StandInFamily.calls if c[0] == "evaluate"}
    # the new run on its test set and severity levels, and the pre-trained row's severity levels
    # (the last step, not reached before the interruption)
    assert evaluated == {("wnlb", 1, False), ("wnlb", 1, True), ("pretrained", None, True)}
    assert [(r["row"], r["seed"]) for r in results["runs"]] == [(r, s) for s in (0, 1) for r in ("finetuned", "nlb", "wnlb")]
    assert results["summary"]["wnlb"]["segm"]["AP"]["n"] == 2


def test_a_run_of_another_identity_in_a_row_folder_starts_afresh(tmp_path):
    spec = _spec(tmp_path, seeds=[0])
    run_experiment(spec)
    stale = tmp_path / "study" / "wnlb" / "metrics.json"
    stale.write_text('{"iteration": 3, "wnlb/w_res3": 0.5}\n')
    run_json = tmp_path / "study" / "wnlb" / "run.json"
    record = json.loads(run_json.read_text())
    record["identity"]["seed"] = 7  # as if another run had trained here
    run_json.write_text(json.dumps(record))
    StandInFamily.calls = []
    run_experiment(spec)
    assert [c[:3] for c in StandInFamily.calls if c[0] == "finetune"] == [("finetune", "wnlb", 0)]
    assert not stale.exists()  # the folder was emptied before the run


def test_a_second_run_on_the_same_folder_stops_at_once_naming_the_holder(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "study"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from wnlb_d2.utils.io import folder_lock\n"
        f"with folder_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        StandInFamily.calls = []
        with pytest.raises(FolderLockedError, match=f"in use by pid {holder.pid} "):
            run_experiment(_spec(tmp_path, seeds=[0]))
        assert StandInFamily.calls == []
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait()
    run_experiment(_spec(tmp_path, seeds=[0]))
    assert (out / "results.json").exists()


def test_w_trajectory_of_a_resumed_run_is_its_own():
    import tempfile

    from wnlb_d2.experiment.family import read_w_trajectory

    lines = [{"iteration": i, "wnlb/w_res3": w} for i, w in ((3, 0.1), (19, 0.2), (39, 0.3))]
    # resumed from a checkpoint at iteration 29: 39 is redone, then 59
    lines += [{"iteration": 39, "wnlb/w_res3": 0.35}, {"iteration": 59, "wnlb/w_res3": 0.4}]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write("\n".join(json.dumps(line) for line in lines) + "\n" + '{"iteration": 6')  # a line cut by a kill
    got = read_w_trajectory(f.name)
    os.remove(f.name)
    assert [(p["iteration"], p["res3"]) for p in got] == [(3, 0.1), (19, 0.2), (39, 0.35), (59, 0.4)]


def test_feature_sections_match_hand_computation(tmp_path):
    results, _ = run_experiment(_spec(tmp_path, feature_images=6))
    f = results["features"]
    assert set(f) == {"pretrained", "finetuned", "nlb", "wnlb"}
    # fine-tuning rows: mean over seeds of the per-image means, t interval over the 3 seeds
    seed_means = [np.mean(stand_in_features("wnlb", s, 6)["nfe"]["res3.after"]) for s in (0, 1, 2)]
    e = f["wnlb"]["res3.after"]["nfe"]
    assert e["mean"] == pytest.approx(np.mean(seed_means)) and e["n"] == 3 and e["unit"] == "seeds"
    half = 4.302652729911275 * np.std(seed_means, ddof=1) / math.sqrt(3)
    assert e["ci95"] == pytest.approx([np.mean(seed_means) - half, np.mean(seed_means) + half])
    # the pre-trained row: one run, image-level bootstrap
    assert f["pretrained"]["res3"]["nfe"]["unit"] == "images" and f["pretrained"]["res3"]["nfe"]["n"] == 6
    assert results["nonlocal_share"]["wnlb"]["res3"] == {"mean": pytest.approx(0.3), "n": 3}
    assert "finetuned" not in results["nonlocal_share"]
    # paired: wnlb's res3 as passed on (after its block) against finetuned's res3
    p = results["paired_features"]["wnlb-vs-finetuned"]["res3"]
    diffs = [np.mean(np.subtract(stand_in_features("wnlb", s, 6)["nfe"]["res3.after"],
                                 stand_in_features("finetuned", s, 6)["nfe"]["res3"])) for s in (0, 1, 2)]
    assert p["mean_diff"] == pytest.approx(np.mean(diffs)) and p["n"] == 3
    assert p["ci95"][1] < 0  # -0.10 - 0.01 s: nearer beyond the noise
    assert set(results["paired_features"]["wnlb-vs-finetuned"]) == {"res3", "p3"}
    md = results_markdown(results)
    assert "- res3: -0.1100 [" in md and "nearer the clean features beyond the noise" in md
    assert "Non-local share of the wnlb blocks" in md
    assert "| row | res3 | res3.after | p3 |" in md  # the blocks' outputs have columns of their own
    # deterministic for a seed: a second experiment gives the same sections to the last digit
    again, _ = run_experiment(_spec(tmp_path, feature_images=6, output_dir=str(tmp_path / "again")))
    for key in ("features", "nonlocal_share", "paired_features"):
        assert json.dumps(again[key], sort_keys=True) == json.dumps(results[key], sort_keys=True)


def test_features_of_a_test_set_without_clean_counterparts_are_skipped_and_said(tmp_path):
    StandInFamily.calls = []
    results, _ = run_experiment(_spec(tmp_path, seeds=[0], test_data="wnlb_demo_val"))
    assert "features" not in results and "no clean counterparts" in results["features_note"]
    assert not [c for c in StandInFamily.calls if c[0] == "features"]
    assert "Feature denoising: not measured: the test set wnlb_demo_val has no clean counterparts" in \
        results_markdown(results)
    with_fly, _ = run_experiment(_spec(tmp_path, seeds=[0], test_data="wnlb_demo_val", low_light_test=True,
                                       output_dir=str(tmp_path / "fly")))
    assert "features" in with_fly and "features_note" not in with_fly
    # one seed: the interval is over test images alone, and the words say so
    assert "one seed: the run-to-run noise is not in this interval" in results_markdown(with_fly)


def test_single_seed_says_no_interval(tmp_path):
    results, _ = run_experiment(_spec(tmp_path, seeds=[0]))
    p = results["paired"]["wnlb-vs-finetuned"]["segm"]["AP"]
    assert p["n"] == 1 and all(math.isnan(x) for x in p["ci95"])
    assert "from one seed: no interval" in results_markdown(results)
    assert results["wnlb"]["segm"]["AP"] == pytest.approx(expected_ap("wnlb", 0))


def test_pair_without_ap_is_said_in_words():
    from wnlb_d2.experiment.report import differences_in_words

    nan = float("nan")
    results = {"paired": {"wnlb-vs-finetuned": {
        "segm": {"AP": {"n": 1, "mean_diff": nan, "ci95": [nan, nan]}},
        "bbox": {"AP": {"n": 3, "mean_diff": 0.4, "ci95": [-0.5, 1.3]}}}}}
    lines = differences_in_words(results)
    assert lines[0] == "- wnlb-vs-finetuned, segm AP: no AP to compare (a row detected nothing on the test set)."
    assert "nan" not in " ".join(lines)
    assert lines[1].startswith("- wnlb-vs-finetuned, bbox AP: +0.4 [-0.5, +1.3] over 3 seeds: within")
