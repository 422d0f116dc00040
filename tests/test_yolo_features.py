"""Feature denoising as a number for YOLOv8-seg: the NFE at P3-P5 and after each block, the
blocks' non-local share, on the images the YOLO evaluation scores."""

import copy
import importlib.util
import math
import os
import types

import numpy as np
import pytest

# find_spec, not importorskip: importing ultralytics before wnlb_d2.yolo would skip the
# package's environment defaults (offline, config folder outside the home folder).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

import torch  # noqa: E402

import wnlb_d2  # noqa: E402,F401
import wnlb_d2.yolo as wy  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from ultralytics.nn.tasks import SegmentationModel  # noqa: E402
from wnlb_d2.analysis import NoCleanCounterpartError, normalised_feature_error  # noqa: E402
from wnlb_d2.data.datasets import register_demo  # noqa: E402
from wnlb_d2.data.demo_dataset import DemoSpec  # noqa: E402
from wnlb_d2.experiment.family import TrainedRow  # noqa: E402
from wnlb_d2.yolo.data import LowLightSpec, LowLightYOLODataset  # noqa: E402
from wnlb_d2.yolo.family import YOLOv8Family  # noqa: E402
from wnlb_d2.yolo.features import evaluation_images, validation_input, yolo_feature_errors, \
    yolo_stage_layers  # noqa: E402
from wnlb_d2.yolo.model_yaml import insert_nonlocal_blocks  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PREFIX = "yolofeat_demo"
SPEC = DemoSpec(image_size=64, num_train=2, num_val=3, seed=7)
IMGSZ = 64
DARK = LowLightSpec("lv2021", train=False, val=True, seed=0)  # the evaluation degradation


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo_features")
    register_demo(prefix=PREFIX, root=str(root / "demo"), spec=SPEC)
    return root, list(MetadataCatalog.get(f"{PREFIX}_val").thing_classes)


def _model(classes, fusion=None, **options):
    torch.manual_seed(0)
    d = insert_nonlocal_blocks("yolov8n-seg.yaml", fusion=fusion, **options) if fusion else "yolov8n-seg.yaml"
    model = SegmentationModel(d, nc=len(classes), verbose=False)
    model.names = dict(enumerate(classes))
    return model.eval()


@pytest.fixture(scope="module")
def wnlb_weights(demo):
    """An Ultralytics-style checkpoint of a fresh wNLB model (w = 0.25, W_z's norm zero)."""
    root, classes = demo
    path = str(root / "wnlb.pt")
    torch.save({"model": _model(classes, "weighted", weight_init=0.25), "train_args": {"task": "segment"}}, path)
    return path


def test_stage_layers_with_and_without_blocks(demo):
    _, classes = demo
    # yolov8n: P3 = C2f layer 4, P4 = C2f 6, P5 = SPPF 9; each block shifts the later layers by one.
    assert yolo_stage_layers(_model(classes)) == ({"P3": 4, "P4": 6, "P5": 9}, {})
    assert yolo_stage_layers(_model(classes, "weighted")) == ({"P3": 4, "P4": 7, "P5": 11},
                                                             {"P3": 5, "P4": 8, "P5": 12})
    # A block after P2 adds that stage to the places.
    stages, blocks = yolo_stage_layers(_model(classes, "residual", stages=("P2", "P4")))
    assert stages == {"P2": 2, "P3": 5, "P4": 7, "P5": 11} and blocks == {"P2": 3, "P4": 8}


def test_places_lengths_and_a_fresh_block_through_the_family(demo, wnlb_weights):
    family = YOLOv8Family(types.SimpleNamespace(opts=["imgsz", str(IMGSZ)]))
    row = TrainedRow(row="wnlb", seed=0, weights=wnlb_weights, output_dir="unused")
    out = family.feature_errors(row, f"{PREFIX}_val", low_light=True, num_images=2)
    assert out["images"] == 2
    assert list(out["nfe"]) == ["P3", "P3.after", "P4", "P4.after", "P5", "P5.after"]
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in out["nfe"].values())  # the degradation shows
    # W_z's norm starts at zero: the non-local term is exactly 0, the block only rescales by
    # (1 - w), which leaves the NFE unchanged (both maps scale alike).
    assert out["nonlocal_share"] == {"P3": [0.0, 0.0], "P4": [0.0, 0.0], "P5": [0.0, 0.0]}
    for stage in ("P3", "P4", "P5"):
        np.testing.assert_allclose(out["nfe"][f"{stage}.after"], out["nfe"][stage], rtol=1e-5)
    # The family passes its evaluation degradation and size.
    direct = yolo_feature_errors(wnlb_weights, f"{PREFIX}_val", low_light_spec=family._spec(False, True),
                                 num_images=2, imgsz=IMGSZ)
    assert direct == out
    assert family._spec(False, True).active(training=False)
    bigger = yolo_feature_errors(wnlb_weights, f"{PREFIX}_val", low_light_spec=family._spec(False, True),
                                 num_images=2, imgsz=2 * IMGSZ)
    assert bigger["nfe"]["P3"] != pytest.approx(out["nfe"]["P3"], rel=1e-6)


def test_a_plain_model_and_bad_inputs(demo, tmp_path):
    _, classes = demo
    out = yolo_feature_errors(_model(classes), f"{PREFIX}_val_lowlight", low_light_spec=None, num_images=None,
                              imgsz=IMGSZ)
    assert out["images"] == SPEC.num_val and list(out["nfe"]) == ["P3", "P4", "P5"]
    assert out["nonlocal_share"] == {} and all(x > 0 for v in out["nfe"].values() for x in v)
    # Not degraded on the fly, no clean twin: said, not a silent zero.
    with pytest.raises(NoCleanCounterpartError, match=f"{PREFIX}_val: no clean counterpart"):
        yolo_feature_errors(_model(classes), f"{PREFIX}_val", low_light_spec=LowLightSpec(None), num_images=1,
                            imgsz=IMGSZ)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        yolo_feature_errors(str(tmp_path / "missing.pt"), f"{PREFIX}_val", low_light_spec=DARK, num_images=1,
                            imgsz=IMGSZ)
    # A clean twin of another size.
    import cv2

    small = str(tmp_path / "small.png")
    cv2.imwrite(small, np.zeros((32, 48, 3), np.uint8))
    _register(f"{PREFIX}_twin_small", [{**r, "file_name": small} for r in DatasetCatalog.get(f"{PREFIX}_val")], classes)
    _register(f"{PREFIX}_sized", DatasetCatalog.get(f"{PREFIX}_val_lowlight"), classes,
              clean_counterpart=f"{PREFIX}_twin_small")
    with pytest.raises(ValueError, match=r"small.png \(\(32, 48\)\) differ in size"):
        yolo_feature_errors(_model(classes), f"{PREFIX}_sized", low_light_spec=None, num_images=1, imgsz=IMGSZ)


def _register(name, records, classes, **metadata):
    records = copy.deepcopy(list(records))
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=list(classes), **metadata)


def test_nfe_is_zero_when_the_dark_image_is_the_clean_one(demo, wnlb_weights):
    _, classes = demo
    # An "offline copy" whose images are the clean ones themselves.
    _register(f"{PREFIX}_same", DatasetCatalog.get(f"{PREFIX}_val"), classes, clean_counterpart=f"{PREFIX}_val")
    out = yolo_feature_errors(wnlb_weights, f"{PREFIX}_same", low_light_spec=None, num_images=2, imgsz=IMGSZ)
    assert out["nfe"] and all(v == [0.0, 0.0] for v in out["nfe"].values())
    # ... while the real offline low-light copy is not at zero.
    dark = yolo_feature_errors(wnlb_weights, f"{PREFIX}_val_lowlight", low_light_spec=None, num_images=2, imgsz=IMGSZ)
    assert all(x > 0 for v in dark["nfe"].values() for x in v)


def test_the_images_are_those_ultralytics_validation_scores(demo, tmp_path):
    """Dark: the evaluation's degraded bytes; clean: the image as read; both preprocessed as the validator's dataset."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.utils import check_det_dataset

    from wnlb_d2.yolo.api import export_splits
    from wnlb_d2.yolo.data import build_lowlight_dataset

    _, classes = demo
    dataset = f"{PREFIX}_val"
    index = export_splits([dataset], str(tmp_path / "yolo_data"))[dataset]
    records = {os.path.splitext(os.path.basename(r["yolo_file"]))[0]: r for r in index["images"]}
    mapper = LowLightYOLODataset._build_mapper(DARK, training=False)
    by_id = {r["image_id"]: r for r in DatasetCatalog.get(dataset)}
    for spec in (DARK, LowLightSpec(None)):
        yaml_path = wy.write_data_yaml(str(tmp_path / "data.yaml"), str(tmp_path / "yolo_data"),
                                       dict(enumerate(classes)), train=dataset, val=dataset, low_light=spec)
        data = check_det_dataset(yaml_path)
        cfg = get_cfg(overrides={"task": "segment", "imgsz": IMGSZ, "data": yaml_path, "rect": True})
        val = build_lowlight_dataset(cfg, data["val"], 1, data, mode="val", stride=32)
        for i in range(len(val)):
            item = val[i]
            record = by_id[records[os.path.splitext(os.path.basename(item["im_file"]))[0]]["image_id"]]
            dark, clean = evaluation_images(record, record, mapper)
            expected = dark if spec.active(training=False) else clean
            assert item["img"].shape == (3, 96, 96)  # 64 px letterboxed to the validator's rectangle
            torch.testing.assert_close(validation_input(expected, IMGSZ), item["img"], rtol=0, atol=0)


@pytest.mark.parametrize("fusion", ["weighted", "residual"])
def test_a_learned_block_has_a_share_equal_to_its_parts(demo, fusion):
    _, classes = demo
    model = _model(classes, fusion, **({"weight_init": 0.3} if fusion == "weighted" else {}))
    stages, blocks = yolo_stage_layers(model)
    block = model.model[blocks["P4"]]
    with torch.no_grad():
        block.w_z.norm.weight.fill_(0.5)
    dataset = f"{PREFIX}_val"
    out = yolo_feature_errors(model, dataset, low_light_spec=DARK, num_images=2, imgsz=IMGSZ)
    assert all(s > 0 for s in out["nonlocal_share"]["P4"])
    assert out["nonlocal_share"]["P3"] == [0.0, 0.0] and out["nonlocal_share"]["P5"] == [0.0, 0.0]
    assert not model.training  # the mode it had is restored
    # Hand computation on the first image, from the block's parts and a layer-by-layer forward.
    record = DatasetCatalog.get(dataset)[0]
    dark, clean = evaluation_images(record, record, LowLightYOLODataset._build_mapper(DARK, training=False))

    def stage_output(image, layer):
        x = validation_input(image, IMGSZ)[None].float() / 255
        with torch.no_grad():
            for m in model.model[:layer + 1]:  # the backbone is a chain
                x = m(x)
        return x

    x = stage_output(dark, stages["P4"])
    with torch.no_grad():
        z = block(x)
    if fusion == "weighted":
        w = float(block.fusion_weight.detach())
        wz_y = (z - (1 - w) * x) / w
        expected = float(w * wz_y.norm() / ((1 - w) * x.norm()))
    else:
        expected = float((z - x).norm() / x.norm())
    assert out["nonlocal_share"]["P4"][0] == pytest.approx(expected, rel=1e-4)
    # The NFE at P4 and after its block, from the same layer-by-layer forward of both images.
    x_clean = stage_output(clean, stages["P4"])
    assert out["nfe"]["P4"][0] == pytest.approx(normalised_feature_error(x[0], x_clean[0]), rel=1e-5)
    with torch.no_grad():
        after = normalised_feature_error(z[0], block(x_clean)[0])
    assert out["nfe"]["P4.after"][0] == pytest.approx(after, rel=1e-5)
    assert not math.isclose(out["nfe"]["P4.after"][0], out["nfe"]["P4"][0], rel_tol=1e-6)
