"""The whole YOLO path offline: build, train a few iterations, validate, score with pycocotools.

It runs in a fresh interpreter whose sockets and ``requests`` refuse to connect before anything
is imported, so it also checks that ``import wnlb_d2`` leaves Ultralytics unimported and that
nothing on the path even tries the network.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

# find_spec, not importorskip: importing ultralytics before wnlb_d2.yolo would skip the
# package's environment defaults (offline, config folder outside the home folder).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import copy, json, socket, sys
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[1:3]))
        raise OSError("network disabled by the test")

    socket.socket.connect = socket.socket.connect_ex = refuse
    socket.getaddrinfo = socket.create_connection = refuse

    import wnlb_d2
    core_clean = "ultralytics" not in sys.modules
    import requests

    def refuse_http(self, method, url, *args, **kwargs):
        attempts.append(f"{method} {url}")
        raise requests.ConnectionError("network disabled by the test")

    requests.Session.request = refuse_http

    import torch
    import wnlb_d2.yolo as wy
    from ultralytics.utils.torch_utils import unwrap_model
    from wnlb_d2.data.datasets import register_demo
    from wnlb_d2.data.demo_dataset import DemoSpec

    torch.set_num_threads(1)
    out = sys.argv[1]
    register_demo(prefix="yolotrain_demo", root=out + "/demo", spec=DemoSpec(image_size=64, num_train=8,
                                                                            num_val=4, seed=4))
    report = {"core_clean": core_clean, "fixed_loss": []}

    def fixed_loss(trainer):
        # Loss of the current weights on one fixed batch of the (training) images, no augmentation,
        # in training mode (batch statistics: the running ones barely move in 8 iterations), on a
        # copy so that the trained model's statistics are untouched.
        model = copy.deepcopy(unwrap_model(trainer.model)).train()
        batch = trainer.preprocess_batch(next(iter(trainer.test_loader)))
        batch["masks"] = batch["masks"].float()
        with torch.no_grad():
            loss, _ = model.loss(batch)
        report["fixed_loss"].append(float(loss.sum()))

    def optimizer_groups(trainer):
        decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
        blocks = [m for m in unwrap_model(trainer.model).modules() if isinstance(m, wy.YOLONonLocalBlock2d)]
        report["w_decay"] = [decay[id(m.fusion_weight)] for m in blocks]
        report["other_decay"] = max(decay.values())
        fixed_loss(trainer)

    # Train and validate on the same 8 images: the fixed-batch loss must fall.
    # Through run_demo (tools/yolo_demo.py's function): train_yolo_row, then evaluate_yolo on a
    # further test set.
    from wnlb_d2.yolo.demo import run_demo

    summary = run_demo(out + "/row", model="configs/yolo/yolov8n-seg-wnlb.yaml", train="yolotrain_demo_train",
                       val="yolotrain_demo_train", extra_val=["yolotrain_demo_val_lowlight"],
                       low_light=wy.LowLightSpec("lv2021", train_seed=3),  # reproducible training draws
                       imgsz=64, epochs=4, batch=4, mosaic=0.0, lr0=5e-3, warmup_epochs=0, nbs=4,
                       callbacks={"on_pretrain_routine_end": optimizer_groups, "on_train_end": fixed_loss})
    report["results"] = summary["results"]["yolotrain_demo_train"]
    report["extra"] = summary["results"]["yolotrain_demo_val_lowlight"]
    report["attempts"] = attempts
    json.dump(report, open(out + "/report.json", "w"))
''')


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("yolo_offline")
    script = out / "offline_run.py"
    script.write_text(SCRIPT)
    home, tmp = out / "home", out / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp), OMP_NUM_THREADS="1")
    for key in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "XDG_CONFIG_HOME"):
        env.pop(key, None)  # the package's own defaults are what is tested
    proc = subprocess.run([sys.executable, "-W", "ignore", str(script), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    with open(out / "report.json") as f:
        return out, json.load(f)


def test_runs_offline_and_core_import_leaves_ultralytics_out(run):
    out, report = run
    assert report["core_clean"]
    assert report["attempts"] == []
    # Ultralytics' settings went to the temporary folder, nothing of it into the home folder
    # (matplotlib, a dependency of both, keeps its font cache there as always).
    assert [p for p in (out / "home").rglob("*") if "ultralytics" in str(p).lower()] == []
    assert any(p.name.startswith("wnlb_d2-ultralytics-") for p in (out / "tmp").iterdir())


def test_training_iterations_reduce_the_loss(run):
    _, report = run
    before, after = report["fixed_loss"]
    assert after < 0.9 * before, report["fixed_loss"]


def test_demo_scores_the_extra_test_set(run):
    out, report = run
    assert set(report["extra"]) == {"segm", "bbox"}
    with open(out / "row" / "demo.json") as f:
        assert json.load(f)["epochs"] == 4
    assert (out / "row" / "eval_yolotrain_demo_val_lowlight" / "val" / "predictions.json").exists()


def test_block_weights_are_trained_without_weight_decay(run):
    out, report = run
    assert report["w_decay"] == [0.0, 0.0, 0.0] and report["other_decay"] > 0
    with open(out / "row" / "row.json") as f:
        row = json.load(f)
    assert set(row["block_w"]) == {"5", "8", "12"}
    assert max(abs(w) for w in row["block_w"].values()) > 1e-3  # the blocks learn


def test_validation_predictions_are_scored_by_pycocotools(run):
    out, report = run
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with open(out / "row" / "val" / "predictions.json") as f:
        raw = json.load(f)
    with open(out / "demo" / "v4_64px_8+4_seed4_lv2021" / "annotations" / "instances_train.json") as f:
        gt_json = json.load(f)
    assert raw and {r["image_id"] for r in raw} <= {im["id"] for im in gt_json["images"]}
    # The independent reference: pycocotools on the raw file, ids mapped by hand (stem = image
    # id, class index + 1 = demo category id), boxes of segm results from the masks.
    gt = COCO()
    gt.dataset = gt_json
    gt.createIndex()
    for iou_type in ("segm", "bbox"):
        dets = [{k: v for k, v in r.items() if k != ("bbox" if iou_type == "segm" else "segmentation")}
                for r in raw]
        ev = COCOeval(gt, gt.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        got = report["results"][iou_type]
        for i, name in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
            ref = ev.stats[i] * 100 if ev.stats[i] >= 0 else float("nan")
            assert got[name] == pytest.approx(ref, nan_ok=True), (iou_type, name)
