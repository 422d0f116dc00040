"""``wnlb-yolo`` (wnlb_d2.yolo.cli): Ultralytics' ``yolo`` command with the non-local blocks known.

Bug: ``yolo train model=configs/yolo/yolov8n-seg-wnlb.yaml`` failed with
``KeyError: 'YOLONonLocalBlock2d'`` (the ``yolo`` command never imports wnlb_d2). The command
runs in fresh interpreters here, offline, on a tiny dataset in Ultralytics' own layout.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

# find_spec, not importorskip: importing ultralytics before wnlb_d2.yolo would skip the
# package's environment defaults (offline, config folder outside the home folder).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WNLB_YAML = os.path.join(REPO, "configs", "yolo", "yolov8n-seg-wnlb.yaml")


def _env():
    env = dict(os.environ, YOLO_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # The repository last: an installed (or explicitly put first) wnlb_d2 wins, as for a user.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), REPO) if p)
    return env


def _run(args, cwd, check=True):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _tiny_dataset(root, n=4, size=64):
    """Ultralytics' segmentation layout: a filled rectangle per image, its polygon as the label."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        os.makedirs(os.path.join(root, "images", split))
        os.makedirs(os.path.join(root, "labels", split))
        for i in range(n):
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            x0, y0 = (int(v) for v in rng.integers(4, size // 2, 2))
            x1, y1 = x0 + size // 3, y0 + size // 3
            image[y0:y1, x0:x1] = (40, 200, 220)
            cv2.imwrite(os.path.join(root, "images", split, f"{i}.png"), image)
            polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
            with open(os.path.join(root, "labels", split, f"{i}.txt"), "w") as f:
                f.write("0 " + " ".join(f"{v / size:.4f}" for v in polygon) + "\n")
    data = os.path.join(root, "data.yaml")
    with open(data, "w") as f:
        f.write(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: box\n")
    return data


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of the wNLB YAML on the tiny dataset through ``python -m wnlb_d2.yolo.cli train``."""
    root = tmp_path_factory.mktemp("wnlb_yolo_cli")
    data = _tiny_dataset(str(root / "data"))
    _run(["-m", "wnlb_d2.yolo.cli", "train", f"model={WNLB_YAML}", f"data={data}", "epochs=1", "imgsz=64",
          "batch=2", "workers=0", "device=cpu", "plots=False", "amp=False", f"project={root}", "name=run",
          "exist_ok=True"], cwd=str(root))
    return root, root / "run" / "weights" / "best.pt", str(root / "data" / "images" / "val" / "0.png")


def test_train_through_wnlb_yolo_and_load_the_weights_in_a_fresh_process(trained):
    root, best, image = trained
    assert best.is_file()
    # The checkpoint pickles the blocks as wnlb_d2.yolo.modules.YOLONonLocalBlock2d: a fresh
    # process that never imports wnlb_d2 itself loads and runs it (unpickling imports the module).
    check = ("import sys\n"
             "from ultralytics import YOLO\n"
             "m = YOLO(sys.argv[1])\n"
             "r = m.predict(sys.argv[2], imgsz=64, verbose=False)\n"
             "print('blocks', sum(type(x).__name__ == 'YOLONonLocalBlock2d' for x in m.model.modules()), len(r))\n")
    assert "blocks 3 1" in _run(["-c", check, str(best), image], cwd=str(root)).stdout
    # Every `yolo` argument passes through: val on the dataset the run recorded.
    out = _run(["-m", "wnlb_d2.yolo.cli", "val", f"model={best}", "imgsz=64", "batch=2", "workers=0", "plots=False",
                f"project={root}", "name=val", "exist_ok=True"], cwd=str(root))
    assert "all" in out.stdout + out.stderr  # Ultralytics' per-class table: the 'all' row


def test_export_and_predict_through_wnlb_yolo(trained):
    root, best, image = trained
    _run(["-m", "wnlb_d2.yolo.cli", "export", f"model={best}", "format=torchscript", "imgsz=64"], cwd=str(root))
    exported = best.with_suffix(".torchscript")
    assert exported.is_file() and exported.stat().st_size > 0
    _run(["-m", "wnlb_d2.yolo.cli", "predict", f"model={exported}", f"source={image}", "imgsz=64", "save=True",
          f"project={root}", "name=pred", "exist_ok=True"], cwd=str(root))
    assert (root / "pred" / "0.jpg").is_file()


def test_ultralytics_own_command_does_not_know_the_block(tmp_path):
    # Why the command exists: `yolo` itself (no wnlb_d2 import) cannot parse the YAML.
    proc = _run(["-c", "from ultralytics.cfg import entrypoint; import sys; sys.argv[1:] = []; "
                       f"entrypoint('yolo predict model={WNLB_YAML} source=x.jpg')"], cwd=str(tmp_path), check=False)
    assert proc.returncode != 0 and "YOLONonLocalBlock2d" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "model=missing-weights.pt"], r"model: weights file 'missing-weights.pt' does not exist"),
    (["train", "model=missing.yaml"], r"model YAML 'missing.yaml' does not exist"),
    (["train", f"model={WNLB_YAML}", "epohcs=3"], r"'epohcs' is not a valid YOLO argument"),
    (["fly", f"model={WNLB_YAML}"], r"'fly' is not a valid YOLO argument"),
])
def test_bad_arguments_end_in_one_line(tmp_path, monkeypatch, capsys, args, message):
    from wnlb_d2.yolo.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    text = str(exit_info.value.code)
    assert text.startswith("wnlb-yolo: error: ") and "\n" not in text, text
    assert re.search(message, text), text
    assert os.listdir(tmp_path) == []  # nothing written, nothing downloaded


def test_model_argument_is_found_as_ultralytics_splits_it():
    from wnlb_d2.yolo.cli import model_argument

    assert model_argument(["train", "model=a b.yaml", "epochs=1"]) == "a b.yaml"
    assert model_argument(["train", "model", "=", "x.pt"]) == "x.pt"
    assert model_argument(["train", "--model=x.pt"]) == "x.pt"
    assert model_argument(["train", "data=coco8.yaml"]) is None


def test_setup_declares_the_console_script():
    from wnlb_d2.yolo import cli

    text = open(os.path.join(REPO, "setup.py")).read()
    target = re.search(r'"wnlb-yolo\s*=\s*([\w.]+):(\w+)"', text)
    assert target and target.groups() == ("wnlb_d2.yolo.cli", "main")
    assert callable(getattr(cli, target.group(2)))


def test_the_documented_python_snippet_runs_as_written():
    # The README's YOLO snippet is the package docstring's example (it raised NameError:
    # ultralytics when it used `ultralytics.YOLO` without the import). Only the image path is
    # replaced, by Ultralytics' bundled bus.jpg.
    import wnlb_d2.yolo
    from ultralytics.utils import ASSETS

    doc = wnlb_d2.yolo.__doc__
    block = doc.split("Example (from the repository's root", 1)[1].split("::\n\n", 1)[1]
    lines = [line[4:] for line in block.splitlines() if line.startswith("    ")]
    assert lines == ['import wnlb_d2.yolo', 'from ultralytics import YOLO',
                     'model = YOLO("configs/yolo/yolov8n-seg-wnlb.yaml")', 'results = model("path/to/image.jpg")']
    bus = str(ASSETS / "bus.jpg")
    code = "\n".join(lines).replace("path/to/image.jpg", bus)
    code += "\nassert len(results) == 1 and results[0].orig_shape == (1080, 810), results[0].orig_shape\nprint('ok')\n"
    proc = _run(["-c", code], cwd=REPO)
    assert proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


def test_export_is_checked_against_eager_and_a_differing_file_is_removed(trained, monkeypatch):
    root, best, image = trained
    out = _run(["-m", "wnlb_d2.yolo.cli", "export", f"model={best}", "format=onnx", "imgsz=64", "dynamic=True"],
               cwd=str(root))
    line = [x for x in out.stdout.splitlines() if x.startswith("wnlb-yolo: ")][-1]
    # The export size and two others (dynamic), each within the tolerance.
    match = re.fullmatch(r"wnlb-yolo: (.+\.onnx) equals the eager model within (\S+) at 64x64, 128x32, 32x160", line)
    assert match and float(match.group(2)) <= 1e-4 and os.path.isfile(match.group(1)), line

    # A file that gives other outputs (here: an exporter fault simulated by shifting what the file
    # returns by 1e-3) is refused in one line and removed.
    from wnlb_d2.yolo import cli, export as yolo_export

    exported = str(best.with_suffix(".onnx"))
    real = yolo_export.exported_outputs
    monkeypatch.setattr(yolo_export, "exported_outputs", lambda path, images: tuple(o + 1e-3 for o in real(path, images)))
    export = cli.export_to_check(["export", f"model={best}", "format=onnx", "imgsz=64"])
    assert export == {"weights": str(best), "path": exported, "imgsz": 64, "dynamic": False, "batch": 1}
    with pytest.raises(ValueError, match=r"best\.onnx gives other outputs than the eager model at 64x64 .*removed"):
        cli.check_export(export)
    assert not os.path.exists(exported)


@pytest.mark.parametrize("args", [
    ["train", "model=x.pt", "format=onnx"], ["export", "model=x.yaml", "format=onnx"],
    ["export", "model=x.pt", "format=engine"], ["export", "model=x.pt", "format=onnx", "half=True"],
    ["export", "model=x.pt", "format=onnx", "nms=True"],
])
def test_exports_that_are_not_compared(args):
    from wnlb_d2.yolo.cli import export_to_check

    assert export_to_check(args) is None
