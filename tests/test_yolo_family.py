"""The study runner with --detector yolov8: the four rows, seeds, severity levels, through Ultralytics."""

import importlib.util
import json
import os

import pytest
from helpers import load_script

if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


def test_yolov8_rows_through_the_runner(tmp_path):
    import wnlb_d2  # noqa: F401
    from wnlb_d2.data.datasets import register_demo
    from wnlb_d2.data.demo_dataset import DemoSpec
    from wnlb_d2.experiment import ExperimentSpec, run_experiment

    register_demo(prefix="yolofam_demo", root=str(tmp_path / "demo"), spec=DemoSpec(image_size=64, num_train=8,
                                                                                    num_val=4, seed=5))
    spec = ExperimentSpec(config_file="yolov8n-seg.yaml", output_dir=str(tmp_path / "study"), detector="yolov8",
                          pretrain_data="yolofam_demo_train", finetune_data="yolofam_demo_train_lowlight",
                          test_data="yolofam_demo_val_lowlight", normal_test_data="yolofam_demo_val",
                          pretrain_iters=2, finetune_iters=2, finetune_lr=1e-3, seeds=[0], severities=[0.0, 1.0],
                          bootstrap_samples=20, opts=["imgsz", "64", "batch", "4", "close_mosaic", "0"],
                          wnlb_weight_lr_factor=100.0)
    results, trained = run_experiment(spec)
    assert [(r["row"], r["seed"]) for r in results["runs"]] == [("finetuned", 0), ("nlb", 0), ("wnlb", 0)]
    for row in ("pretrained", "finetuned", "nlb", "wnlb", "pretrained_normal_light"):
        assert set(results[row]) == {"segm", "bbox"} and "AP" in results[row]["segm"], row
    # Every fine-tuning row started from the pre-trained row's weights; only wnlb has a learned w per block.
    for row in ("finetuned", "nlb", "wnlb"):
        info = json.load(open(os.path.join(trained[row].output_dir, "row.json")))
        assert info["epochs"] >= 1
        # Bug: the blocks' learning-rate factors were refused (before that, silently ignored).
        assert (info["wnlb_lr_factor"], info["wnlb_weight_lr_factor"]) == (1.0, 100.0), row
    pre = json.load(open(os.path.join(trained["pretrained"].output_dir, "row.json")))
    assert pre["wnlb_weight_lr_factor"] == 1.0  # the plain model's pre-training: no blocks, no factor
    w = results["runs"][-1]["w"]
    # Bugs: w was keyed "layer12", "layer5", "layer8" (sorted as strings in results.md), the
    # trajectory was empty and no row had a bootstrap interval, unlike the detectron2 rows.
    assert list(w) == ["P3", "P4", "P5"] and all(isinstance(v, float) for v in w.values())
    assert results["runs"][0]["w"] == {}
    traj = results["runs"][-1]["w_trajectory"]
    assert traj and [set(p) for p in traj] == [{"iteration", "P3", "P4", "P5"}] * len(traj)
    assert traj[-1]["iteration"] >= 1 and results["runs"][0]["w_trajectory"] == []
    assert set(results["bootstrap"]["pretrained"]) == {"segm", "bbox"}
    for run in results["runs"]:
        lo, hi = run["bootstrap"]["segm"]["ci95"]
        assert lo <= run["segm"]["AP"] <= hi, run["row"]
    # The severity levels keep only AP: no bootstrap there (its cost, ~10 s an evaluation at 1000 samples).
    sev = json.load(open(os.path.join(trained["wnlb"].output_dir, "eval_severity_t=1.00", "coco_metrics.json")))
    assert "AP-ci95-lo" not in sev["coco"]["segm"]
    assert os.path.basename(trained["wnlb"].handle["model"]) == "yolov8n-seg-wnlb.yaml"  # the scale comes from the name
    assert set(results["severity"]) == {"pretrained", "finetuned", "nlb", "wnlb"}
    assert list(results["severity_levels"]) == ["t=0.00", "t=1.00"]
    on_disk = json.load(open(tmp_path / "study" / "results.json"))
    assert on_disk["meta"]["identity"]["detector"] == "yolov8"
    # Feature denoising as for the detectron2 rows: NFE per place (the blocks' outputs too), the
    # blocks' non-local share, and the paired differences on the passed-on features.
    assert set(results["features"]) == {"pretrained", "finetuned", "nlb", "wnlb"}
    assert {"P3", "P4", "P5", "P3.after", "P4.after", "P5.after"} <= set(results["features"]["wnlb"])
    assert results["features"]["wnlb"]["P3"]["nfe"]["n"] == 4  # the 4 test images, one seed
    assert set(results["nonlocal_share"]) == {"nlb", "wnlb"} and set(results["nonlocal_share"]["wnlb"]) == {"P3", "P4", "P5"}
    assert set(results["paired_features"]["wnlb-vs-finetuned"]) == {"P3", "P4", "P5"}
    # A rerun keeps every trained row and evaluation (nothing trains or scores again).
    import wnlb_d2.yolo.family as yolo_family

    def no_training(*args, **kwargs):
        raise AssertionError("a finished YOLO run was trained or scored again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(yolo_family, "train_yolo_row", no_training)
        mp.setattr(yolo_family, "evaluate_yolo", no_training)
        again, trained_again = run_experiment(spec)
    for key in ("runs", "wnlb", "pretrained", "severity"):  # as JSON: NaN (no large objects) is not == NaN
        assert json.dumps(again[key], sort_keys=True) == json.dumps(on_disk[key], sort_keys=True), key
    assert trained_again["wnlb"].handle["model"] == trained["wnlb"].handle["model"]
    with pytest.raises(ValueError, match="two-stage rows"):
        run_experiment(ExperimentSpec(**{**spec.__dict__, "enhancers": ["clahe"], "output_dir": str(tmp_path / "x")}))
    _check_side_by_side_pictures(spec, trained, tmp_path)


def _check_side_by_side_pictures(spec, trained, tmp_path):
    # Bug: the runner's side-by-side pictures were not drawn for YOLO rows ("draws no pictures").
    import cv2
    import numpy as np
    from detectron2.data import DatasetCatalog

    from wnlb_d2.data.mapper import LowLightDatasetMapper
    from wnlb_d2.experiment import build_detector_family
    from wnlb_d2.yolo.data import LowLightYOLODataset

    family = build_detector_family(spec)
    paths = family.save_pictures(trained, spec.test_data, str(tmp_path / "pictures"), num_images=2, low_light=True)
    assert [os.path.basename(p) for p in paths] == ["sample_0.png", "sample_1.png"]
    d = DatasetCatalog.get(spec.test_data)[0]
    picture = cv2.imread(paths[0])
    # The input panel, then one per row, each the image at scale 2 under a title bar.
    assert picture.shape[1] == 2 * d["width"] * (1 + len(trained))
    # The input panel is the image the evaluation scores: the mapper's evaluation degradation.
    low = family._spec(False, True)
    image = LowLightYOLODataset._build_mapper(low, training=False)(dict(d))["image"].numpy().transpose(1, 2, 0)
    panel = picture[-2 * d["height"]:, :2 * d["width"]]
    np.testing.assert_array_equal(panel, cv2.resize(np.ascontiguousarray(image), (2 * d["width"], 2 * d["height"]),
                                                    interpolation=cv2.INTER_NEAREST))
    assert isinstance(LowLightYOLODataset._build_mapper(low, training=False), LowLightDatasetMapper)


def test_importing_the_integration_leaves_pil_and_the_core_reader_alone(tmp_path):
    # Ultralytics replaces PIL.Image.open process-wide; a non-image file must still be reported as
    # such by the core's reader (not as "No module named 'pi_heif'").
    import wnlb_d2.yolo  # noqa: F401
    from PIL import Image

    from wnlb_d2.data.image_io import ImageReadError, read_image

    assert Image.open.__module__ == "PIL.Image"
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.jpg.*UnidentifiedImageError"):
        read_image(str(tmp_path / "notes.jpg"))


def test_yolov8_preset_opts_come_before_the_command_line():
    tool = load_script("tools/run_experiment.py")
    values = tool.spec_values(tool.build_parser().parse_args(["--preset", "demo", "--detector", "yolov8"]))
    assert values["opts"] == ["close_mosaic", "3"] and values["pretrain_iters"] * 16 % 400 == 0
    # The same absolute learning rates on the blocks as the detectron2 families' presets: the
    # non-local path at 2e-4 x 100 and w at 2e-4 x 100 x 1.
    d2 = tool.spec_values(tool.build_parser().parse_args(["--preset", "demo", "--detector", "solov2"]))
    for v in (values, d2):
        v["path_lr"] = v["finetune_lr"] * v["wnlb_lr_factor"]
        v["w_lr"] = v["path_lr"] * v.get("wnlb_weight_lr_factor", 1.0)
    assert values["path_lr"] == pytest.approx(d2["path_lr"]) == pytest.approx(2e-2)
    assert values["w_lr"] == pytest.approx(5 * d2["w_lr"])  # w's x100 on YOLO's 5x larger base lr, as before
    values = tool.spec_values(tool.build_parser().parse_args(["--preset", "study", "--detector", "yolov8",
                                                              "close_mosaic", "0", "imgsz", "64"]))
    assert values["opts"] == ["close_mosaic", "3", "close_mosaic", "0", "imgsz", "64"]  # later pairs win
    assert values["seeds"] == [0, 1, 2] and values["output_dir"] == "output/study-yolov8"
    assert tool.spec_values(tool.build_parser().parse_args(["--preset", "demo"]))["opts"] == []  # maskrcnn


def test_a_detectron2_config_for_yolov8_fails_before_the_output_folder_exists(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tool = load_script("tools/run_experiment.py")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        tool.main(["--preset", "quick", "--detector", "yolov8", "--config-file",
                   os.path.join(root, "configs", "demo", "Base-Demo-R18-FPN.yaml"),
                   "--output", str(out)])
    assert "has no 'backbone' list of layers" in str(e.value.code) and "\n" not in str(e.value.code)
    assert not out.exists()
