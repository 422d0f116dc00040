"""Bad inputs on the YOLO path: refused in one line naming the bad thing, as on the detectron2 path.

* an image that cannot be read stops training and evaluation (Ultralytics would drop it with a
  warning and the evaluation would score its objects as misses);
* weights whose class names are not the dataset's are not scored, drawn or fine-tuned;
* ground truth that lists fewer categories than the metadata is scored (no IndexError);
* a weights path that names no local file is refused before Ultralytics could look it up online;
* a malformed model YAML is one line naming the file, the layer and the problem.
"""

import copy
import importlib.util
import json
import os
import shutil

import pytest

# find_spec, not importorskip: importing ultralytics before wnlb_d2.yolo would skip the
# package's environment defaults (offline, config folder outside the home folder).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

import torch  # noqa: E402
import yaml  # noqa: E402

import wnlb_d2  # noqa: E402,F401
import wnlb_d2.yolo as wy  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.data.utils import check_det_dataset  # noqa: E402
from ultralytics.nn.tasks import SegmentationModel, yaml_model_load  # noqa: E402
from wnlb_d2.data.datasets import register_demo  # noqa: E402
from wnlb_d2.data.demo_dataset import DemoSpec  # noqa: E402
from wnlb_d2.data.image_io import ImageReadError  # noqa: E402
from wnlb_d2.yolo.data import build_lowlight_dataset  # noqa: E402
from wnlb_d2.yolo.evaluate import coco_ground_truth, score_coco  # noqa: E402
from wnlb_d2.yolo.model_yaml import check_model_yaml, insert_nonlocal_blocks, read_model_yaml  # noqa: E402
from wnlb_d2.yolo.pictures import save_yolo_side_by_side  # noqa: E402
from wnlb_d2.yolo.weights import check_class_names, read_yolo_state_dict  # noqa: E402
from helpers import load_script  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "yoloinputs_demo"
SPEC = DemoSpec(image_size=64, num_train=4, num_val=4, seed=6)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A tiny registered demo dataset, and its classes."""
    root = tmp_path_factory.mktemp("yolo_inputs")
    register_demo(prefix=PREFIX, root=str(root / "demo"), spec=SPEC)
    return root, list(MetadataCatalog.get(f"{PREFIX}_val").thing_classes)


def _register_copy(name, root, classes, edit=None, **metadata):
    """Register a copy of the demo val set (its images copied into ``root``), ``edit(dicts)`` applied."""
    dicts = copy.deepcopy(DatasetCatalog.get(f"{PREFIX}_val"))
    os.makedirs(root, exist_ok=True)
    for d in dicts:
        d["file_name"] = shutil.copy(d["file_name"], os.path.join(root, os.path.basename(d["file_name"])))
    if edit:
        edit(dicts)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=list(classes), evaluator_type="coco",
                                  thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(classes))},
                                  **metadata)
    return dicts


def _model(classes):
    torch.manual_seed(0)
    model = SegmentationModel("yolov8n-seg.yaml", nc=len(classes), verbose=False)
    model.names = dict(enumerate(classes))
    return model


def _checkpoint(path, classes):
    """An Ultralytics-style .pt checkpoint (a pickled model with its class names, the task in its args)."""
    torch.save({"model": _model(classes), "train_args": {"task": "segment"}}, path)
    return str(path)


@pytest.fixture
def no_downloads(monkeypatch):
    """Ultralytics' download functions fail the test if anything calls them for a file that is not here.

    ``attempt_download_asset`` is Ultralytics' loader's first step for every path; it returns an
    existing local file as it is, and looks anything else up online.
    """
    from ultralytics.utils import downloads

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"Ultralytics tried to download {args}")

    def local_only(file, *args, **kwargs):
        if os.path.isfile(str(file)):
            return str(file)
        return refuse(file, *args, **kwargs)

    for name in ("safe_download", "get_github_assets", "download"):
        monkeypatch.setattr(downloads, name, refuse)
    monkeypatch.setattr(downloads, "attempt_download_asset", local_only)
    return calls


def _one_line(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


# --- 1a: corrupt images -------------------------------------------------------------------------


def _dataset(data_root, split, names, low_light, tmp_path, mode="val"):
    yaml_path = wy.write_data_yaml(str(tmp_path / f"data_{split}.yaml"), str(data_root), dict(enumerate(names)),
                                   train=split, val=split, low_light=low_light)
    data = check_det_dataset(yaml_path)
    cfg = get_cfg(overrides={"task": "segment", "imgsz": SPEC.image_size, "data": yaml_path})
    return build_lowlight_dataset(cfg, data["val"], 2, data, mode=mode, stride=32)


@pytest.mark.parametrize("damage, reason", [
    (lambda p: open(p, "wb").write(b"not an image"), "cannot identify image file"),
    (lambda p: open(p, "r+b").truncate(os.path.getsize(p) // 2), "Cannot read image"),
    (lambda p: __import__("cv2").imwrite(p, __import__("numpy").zeros((5, 5, 3), "uint8")), "<10 pixels"),
])
@pytest.mark.parametrize("low_light", [None, "lv2021"])
@pytest.mark.parametrize("mode", ["val", "train"])
def test_an_unusable_image_stops_the_dataset_naming_the_file(demo, tmp_path, damage, reason, low_light, mode):
    # Bug: Ultralytics' scan dropped the image with a warning ("ignoring corrupt image/label") and
    # evaluate_yolo scored its objects as misses; detectron2 stops with the file's name.
    _, classes = demo
    name = f"{PREFIX}_damaged"
    dicts = _register_copy(name, str(tmp_path / "images"), classes, edit=lambda ds: damage(ds[1]["file_name"]))
    data_root = tmp_path / "export"
    wy.export_yolo_dataset(name, str(data_root), "val")
    spec = wy.LowLightSpec(low_light) if low_light else None
    with pytest.raises(ImageReadError) as e:
        _dataset(data_root, "val", classes, spec, tmp_path, mode=mode)
    text = _one_line(e)
    assert repr(dicts[1]["file_name"]) in text and reason in text  # the dataset's file, not the export's link


def test_an_image_that_breaks_after_the_scan_stops_loading(demo, tmp_path):
    # The scan passed, then OpenCV could not decode the file (changed on disk): Ultralytics raised
    # "Image Not Found"; now the error says what detectron2's reader says about the file.
    _, classes = demo
    name = f"{PREFIX}_later"
    dicts = _register_copy(name, str(tmp_path / "images"), classes)
    wy.export_yolo_dataset(name, str(tmp_path / "export"), "val")
    ds = _dataset(tmp_path / "export", "val", classes, None, tmp_path)
    broken = [i for i, f in enumerate(ds.im_files) if os.path.realpath(f) == dicts[2]["file_name"]][0]
    with open(dicts[2]["file_name"], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match="Cannot read image") as e:
        ds.load_image(broken)
    assert repr(dicts[2]["file_name"]) in _one_line(e)


def test_evaluation_stops_at_a_corrupt_image(demo, tmp_path):
    _, classes = demo
    name = f"{PREFIX}_corrupt_eval"
    dicts = _register_copy(name, str(tmp_path / "images"), classes,
                           edit=lambda ds: open(ds[3]["file_name"], "wb").write(b"GIF89a broken"))
    for link in ("symlink", "copy"):  # a copied export still names the dataset's own file
        with pytest.raises(ImageReadError) as e:
            wy.evaluate_yolo(_model(classes), name, str(tmp_path / link), imgsz=64, batch=4, link=link)
        assert repr(dicts[3]["file_name"]) in _one_line(e)
        assert not (tmp_path / link / "coco_metrics.json").exists()


# --- 1b: class names ----------------------------------------------------------------------------


def test_weights_of_other_classes_are_not_scored(demo, tmp_path, no_downloads):
    # Bug: a checkpoint's class names were never compared with the dataset's: its class indices
    # were scored as the dataset's classes.
    _, classes = demo
    other = ["person", "bicycle", "car", "motorcycle", "airplane", "bus"]
    weights = _checkpoint(tmp_path / "coco6.pt", other)
    with pytest.raises(ValueError) as e:
        wy.evaluate_yolo(weights, f"{PREFIX}_val", str(tmp_path / "eval"), imgsz=64, batch=4)
    text = _one_line(e)
    assert str(other) in text and str(classes) in text and weights in text and f"{PREFIX}_val" in text
    assert not (tmp_path / "eval").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="has classes"):
        wy.evaluate_yolo(_model(other), f"{PREFIX}_val", str(tmp_path / "eval"), imgsz=64, batch=4)
    # Fine-tuning from such weights: refused before training.
    with pytest.raises(ValueError) as e:
        wy.train_yolo_row("yolov8n-seg.yaml", f"{PREFIX}_train", f"{PREFIX}_val", str(tmp_path / "row"),
                          plain_weights=weights, epochs=1, imgsz=64, batch=2)
    assert str(other) in _one_line(e) and weights in str(e.value)
    assert not (tmp_path / "row").exists()
    assert no_downloads == []


def test_pictures_refuse_weights_of_other_classes(demo, tmp_path):
    _, classes = demo
    good = _checkpoint(tmp_path / "good.pt", classes)
    bad = _checkpoint(tmp_path / "bad.pt", list(reversed(classes)))
    out = tmp_path / "pictures"
    with pytest.raises(ValueError) as e:
        save_yolo_side_by_side({"finetuned": good, "wnlb": bad}, f"{PREFIX}_val", str(out), num_images=1, imgsz=64)
    text = _one_line(e)
    assert "'wnlb'" in text and bad in text and str(list(reversed(classes))) in text and str(classes) in text
    assert not out.exists()
    paths = save_yolo_side_by_side({"finetuned": good}, f"{PREFIX}_val", str(out), num_images=1, imgsz=64)
    assert [os.path.basename(p) for p in paths] == ["sample_0.png"]


def test_check_class_names():
    check_class_names(["a", "b"], ("a", "b"), "m", "d")
    check_class_names(None, ["a"], "m", "d")  # a state dict: nothing to compare
    with pytest.raises(ValueError, match=r"m has classes \['b', 'a'\], but the dataset 'd' has \['a', 'b'\]"):
        check_class_names(["b", "a"], ["a", "b"], "m", "d")


# --- 1c: ground truth with fewer categories than the metadata ------------------------------------


def test_ground_truth_with_fewer_categories_is_scored(demo, tmp_path):
    # Bug: IndexError in _class_aps when the ground truth lists fewer categories than the metadata.
    _, classes = demo
    gt = coco_ground_truth(f"{PREFIX}_val")
    present = sorted({a["category_id"] for a in gt["annotations"]})
    dropped = present[-1]
    fewer = {**gt, "categories": [c for c in gt["categories"] if c["id"] != dropped],
             "annotations": [a for a in gt["annotations"] if a["category_id"] != dropped]}
    path = tmp_path / "fewer.json"
    path.write_text(json.dumps(fewer))
    name = f"{PREFIX}_fewer"
    _register_copy(name, str(tmp_path / "images"), classes, json_file=str(path),
                   edit=lambda ds: [d.__setitem__("annotations", [a for a in d["annotations"]
                                                                  if a["category_id"] != dropped - 1]) for d in ds])
    res = wy.evaluate_yolo(_model(classes), name, str(tmp_path / "eval"), imgsz=64, batch=4)
    dropped_name = classes[dropped - 1]
    for task in ("segm", "bbox"):
        assert set(res[task]) >= {f"AP-{c}" for c in classes}
        assert res[task][f"AP-{dropped_name}"] != res[task][f"AP-{dropped_name}"]  # NaN: nothing to score

    # The per-class APs are those of the categories with the same ids, not shifted by position.
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
             "segmentation": a["segmentation"]} for a in fewer["annotations"] if not a.get("iscrowd")]
    ids = [i + 1 for i in range(len(classes))]
    out = score_coco(fewer, dets, iou_types=("bbox",), class_names=classes, class_ids=ids)["bbox"]
    for cat in present[:-1]:
        assert out[f"AP-{classes[cat - 1]}"] == pytest.approx(100.0)
    assert out["AP"] == pytest.approx(100.0) and out[f"AP-{dropped_name}"] != out[f"AP-{dropped_name}"]
    with pytest.raises(ValueError, match="class names .* for a ground truth of"):
        score_coco(fewer, dets, class_names=classes)  # names without ids cannot be placed


# --- 2: no network lookup for a missing weights file -------------------------------------------


def _yolo_demo_tool():
    return load_script("tools/yolo_demo.py")


def test_missing_weights_are_refused_without_a_download(demo, tmp_path, no_downloads):
    # Bug: `tools/yolo_demo.py --plain-weights yolov8n-seg.pt` passed the name to Ultralytics, which
    # looked it up on github.com although YOLO_OFFLINE=1.
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        _yolo_demo_tool().main(["--plain-weights", "yolov8n-seg.pt", "--output", str(out), "--train",
                                f"{PREFIX}_train", "--val", f"{PREFIX}_val", "--extra-val", "--epochs", "1",
                                "--imgsz", "64", "--batch", "2"])
    message = str(e.value.code)
    assert message.startswith("yolo_demo.py: error: FileNotFoundError: --plain-weights") and "\n" not in message
    assert "'yolov8n-seg.pt' does not exist" in message
    assert not out.exists()
    # The library entry points refuse it too (the runner calls them directly).
    with pytest.raises(FileNotFoundError, match="'yolov8n-seg.pt' does not exist"):
        wy.train_yolo_row("yolov8n-seg.yaml", f"{PREFIX}_train", f"{PREFIX}_val", str(out),
                          plain_weights="yolov8n-seg.pt", epochs=1, imgsz=64, batch=2)
    with pytest.raises(FileNotFoundError, match="'yolov8s-seg.pt' does not exist"):
        wy.evaluate_yolo("yolov8s-seg.pt", f"{PREFIX}_val", str(out), imgsz=64)
    with pytest.raises(FileNotFoundError, match="'yolov8m-seg.pt' does not exist"):
        save_yolo_side_by_side({"pretrained": "yolov8m-seg.pt"}, f"{PREFIX}_val", str(out))
    with pytest.raises(FileNotFoundError, match="'yolo11n-seg.pt' does not exist"):
        read_yolo_state_dict("yolo11n-seg.pt")
    with pytest.raises(ValueError, match="is a folder"):
        read_yolo_state_dict(str(tmp_path))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        wy.evaluate_yolo(str(empty), f"{PREFIX}_val", str(out), imgsz=64)
    assert not out.exists() and no_downloads == []


def test_an_unreadable_checkpoint_is_one_line(tmp_path, no_downloads):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not a zip archive at all")
    with pytest.raises(ValueError, match="is not a readable Ultralytics checkpoint") as e:
        read_yolo_state_dict(str(bad))
    assert str(bad) in _one_line(e) and no_downloads == []


# --- 3: model YAML errors ------------------------------------------------------------------------


def _stock(name="yolov8n-seg.yaml"):
    d = yaml_model_load(name)
    return {k: v for k, v in d.items() if k not in ("scale", "yaml_file")}


def _edit(fn):
    d = _stock()
    fn(d)
    return yaml.safe_dump(d, sort_keys=False)


BAD_YAMLS = [
    # (file name, text, what the message says)
    ("yolov8n-module.yaml", _edit(lambda d: d["backbone"][3].__setitem__(2, "Convv")),
     r"backbone row 3 \(layer 3\): unknown module 'Convv'"),
    ("yolov8n-args.yaml", _edit(lambda d: d["backbone"][3].__setitem__(3, [64, 3, 2, 1, 1, 1, 1, 1, 1, 1])),
     r"layer 3 \(Conv\) cannot be built: TypeError: .*positional arguments"),
    ("yolov8n-argtype.yaml", _edit(lambda d: d["backbone"][1].__setitem__(3, ["wide", 3, 2])),
     r"layer 1 \(Conv\) cannot be built: TypeError"),
    ("yolov8n-nohead.yaml", _edit(lambda d: d.pop("head")), r"has no 'head' list of layers"),
    ("yolov8n-emptyhead.yaml", _edit(lambda d: d.__setitem__("head", [])),
     r"'head' must be a non-empty list of layer rows, got \[\]"),
    ("yolov8n-row.yaml", _edit(lambda d: d["backbone"].__setitem__(2, [-1, 3])),
     r"backbone row 2 \(layer 2\) must be \[from, repeats, module, args\]"),
    ("yolov8n-from.yaml", _edit(lambda d: d["head"][0].__setitem__(0, 30)),
     r"head row 0 \(layer 10\): takes input from layer 30, which does not come before it"),
    ("yolov8n-repeats.yaml", _edit(lambda d: d["backbone"][2].__setitem__(1, 0)), r"repeats must be an integer"),
    ("yolov8n-nc.yaml", _edit(lambda d: d.__setitem__("nc", "six")), r"nc must be a positive integer"),
    ("yolov8x-scale.yaml", _edit(lambda d: d.__setitem__("scales", {"n": d["scales"]["n"]})),
     r"file name says scale 'x' .* defines only \['n'\]"),
    ("yolov8n-detect.yaml", yaml.safe_dump(_stock("yolov8n.yaml")),  # a detection model
     r"is not a segmentation model: its last layer is Detect"),
    ("yolov8n-syntax.yaml", "backbone: [[-1, 1, Conv\n  : : ]\n", r"is not valid YAML: .*\(line 2, column 3\)"),
    ("yolov8n-list.yaml", "- 1\n- 2\n", r"holds a list, not a mapping"),
    ("yolov8n-empty.yaml", "", r"has no 'backbone' list of layers"),
    ("yolov8n-binary.yaml", b"\xff\xfe\x00\x01\x80\x81", r"is not a text file"),
]


@pytest.mark.parametrize("file_name, text, match", BAD_YAMLS, ids=[c[0] for c in BAD_YAMLS])
def test_a_bad_model_yaml_is_one_line_naming_the_file(tmp_path, file_name, text, match):
    # Bug: Ultralytics' 50-line tracebacks (KeyError 'Convv', TypeError, ValueError: not enough
    # values to unpack ...) from inside the trainer.
    path = tmp_path / file_name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=match) as e:
        check_model_yaml(str(path))
    assert _one_line(e).startswith(f"model YAML {str(path)!r}")


def test_model_yaml_errors_reach_every_entry_point(demo, tmp_path, no_downloads):
    path = tmp_path / "yolov8n-module.yaml"
    path.write_text(BAD_YAMLS[0][1])
    # Structural errors already when read (insert_nonlocal_blocks, the runner's family check).
    with pytest.raises(ValueError, match="unknown module 'Convv'"):
        read_model_yaml(str(path))
    with pytest.raises(ValueError, match="unknown module 'Convv'") as e:
        insert_nonlocal_blocks(str(path))
    assert str(path) in _one_line(e)
    out = tmp_path / "row"
    with pytest.raises(ValueError, match="unknown module 'Convv'"):
        wy.train_yolo_row(str(path), f"{PREFIX}_train", f"{PREFIX}_val", str(out), epochs=1, imgsz=64, batch=2)
    assert not out.exists()  # refused before the export or the trainer wrote anything
    for model, match in ((str(path), "unknown module 'Convv'"), (str(tmp_path / "nope-n.yaml"), "does not exist"),
                         ("yolov8n-seg.pt", "expected a model YAML")):
        with pytest.raises(SystemExit) as e:
            _yolo_demo_tool().main(["--model", model, "--output", str(out)])
        message = str(e.value.code)
        assert message.startswith("yolo_demo.py: error: ValueError: ") and match in message and "\n" not in message
    assert not out.exists() and no_downloads == []
    for good in ("yolov8n-seg.yaml", os.path.join(ROOT, "configs", "yolo", "yolov8n-seg-wnlb.yaml")):
        assert check_model_yaml(good)["backbone"]
