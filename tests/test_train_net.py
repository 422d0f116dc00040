"""train_net.py end to end on a tiny demo dataset: training per backbone, eval-only, resume,
bad input."""

import json
import logging
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
from wnlb_d2.utils.io import temporary_name  # noqa: E402


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


# --- issue 10: bad-input probe -------------------------------------------------------------------

def _invoke(monkeypatch, *argv):
    """train_net.py's command line in this process: the exit message (None on success)."""
    monkeypatch.setattr(sys, "argv", ["train_net.py", *argv])
    try:
        train_net.invoke_main()
    except SystemExit as e:
        return str(e.code)
    return None


@pytest.fixture(scope="module")
def wnlb_checkpoint(demo_root, tmp_path_factory):
    """A wNLB R18 checkpoint (blocks after res2-5, w = 0.3) and a stock one of the same model."""
    from detectron2.modeling import build_model

    from wnlb_d2 import WNLBCheckpointer

    folder = tmp_path_factory.mktemp("ckpt")
    cfg = setup_cfg(DEMO_CONFIG, tiny_opts(str(folder), **{"MODEL.BACKBONE.NAME": "build_resnet_wnlb_fpn_backbone"}))
    model = build_model(cfg)
    with torch.no_grad():
        for block in model.backbone.bottom_up.wnlb.values():
            block.fusion_weight.fill_(0.3)
    WNLBCheckpointer(model, save_dir=str(folder)).save("wnlb")
    stock = {k: v for k, v in model.state_dict().items() if ".wnlb." not in k}
    torch.save({"model": stock}, folder / "stock.pth")
    return str(folder / "wnlb.pth"), str(folder / "stock.pth")


@pytest.mark.parametrize("backbone", ["build_resnet_fpn_backbone", "build_resnet_wnlb_fpn_backbone"])
@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "text", "random bytes", "nan", "url offline"])
def test_unreadable_weights_exit_with_one_line_naming_the_file(demo_root, wnlb_checkpoint, tmp_path, monkeypatch,
                                                               case, backbone):
    good = wnlb_checkpoint[1]
    path = str(tmp_path / "w.pth")
    if case == "empty":
        open(path, "wb").close()
    elif case == "truncated":
        data = open(good, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])
    elif case == "text":
        open(path, "w").write("MODEL:\n  WEIGHTS: oops\n")
    elif case == "random bytes":
        open(path, "wb").write(os.urandom(5000))
    elif case == "nan":
        state = torch.load(good, weights_only=False)
        state["model"]["roi_heads.box_predictor.cls_score.weight"][0, 0] = float("nan")
        torch.save(state, path)
    elif case == "url offline":
        import urllib.error
        import urllib.request

        def offline(url, *args, **kwargs):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

        monkeypatch.setattr(urllib.request, "urlretrieve", offline)
        monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
        path = "detectron2://ImageNetPretrained/MSRA/R-18.pkl"
    out = str(tmp_path / "run")
    msg = _invoke(monkeypatch, "--config-file", DEMO_CONFIG,
                  *tiny_opts(out, iters=1, **{"MODEL.BACKBONE.NAME": backbone}), "MODEL.WEIGHTS", path)
    assert msg is not None and msg.startswith("train_net.py: error: CheckpointReadError: "), msg
    assert f"Checkpoint {path!r} " in msg and "\n" not in msg, msg
    words = {"missing": "does not exist", "empty": "is empty", "nan": "holds NaN/Inf in 1 tensors",
             "url offline": "could not be downloaded", "truncated": "torch checkpoint"}
    assert words.get(case, "not a torch or pickle checkpoint") in msg, msg
    assert not os.path.exists(os.path.join(out, "model_final.pth"))


def test_eval_only_adds_the_blocks_a_checkpoint_holds(demo_root, wnlb_checkpoint, tmp_path, monkeypatch):
    seen = {}

    def fake_test(cfg, model, evaluators=None):
        seen["model"] = model
        return {}

    monkeypatch.setattr(train_net.Trainer, "test", staticmethod(fake_test))
    # The config names the stock backbone; the checkpoint has blocks after res2-5.
    train_net.main(_args("--config-file", DEMO_CONFIG, "--eval-only", *tiny_opts(str(tmp_path / "run")),
                         "MODEL.WEIGHTS", wnlb_checkpoint[0]))
    blocks = seen["model"].backbone.bottom_up.wnlb
    assert sorted(blocks) == ["res2", "res3", "res4", "res5"]
    assert all(b.fusion_weight.item() == pytest.approx(0.3) for b in blocks.values()), "the blocks' weights are loaded"
    log = open(os.path.join(str(tmp_path / "run"), "log.txt")).read()
    assert "holds non-local blocks that the config's backbone lacks" in log
    assert "Checkpoint loaded" in log and "every checkpoint tensor was used" in log


def test_checkpoint_blocks_the_model_cannot_take_are_an_error(demo_root, wnlb_checkpoint, tmp_path, monkeypatch):
    msg = _invoke(monkeypatch, "--config-file", DEMO_CONFIG, "--eval-only", *tiny_opts(str(tmp_path / "run")),
                  "MODEL.WEIGHTS", wnlb_checkpoint[0], "MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone",
                  "MODEL.WNLB.STAGES", "['res3', 'res4', 'res5']")
    assert msg and "holds non-local blocks the model cannot take" in msg and "backbone.bottom_up.wnlb.res2" in msg, msg


@pytest.mark.parametrize("what, message", [
    ("no annotations field", "images of 'tiny_noann_train' have no 'annotations'"),
    ("no objects", "no image has an annotated (non-crowd) object, and DATALOADER.FILTER_EMPTY_ANNOTATIONS True"),
])
def test_images_without_annotations(demo_root, tmp_path, monkeypatch, what, message):
    from detectron2.data import DatasetCatalog

    if "tiny_noann_train" not in DatasetCatalog.list():
        def strip(keep):
            return [{**{k: v for k, v in d.items() if k != "annotations"}, **keep} for d in DatasetCatalog.get("tiny_demo_train")]

        DatasetCatalog.register("tiny_noann_train", lambda: strip({}))
        DatasetCatalog.register("tiny_noobj_train", lambda: strip({"annotations": []}))
    name = "tiny_noann_train" if what == "no annotations field" else "tiny_noobj_train"
    msg = _invoke(monkeypatch, "--config-file", DEMO_CONFIG,
                  *tiny_opts(str(tmp_path / "run"), iters=1, **{"DATASETS.TRAIN": f"('{name}',)"}))
    assert msg and msg.startswith("train_net.py: error: ValueError: DATASETS.TRAIN") and message in msg, msg


def test_wnlb_log_lines_reach_log_txt_once_and_stale_temporaries_go(demo_root, wnlb_checkpoint, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / os.path.basename(temporary_name("model_0000005.pth", dead.pid))  # what a kill during a save leaves
    stale.write_bytes(b"\0" * 4096)
    res = _run_cli(demo_root, "--config-file", DEMO_CONFIG, "--resume",
                   *tiny_opts(str(out), iters=1, **{"MODEL.BACKBONE.NAME": "build_resnet_wnlb_fpn_backbone"}),
                   "MODEL.WEIGHTS", wnlb_checkpoint[1])
    assert res.returncode == 0, res.stderr[-2000:]
    log = open(out / "log.txt").read()
    for text in (log, res.stdout):
        lines = [line for line in text.splitlines() if "Checkpoint loaded" in line]
        assert len(lines) == 1, lines
        assert "wNLB tensors are new and keep their initialisation" in lines[0]
    assert not stale.exists()
    assert f"Removed 1 stale checkpoint temporaries of dead processes from {out}" in log
    assert os.path.isfile(out / "model_final.pth")


@pytest.mark.parametrize("case, message", [
    ("empty yaml", "is empty; expected a mapping of config keys"),
    ("yaml syntax", "is not valid YAML: expected the node content, but found '<stream end>' at line 3"),
    ("stage", "MODEL.WNLB.STAGES entry = 'res6' is invalid; expected one of ('res2', 'res3', 'res4', 'res5')"),
    ("mode", "MODEL.WNLB.MODE = 'foo' is invalid; expected one of ('embedded'"),
])
def test_bad_config_exits_with_one_line(demo_root, tmp_path, monkeypatch, case, message):
    config, extra = DEMO_CONFIG, []
    if case == "empty yaml":
        config = str(tmp_path / "empty.yaml")
        open(config, "w").close()
    elif case == "yaml syntax":
        config = str(tmp_path / "bad.yaml")
        open(config, "w").write("MODEL:\n  WEIGHTS: [\n")
    else:  # the demo config names the stock backbone, which never reads MODEL.WNLB
        extra = ["MODEL.WNLB.STAGES", "['res6']"] if case == "stage" else ["MODEL.WNLB.MODE", "foo"]
    out = str(tmp_path / "run")
    msg = _invoke(monkeypatch, "--config-file", config, *tiny_opts(out, iters=1), *extra)
    assert msg and msg.startswith("train_net.py: error: ValueError: ") and message in msg and "\n" not in msg, msg
    if case.endswith("yaml"):
        assert f"Config file {config} " in msg
    assert not os.path.exists(os.path.join(out, "model_final.pth"))


# --- issue 20: a failed write while training (disk full) ----------------------------------------

def _temporaries(folder):
    from wnlb_d2.utils.io import is_temporary

    return [os.path.join(d, n) for d, subdirs, files in os.walk(folder) for n in files + subdirs if is_temporary(n)]


@pytest.fixture
def evaluations(monkeypatch):
    """The evaluations train_net.py starts (none run: a list of their OUTPUT_DIRs)."""
    started = []

    def test(cls, cfg, model, evaluators=None):
        started.append(cfg.OUTPUT_DIR)
        return {}

    monkeypatch.setattr(train_net.Trainer, "test", classmethod(test))
    return started


@pytest.mark.parametrize("failure, words", [
    ("OSError", "No space left on device"),
    # torch's C++ writer: a RuntimeError without errno; the free space tells what it was.
    ("torch, disk full", "No space left on device (the weights alone take "),
    ("torch, other", "torch could not write it ([enforce fail at inline_container.cc:672] . unexpected pos 2963456"),
])
def test_disk_full_while_saving_the_final_checkpoint(demo_root, tmp_path, monkeypatch, evaluations, failure, words):
    import errno
    import shutil

    out = str(tmp_path / "run")
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if ".model_final.pth.tmp." not in str(f):
            return real_save(obj, f, *args, **kwargs)
        with open(f, "wb") as fh:  # part of the checkpoint reaches the disk first
            fh.write(b"PK\x03\x04" + b"\0" * 4096)
        if failure == "OSError":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a flush's error: no file name
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2963456 vs 2963352")

    monkeypatch.setattr(torch, "save", save)
    if failure == "torch, disk full":
        usage = shutil.disk_usage(str(tmp_path))
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2**20))
    msg = _invoke(monkeypatch, "--config-file", DEMO_CONFIG, *tiny_opts(out, iters=2))
    target = os.path.join(out, "model_final.pth")
    assert evaluations == [] and not os.path.exists(os.path.join(out, "inference")), "no evaluation after a failed training"
    assert msg and msg.startswith(f"train_net.py: error: OSError: {target}: {words}") and "\n" not in msg, msg
    assert _temporaries(out) == [] and not os.path.exists(target)
    log = open(os.path.join(out, "log.txt")).read()
    assert f"Exception during training: OSError: [Errno {errno.EIO if failure == 'torch, other' else errno.ENOSPC}] " in log
    assert "Traceback" not in log


def test_disk_full_while_writing_log_txt(demo_root, tmp_path, monkeypatch, evaluations, capfd):
    """log.txt on a full device from the first training step: one line naming it, no
    "--- Logging error ---" per log line, no evaluation."""
    out = str(tmp_path / "run")
    log_txt = os.path.join(out, "log.txt")

    class LogOnAFullDisk(train_net.Trainer):
        def resume_or_load(self, resume=True):
            super().resume_or_load(resume)
            full = open("/dev/full", "a")  # a real device that fails every write with ENOSPC
            full.buffer.raw.name = log_txt
            for name in ("detectron2", "fvcore", "wnlb_d2"):
                for handler in logging.getLogger(name).handlers:
                    if getattr(handler.stream, "name", None) == log_txt:
                        handler.setStream(full)

    monkeypatch.setattr(train_net, "Trainer", LogOnAFullDisk)
    msg = _invoke(monkeypatch, "--config-file", DEMO_CONFIG, *tiny_opts(out, iters=3))
    assert msg == f"train_net.py: error: OSError: {log_txt}: No space left on device", msg
    assert evaluations == [] and _temporaries(out) == []
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err, err[-3000:]


def test_disk_full_while_writing_metrics_json_exits_with_one_line(demo_root, tmp_path):
    """metrics.json on a real full device (/dev/full): the whole output of the process."""
    out = tmp_path / "run"
    out.mkdir()
    os.symlink("/dev/full", out / "metrics.json")
    res = _run_cli(demo_root, "--config-file", DEMO_CONFIG, *tiny_opts(str(out), iters=2))
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"train_net.py: error: OSError: {out / 'metrics.json'}: No space left on device"), res.stderr[-3000:]
    for noise in ("Traceback", "Exception ignored", "Logging error", "Start inference"):
        assert noise not in text, text[-3000:]
    assert not (out / "inference").exists() and _temporaries(str(out)) == []
