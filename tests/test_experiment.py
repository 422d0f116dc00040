"""The Table I runner with the real Mask R-CNN family: four rows trained and evaluated,
results.json/results.md/plots/pictures written."""

import json
import os

import pytest

from engine_helpers import DEMO_CONFIG, register_tiny_demo

from wnlb_d2.experiment import METRICS, ROWS, ExperimentSpec, run_experiment
from wnlb_d2.experiment.report import plot_results, plot_severity, results_markdown
from wnlb_d2.visualization import save_side_by_side
from helpers import load_script

SMALL = ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
         "INPUT.MAX_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
         "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    register_tiny_demo(root)
    out = str(tmp_path_factory.mktemp("exp"))
    spec = ExperimentSpec(config_file=DEMO_CONFIG, output_dir=out, pretrain_data="tiny_demo_train",
                          finetune_data="tiny_demo_train_lowlight", test_data="tiny_demo_val_lowlight",
                          normal_test_data="tiny_demo_val", pretrain_iters=3, finetune_iters=2, finetune_lr=0.001,
                          opts=SMALL, severities=[0.0, 1.0], bootstrap_samples=20)
    results, trained = run_experiment(spec)
    models = {row: t.handle for row, t in trained.items()}
    return spec, results, models


def test_every_row_has_coco_results(experiment):
    spec, results, _ = experiment
    for row in list(ROWS) + ["pretrained_normal_light"]:
        for task in ("segm", "bbox"):
            assert set(METRICS) <= set(results[row][task]), (row, task)
    on_disk = json.load(open(os.path.join(spec.output_dir, "results.json")))
    assert set(on_disk) >= set(ROWS) | {"pretrained_normal_light", "meta"}
    assert on_disk["wnlb"]["segm"]["AP"] == pytest.approx(results["wnlb"]["segm"]["AP"], nan_ok=True)
    assert set(on_disk["meta"]["wnlb_weights"]["seed0"]) == {"res2", "res3", "res4", "res5"}
    # one run per fine-tuning row (one seed), each with its image-level bootstrap interval
    assert [(r["row"], r["seed"]) for r in on_disk["runs"]] == [("finetuned", 0), ("nlb", 0), ("wnlb", 0)]
    for run in on_disk["runs"]:
        lo, hi = run["bootstrap"]["segm"]["ci95"]
        assert lo <= hi
    assert set(on_disk["severity"]) == set(ROWS)
    assert list(on_disk["severity_levels"]) == ["t=0.00", "t=1.00"]
    wnlb_run = on_disk["runs"][-1]
    assert wnlb_run["w_trajectory"] and set(wnlb_run["w_trajectory"][-1]) == {"iteration", "res2", "res3", "res4", "res5"}


def test_rows_are_the_architectures_they_claim(experiment):
    spec, _, models = experiment
    def blocks(row):
        m = models[row][1]
        return getattr(m.backbone.bottom_up, "wnlb", {})
    assert len(blocks("pretrained")) == 0 and len(blocks("finetuned")) == 0
    assert {b.fusion for b in blocks("nlb").values()} == {"residual"}
    assert {b.fusion for b in blocks("wnlb").values()} == {"weighted"}
    cfg = models["wnlb"][0]
    assert cfg.SOLVER.FINETUNE_POLICY == "backbone" and cfg.SOLVER.BASE_LR == 0.001
    assert cfg.MODEL.WEIGHTS == os.path.join(spec.output_dir, "pretrained", "model_final.pth")
    # The fine-tuned rows start from the pre-trained heads and keep them (backbone-only policy).
    import torch

    pre, fin = models["pretrained"][1].state_dict(), models["wnlb"][1].state_dict()
    head = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(pre[head], fin[head])


def test_markdown_plot_and_pictures(experiment, tmp_path):
    spec, results, models = experiment
    md = open(os.path.join(spec.output_dir, "results.md")).read()
    assert md == results_markdown(results)
    table = md.split("\n\n")[0].splitlines()
    assert len(table) == 2 + 5 and "| wnlb | 1 |" in md and "segm AP50" in md
    png = str(tmp_path / "ap.png")
    plot_results(results, png)
    assert os.path.getsize(png) > 5000
    plot_severity(results, str(tmp_path / "severity.png"))
    assert os.path.getsize(str(tmp_path / "severity.png")) > 5000
    paths = save_side_by_side(models, models["pretrained"][0], spec.test_data, str(tmp_path / "pics"), num_images=2)
    import cv2

    img = cv2.imread(paths[0])
    assert len(paths) == 2 and img.shape[1] == 5 * 2 * 64  # input + 4 rows, each 2x upscaled
    assert img.std() > 10


def test_bad_spec():
    with pytest.raises(ValueError, match="Unknown experiment rows"):
        ExperimentSpec(config_file=DEMO_CONFIG, output_dir="x", test_data="a", finetune_data="b",
                       pretrain_data="c", rows=["wnlb", "nlb2"]).validate()
    with pytest.raises(ValueError, match="either weights"):
        ExperimentSpec(config_file=DEMO_CONFIG, output_dir="x", test_data="a", finetune_data="b").validate()


def _run_tool(argv):
    mod = load_script("tools/run_experiment.py")
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    return str(e.value.code)


def test_bad_names_and_paths_fail_before_any_training(tmp_path, monkeypatch):
    register_tiny_demo(str(tmp_path / "demo"))
    from wnlb_d2.experiment import detectron2_family

    def no_training(*args, **kwargs):
        raise AssertionError("trained before validating")

    monkeypatch.setattr(detectron2_family.Detectron2Family, "_train", no_training)
    base = ["--config-file", DEMO_CONFIG, "--pretrain-data", "tiny_demo_train",
            "--finetune-data", "tiny_demo_train_lowlight", "--test-data", "tiny_demo_val_lowlight"]
    out = tmp_path / "out"
    cases = [
        (["--test-data", "nope_val"], "--test-data) 'nope_val' is not a registered dataset"),
        (["--finetune-data", "tiny_demo_trian_lowlight"], "did you mean tiny_demo_train_lowlight"),
        (["--normal-test-data", "nope"], "--normal-test-data) 'nope'"),
        (["--pretrain-data", "nope"], "--pretrain-data) 'nope'"),
        (["--weights", str(tmp_path / "none.pth")], "--weights) " + repr(str(tmp_path / "none.pth"))),
        (["--enhancers", "clahe", "bogus"], "bogus"),
        (["--seeds"], "seeds (--seeds) is empty"),
        (["--seeds", "0", "1", "0"], "repeat [0]"),
        (["--severities", "0", "3", "--normal-test-data", "tiny_demo_val"], "outside the pipeline's valid range"),
        (["--detector", "nope"], "unknown detector family"),
        (["--seeds", "0", str(2**32)], "integers in [0, 2**32), got [4294967296]"),
    ]
    for extra, expected in cases:
        msg = _run_tool(base + extra + ["--output", str(out)])
        assert msg.startswith("run_experiment.py: error:") and expected in msg and "\n" not in msg, (extra, msg)
    assert not out.exists()  # nothing written for a bad command line
    # A second run on a folder in use stops at once, naming the holder, and writes nothing there.
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from wnlb_d2.utils.io import folder_lock\n"
        f"with folder_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        msg = _run_tool(base + ["--output", str(out)])
    finally:
        holder.kill()
        holder.wait()
    assert msg.startswith("run_experiment.py: error: FolderLockedError: ") and f"in use by pid {holder.pid} " in msg
    assert sorted(os.listdir(out)) == [".lock"]
    msg = _run_tool(["--config-file", DEMO_CONFIG, "--test-data", "a", "--finetune-data", "b"])
    assert "missing --output " in msg and "--output-dir" not in msg


def test_a_rerun_keeps_the_trained_rows_and_reloads_them(experiment, monkeypatch):
    spec, results, models = experiment
    from wnlb_d2.experiment import detectron2_family

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(detectron2_family.Detectron2Family, "_train", no_training)
    again, trained = run_experiment(spec)
    for row in ROWS:
        assert again[row]["segm"]["AP"] == pytest.approx(results[row]["segm"]["AP"], nan_ok=True), row
    # the rows come back from their weights with their architecture, for the pictures
    import torch

    assert {b.fusion for b in trained["wnlb"].handle[1].backbone.bottom_up.wnlb.values()} == {"weighted"}
    saved = torch.load(os.path.join(spec.output_dir, "wnlb", "model_final.pth"), weights_only=False)["model"]
    for key, value in trained["wnlb"].handle[1].state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_an_interrupted_training_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    register_tiny_demo(str(tmp_path / "demo"))
    from wnlb_d2.engine.trainer import LowLightTrainer

    spec = ExperimentSpec(config_file=DEMO_CONFIG, output_dir=str(tmp_path / "exp"), pretrain_data="tiny_demo_train",
                          finetune_data="tiny_demo_train_lowlight", test_data="tiny_demo_val_lowlight",
                          rows=["pretrained", "wnlb"], pretrain_iters=2, finetune_iters=8, finetune_lr=0.001,
                          opts=SMALL, bootstrap_samples=0)
    real_step, starts = LowLightTrainer.run_step, []

    def killed_in_wnlb_at_iteration_5(self):
        if "wnlb" in self.cfg.MODEL.BACKBONE.NAME and self.iter == 5:
            raise KeyboardInterrupt("killed")
        return real_step(self)

    real_train = LowLightTrainer.train

    def record_start(self):
        starts.append((self.cfg.MODEL.BACKBONE.NAME, self.start_iter))
        return real_train(self)

    monkeypatch.setattr(LowLightTrainer, "run_step", killed_in_wnlb_at_iteration_5)
    monkeypatch.setattr(LowLightTrainer, "train", record_start)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec)
    run_dir = os.path.join(spec.output_dir, "wnlb")
    # a checkpoint every quarter of the run (every 2 iterations): the last one before the kill
    assert open(os.path.join(run_dir, "last_checkpoint")).read().strip() == "model_0000003.pth"
    monkeypatch.setattr(LowLightTrainer, "run_step", real_step)
    starts.clear()
    results, _ = run_experiment(spec)
    assert len(starts) == 1 and "wnlb" in starts[0][0] and starts[0][1] == 4  # pre-training kept; wnlb resumed
    assert sorted(f for f in os.listdir(run_dir) if f.endswith(".pth")) == ["model_final.pth"]
    assert json.load(open(os.path.join(run_dir, "run.json")))["state"] == "trained"
    assert set(results["runs"][0]["w"]) == {"res2", "res3", "res4", "res5"}


def test_weights_of_another_architecture_fail_before_the_output_folder_exists(tmp_path):
    import torch
    from detectron2.modeling import build_model

    from wnlb_d2.engine.setup import setup_cfg

    register_tiny_demo(str(tmp_path / "demo"))
    cfg = setup_cfg(DEMO_CONFIG, ["MODEL.DEVICE", "cpu"])
    mask_rcnn = str(tmp_path / "mask_rcnn.pth")
    torch.save({"model": build_model(cfg).state_dict()}, mask_rcnn)
    solov2 = os.path.join(os.path.dirname(DEMO_CONFIG), "SOLOv2-Demo-R18-FPN.yaml")
    out = tmp_path / "out"
    msg = _run_tool(["--detector", "solov2", "--config-file", solov2, "--weights", mask_rcnn, "--output", str(out),
                     "--finetune-data", "tiny_demo_train_lowlight", "--test-data", "tiny_demo_val_lowlight"])
    assert msg.startswith("run_experiment.py: error:") and "\n" not in msg
    assert "Mask R-CNN" in msg and "SOLOv2" in msg, msg
    assert not out.exists()


def test_block_opts_reach_the_block_rows_alone(tmp_path):
    from wnlb_d2.experiment.detectron2_family import MaskRCNNFamily
    from wnlb_d2.experiment.runner import _finetune_identity

    register_tiny_demo(str(tmp_path / "demo"))
    spec = ExperimentSpec(config_file=DEMO_CONFIG, output_dir=str(tmp_path / "o"), pretrain_data="tiny_demo_train",
                          finetune_data="tiny_demo_train_lowlight", test_data="tiny_demo_val_lowlight",
                          block_opts=["MODEL.WNLB.ZERO_INIT", "conv_and_norm"])
    family = MaskRCNNFamily(spec)
    base = family._cfg([])
    assert family._block_opts(base, "finetuned") == []
    for row in ("nlb", "wnlb"):
        assert family._cfg(family._block_opts(base, row)).MODEL.WNLB.ZERO_INIT == "conv_and_norm"
    # the plain row's record does not change with them (its runs are shared between block recipes)
    assert "block_opts" not in _finetune_identity(spec, "finetuned", 0, {})
    assert _finetune_identity(spec, "wnlb", 0, {})["block_opts"] == ["MODEL.WNLB.ZERO_INIT", "conv_and_norm"]
    bad = ExperimentSpec(**{**spec.__dict__, "block_opts": ["MODEL.WNLB.ZERO_INIT", "x"]})
    with pytest.raises(ValueError, match="MODEL.WNLB.ZERO_INIT = 'x' is invalid"):
        MaskRCNNFamily(bad).validate()  # before anything trains
