"""train_net.py end to end on a tiny demo dataset: training per backbone, eval-only, resume,
bad input."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from detectron2.engine import default_argument_parser

from engine_helpers import DEMO_CONFIG, REPO, register_tiny_demo, tiny_opts

sys.path.insert(0, REPO)
import train_net  # noqa: E402

from wnlb_d2.engine import LowLightTrainer, setup_cfg  # noqa: E402


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    register_tiny_demo(root)
    return root


def _args(*argv):
    return default_argument_parser().parse_args(list(argv))


@pytest.mark.parametrize("backbone, extra", [
    ("build_resnet_fpn_backbone", {}),
    ("build_resnet_wnlb_fpn_backbone", {"MODEL.WNLB.MODE": "concatenate"}),
    ("build_resnet_wnlb_fpn_backbone", {"MODEL.WNLB.FUSION": "residual", "SOLVER.FINETUNE_POLICY": "backbone"}),
])
def test_training_iterations_fpn(demo_root, tmp_path, backbone, extra):
    out = str(tmp_path / "run")
    opts = tiny_opts(out, iters=3, **{"MODEL.BACKBONE.NAME": backbone, "INPUT.LOW_LIGHT.ENABLED": "True"}, **extra)
    train_net.main(_args("--config-file", DEMO_CONFIG, *opts))
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    train = [m for m in metrics if "total_loss" in m]
    assert train[-1]["iteration"] == 2
    assert all(torch.isfinite(torch.tensor(m["total_loss"])) for m in train)
    if "wnlb" in backbone and extra.get("MODEL.WNLB.FUSION") != "residual":
        assert {"wnlb/w_res2", "wnlb/w_res5"} <= set(train[-1]), "w of each stage is logged"


@pytest.mark.parametrize("stock, backbone, stages", [
    ("COCO-Detection/retinanet_R_50_FPN_3x.yaml", "build_retinanet_resnet_wnlb_fpn_backbone", '["res3", "res4", "res5"]'),
    ("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml", "build_resnet_wnlb_backbone", '["res3", "res4"]'),
])
def test_training_iterations_retinanet_and_c4(demo_root, tmp_path, stock, backbone, stages):
    out = str(tmp_path / "run")
    opts = tiny_opts(out, iters=2, **{
        "MODEL.BACKBONE.NAME": backbone, "MODEL.WNLB.STAGES": stages, "MODEL.RESNETS.DEPTH": 18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": 64, "MODEL.RESNETS.RES5_DILATION": 1, "MODEL.RETINANET.NUM_CLASSES": 6,
        "MODEL.ROI_HEADS.NUM_CLASSES": 6, "MODEL.WEIGHTS": "", "MODEL.PIXEL_STD": "[57.375, 57.120, 58.395]",
    })
    train_net.main(_args("--config-file", "model_zoo://" + stock, *opts))
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


def test_eval_only_gives_coco_metrics(demo_root, tmp_path):
    out = str(tmp_path / "run")
    opts = tiny_opts(out, iters=2, **{"MODEL.BACKBONE.NAME": "build_resnet_wnlb_fpn_backbone"})
    train_net.main(_args("--config-file", DEMO_CONFIG, *opts))
    res = train_net.main(_args("--config-file", DEMO_CONFIG, "--eval-only", *opts,
                               "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                               "DATASETS.TEST", "('tiny_demo_val_lowlight',)"))
    for task in ("bbox", "segm"):
        assert set(res[task]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}


def test_eval_only_without_weights_is_an_error(demo_root, tmp_path):
    with pytest.raises(ValueError, match="Evaluation needs weights"):
        train_net.main(_args("--config-file", DEMO_CONFIG, "--eval-only", *tiny_opts(str(tmp_path / "r"))))


@pytest.mark.parametrize("optimizer,state_key", [("SGD", "momentum_buffer"), ("AdamW", "exp_avg")])
def test_resume_restores_iteration_optimizer_scheduler_and_weights(demo_root, tmp_path, optimizer, state_key):
    out = str(tmp_path / "run")
    opts = tiny_opts(out, iters=4, **{"SOLVER.CHECKPOINT_PERIOD": 2, "SOLVER.MOMENTUM": 0.9,
                                      "SOLVER.OPTIMIZER": optimizer})
    cfg = setup_cfg(DEMO_CONFIG, opts)
    trainer = LowLightTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    saved = torch.load(os.path.join(out, "model_0000001.pth"), weights_only=False)
    # "Interrupt": drop what came after iteration 1, as if the run had been killed there.
    os.remove(os.path.join(out, "model_0000003.pth"))
    os.remove(os.path.join(out, "model_final.pth"))
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write("model_0000001.pth")
    resumed = LowLightTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    for k, v in saved["model"].items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    opt_state = resumed.optimizer.state_dict()["state"]
    saved_opt = saved["trainer"]["_trainer"]["optimizer"]["state"]
    assert opt_state and opt_state.keys() == saved_opt.keys()
    assert all(torch.equal(opt_state[i][state_key], s[state_key]) for i, s in saved_opt.items())
    assert any(s[state_key].abs().sum() > 0 for s in saved_opt.values())
    saved_sched = next(v for k, v in saved["trainer"]["hooks"].items() if k.endswith("LRScheduler"))
    assert resumed.scheduler.state_dict()["last_epoch"] == saved_sched["last_epoch"] == 2
    resumed.train()
    assert resumed.iter == 4 and os.path.isfile(os.path.join(out, "model_final.pth"))


def test_resume_after_a_real_kill(demo_root, tmp_path):
    """SIGKILL train_net.py mid-run, then --resume: it continues from the last whole checkpoint."""
    out = str(tmp_path / "run")
    env = dict(os.environ, TINY_DEMO_ROOT=demo_root)
    cmd = [sys.executable, os.path.join(REPO, "tests", "tiny_train_net.py"), "--config-file", DEMO_CONFIG,
           *tiny_opts(out, iters=400, **{"SOLVER.CHECKPOINT_PERIOD": 2})]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = os.path.join(out, "model_0000003.pth")
    deadline = time.time() + 240
    while not os.path.exists(ckpt) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert os.path.exists(ckpt), "the run did not reach its second checkpoint"
    # Whatever the moment of the kill, every checkpoint under its real name is whole.
    for f in os.listdir(out):
        if f.endswith(".pth"):
            torch.load(os.path.join(out, f), weights_only=False)
    last = open(os.path.join(out, "last_checkpoint")).read()
    resumed_iter = torch.load(os.path.join(out, last), weights_only=False)["iteration"] + 1
    cmd[cmd.index("SOLVER.MAX_ITER") + 1] = str(resumed_iter + 2)
    res = subprocess.run(cmd[:2] + ["--resume"] + cmd[2:], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"Starting training from iteration {resumed_iter}" in res.stderr + res.stdout
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


def _run_cli(demo_root, *argv):
    env = dict(os.environ, TINY_DEMO_ROOT=demo_root)
    return subprocess.run([sys.executable, os.path.join(REPO, "tests", "tiny_train_net.py"), *argv],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case, argv, message", [
    ("missing config", ["--config-file", "configs/nope.yaml"], "Config file not found: configs/nope.yaml"),
    ("unknown key", ["--config-file", DEMO_CONFIG, "MODEL.WNLB.MODES", "dot"], "Non-existent config key: MODEL.WNLB.MODES"),
    ("unregistered dataset", ["--config-file", DEMO_CONFIG, "DATASETS.TRAIN", "('coco_2099_train',)"],
     "DATASETS.TRAIN names 'coco_2099_train', which is not a registered dataset"),
    ("bad policy", ["--config-file", DEMO_CONFIG, "SOLVER.FINETUNE_POLICY", "heads"], "FINETUNE_POLICY = 'heads' is invalid"),
])
def test_bad_input_exits_with_a_clear_message(demo_root, tmp_path, case, argv, message):
    res = _run_cli(demo_root, *argv, "OUTPUT_DIR", str(tmp_path / "out"))
    assert res.returncode != 0, case
    assert message in res.stderr, res.stderr[-1500:]
    assert "Traceback" not in res.stderr


def test_unwritable_output_dir(demo_root, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    res = _run_cli(demo_root, "--config-file", DEMO_CONFIG, "OUTPUT_DIR", str(blocker / "out"))
    assert res.returncode != 0
    assert f"OUTPUT_DIR {str(blocker / 'out')!r} is not writable" in res.stderr


def test_weights_that_do_not_fit_the_architecture(demo_root, tmp_path):
    out = str(tmp_path / "run")
    # An R50 checkpoint for an R18 model: every ResNet tensor has another shape or name.
    from detectron2.modeling import build_model

    cfg = setup_cfg(DEMO_CONFIG, tiny_opts(out, **{"MODEL.RESNETS.DEPTH": 50, "MODEL.RESNETS.RES2_OUT_CHANNELS": 256}))
    r50 = os.path.join(str(tmp_path), "r50.pth")
    torch.save({"model": build_model(cfg).state_dict()}, r50)
    with pytest.raises(Exception, match="does not match the model's backbone"):
        train_net.main(_args("--config-file", DEMO_CONFIG, *tiny_opts(out), "MODEL.WEIGHTS", r50))
    res = _run_cli(demo_root, "--config-file", DEMO_CONFIG, *tiny_opts(out), "MODEL.WEIGHTS", r50)
    assert res.returncode != 0 and "does not match the model's backbone" in res.stderr


def test_nan_loss_stops_without_saving_broken_weights(demo_root, tmp_path):
    out = str(tmp_path / "run")
    opts = tiny_opts(out, iters=30, **{"SOLVER.BASE_LR": "1e6", "SOLVER.WARMUP_ITERS": "0", "SOLVER.CHECKPOINT_PERIOD": 1})
    with pytest.raises(FloatingPointError):
        train_net.main(_args("--config-file", DEMO_CONFIG, *opts))
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    for f in os.listdir(out):
        if f.endswith(".pth"):
            state = torch.load(os.path.join(out, f), weights_only=False)["model"]
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), f
