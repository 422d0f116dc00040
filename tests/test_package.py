"""The installable package: the configs by name (wnlb_d2.model_zoo), configs/... paths that resolve
through the package outside the repository, the scripts that run the commands, and the wheel
(the configs inside, console commands that work from any folder)."""

import configparser
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from detectron2.config import CfgNode, get_cfg

from wnlb_d2.cli import COMMANDS
from wnlb_d2.config import add_lowlight_config, merge_from_file, resolve_config_path
from wnlb_d2.engine.setup import setup_cfg
from wnlb_d2.model_zoo import (configs_root, get_config, get_config_file, list_configs, resolve_config_file,
                               shipped_config)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
DEMO = "configs/demo/Base-Demo-R18-FPN.yaml"
# What setup.py needs to build the wheel.
SOURCES = ("setup.py", "setup.cfg", "LICENSE", "wnlb_d2", "configs")


def _repo_configs():
    names = []
    for folder, dirs, files in os.walk(CONFIGS):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        names += [os.path.relpath(os.path.join(folder, f), CONFIGS).replace(os.sep, "/")
                  for f in files if f.endswith((".yaml", ".py"))]
    return sorted(names)


def test_every_config_of_the_repository_has_a_name():
    # In a checkout (and an editable install) the configs are the repository's configs/ itself.
    assert configs_root() == CONFIGS
    names = list_configs()
    assert names == _repo_configs() and "demo/Base-Demo-R18-FPN.yaml" in names
    for name in names:
        assert get_config_file(name) == get_config_file("configs/" + name) == os.path.join(CONFIGS, *name.split("/"))


def test_an_unknown_name_says_where_it_looked_and_what_is_close():
    with pytest.raises(FileNotFoundError) as e:
        get_config_file("demo/Base-Demo-R18.yaml")
    msg = str(e.value)
    assert msg.startswith("'demo/Base-Demo-R18.yaml' is not a config shipped with wnlb_d2 (looked in " + CONFIGS)
    assert "did you mean demo/Base-Demo-R18-FPN.yaml" in msg and "\n" not in msg
    # Nothing outside the configs folder is a config, even when the file exists.
    for outside in ("../setup.py", "configs/../setup.py", os.path.join(REPO, "setup.py"), "", "demo"):
        assert shipped_config(outside) is None, outside
        with pytest.raises(FileNotFoundError, match="is not a config shipped with wnlb_d2"):
            get_config_file(outside)


def test_get_config_loads_yaml_with_the_project_keys_and_lazy_configs():
    cfg = get_config("demo/Base-Demo-R18-FPN.yaml")
    assert isinstance(cfg, CfgNode) and not cfg.is_frozen()
    assert cfg.MODEL.RESNETS.DEPTH == 18 and "WNLB" in cfg.MODEL and "LOW_LIGHT" in cfg.INPUT
    # A relative _BASE_, then a model_zoo:// one (detectron2's stock config) under it.
    nlb = get_config("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_nlb.yaml")
    assert nlb.MODEL.WNLB.FUSION == "residual" and nlb.MODEL.BACKBONE.NAME == "build_resnet_wnlb_fpn_backbone"
    assert nlb.SOLVER.MAX_ITER == 270000  # from the stock mask_rcnn_R_50_FPN_3x.yaml
    # A LazyConfig that imports its sibling relatively.
    lazy = get_config("lazy/solov2_R_50_FPN_3x_wnlb.py")
    blocks = lazy.model.backbone.bottom_up
    assert blocks._target_.__qualname__ == "WNLBResNet.wrap" and blocks.resnet.stages.depth == 50
    with pytest.raises(ValueError, match="is an Ultralytics model YAML, not a detectron2 config"):
        get_config("yolo/yolov8n-seg-wnlb.yaml")


def test_configs_paths_resolve_through_the_package_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    shipped = os.path.join(CONFIGS, "demo", "Base-Demo-R18-FPN.yaml")
    assert resolve_config_path(DEMO) == resolve_config_path("./" + DEMO) == resolve_config_file(DEMO) == shipped
    cfg = setup_cfg(DEMO, ["OUTPUT_DIR", str(tmp_path / "out")])
    assert cfg.MODEL.RESNETS.DEPTH == 18
    # Only configs/... is looked up in the package; another relative path is left as given.
    assert resolve_config_path("demo/Base-Demo-R18-FPN.yaml") == "demo/Base-Demo-R18-FPN.yaml"
    with pytest.raises(FileNotFoundError) as e:
        setup_cfg("configs/demo/nope.yaml")
    assert str(e.value) == ("Config file not found: configs/demo/nope.yaml "
                            f"(nor a config shipped with wnlb_d2, in {CONFIGS})")
    # A _BASE_ configs/... in a config elsewhere: the shipped one.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.yaml").write_text(
        '_BASE_: "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_nlb.yaml"\nSOLVER:\n  MAX_ITER: 7\n')
    mine = get_cfg()
    add_lowlight_config(mine)
    merge_from_file(mine, str(tmp_path / "sub" / "mine.yaml"))
    assert mine.MODEL.WNLB.FUSION == "residual" and mine.SOLVER.MAX_ITER == 7
    # A file of that name in the working folder is used as given.
    (tmp_path / "configs" / "demo").mkdir(parents=True)
    (tmp_path / DEMO).write_text('_BASE_: "model_zoo://Base-RCNN-FPN.yaml"\nMODEL:\n  RESNETS:\n    DEPTH: 101\n')
    assert resolve_config_path(DEMO) == resolve_config_file(DEMO) == DEMO
    assert setup_cfg(DEMO, ["OUTPUT_DIR", str(tmp_path / "out")]).MODEL.RESNETS.DEPTH == 101


def test_a_yolo_model_yaml_resolves_through_the_package_outside_the_repository(tmp_path, monkeypatch):
    pytest.importorskip("ultralytics")
    from wnlb_d2.yolo.model_yaml import read_model_yaml

    monkeypatch.chdir(tmp_path)
    d = read_model_yaml("configs/yolo/yolov8n-seg-wnlb.yaml")
    assert d["yaml_file"] == os.path.join(CONFIGS, "yolo", "yolov8n-seg-wnlb.yaml") and d["scale"] == "n"


def test_wnlb_yolo_takes_a_shipped_model_yaml_outside_the_repository(tmp_path, monkeypatch):
    pytest.importorskip("ultralytics")
    from wnlb_d2.yolo.cli import model_argument, with_shipped_model

    monkeypatch.chdir(tmp_path)
    name = "configs/yolo/yolov8n-seg-wnlb.yaml"
    # Ultralytics reads model= itself: the command hands it the shipped file.
    for args in (["train", f"model={name}", "epochs=1"], ["train", "model", "=", name], ["val", f"--model={name}"]):
        assert model_argument(with_shipped_model(args)) == os.path.join(CONFIGS, "yolo", "yolov8n-seg-wnlb.yaml")
    stock = ["train", "model=yolov8n-seg.yaml"]
    assert with_shipped_model(stock) is stock
    # A file of that name in the working folder is used as given.
    (tmp_path / "configs" / "yolo").mkdir(parents=True)
    shutil.copy(os.path.join(CONFIGS, "yolo", "yolov8n-seg-wnlb.yaml"), tmp_path / name)
    local = ["train", f"model={name}"]
    assert with_shipped_model(local) is local


def _run(argv, cwd, env=None, timeout=300):
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script, args, line", [
    ("train_net.py", [], "train_net.py: error: --config-file is required (a YAML file or model_zoo://NAME)"),
    ("tools/demo.py", ["--config-file", "configs/nope.yaml", "--input", "x.png"],
     "demo.py: error: FileNotFoundError: Config file not found: configs/nope.yaml (nor a config shipped with "
     f"wnlb_d2, in {CONFIGS})"),
    ("tools/run_experiment.py", ["--preset", "demo", "--detector", "nope"],
     "run_experiment.py: error: --preset needs a detector with a demo model (maskrcnn, solov2, yolov8), "
     "got --detector 'nope'"),
])
def test_the_scripts_run_the_package_commands_under_their_own_names(tmp_path, script, args, line):
    proc = _run([sys.executable, os.path.join(REPO, script), *args], cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == line, proc.stderr[-2000:]


def _copy_sources(dest):
    for name in SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(path, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, dest / name)


def test_the_wheel_ships_the_configs_and_commands_that_work_from_any_folder(tmp_path):
    # Built from a copy: no build/ or *.egg-info in the checkout; --no-index: nothing is downloaded.
    src, dist, target, work = (tmp_path / d for d in ("src", "dist", "target", "work"))
    for d in (src, work):
        d.mkdir()
    _copy_sources(src)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    built = _run([*pip[:3], "wheel", *pip[3:], "--no-index", "--no-deps", "--no-build-isolation", str(src), "-w",
                  str(dist)], cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("wnlb_d2-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = configparser.ConfigParser()
        entry_points.read_string(z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode())
    assert {f"wnlb_d2/model_zoo/configs/{n}" for n in _repo_configs()} <= names
    assert dict(entry_points["console_scripts"]) == {**{c: ep for c, (ep, _) in COMMANDS.items()},
                                                     "wnlb-yolo": "wnlb_d2.yolo.cli:main"}

    installed = _run([*pip[:3], "install", *pip[3:], "--no-index", "--no-deps", "--target", str(target), str(wheel)],
                     cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    # The installed copy, not the checkout's (the venv's editable install comes after PYTHONPATH);
    # torch and detectron2 come from the running environment.
    env = {**os.environ, "PYTHONPATH": str(target)}
    package_configs = os.path.join(str(target), "wnlb_d2", "model_zoo", "configs")
    check = (
        "import os, sys, wnlb_d2\n"
        "from wnlb_d2.model_zoo import get_config, get_config_file\n"
        "target = sys.argv[1]\n"
        "assert wnlb_d2.__file__ == os.path.join(target, 'wnlb_d2', '__init__.py'), wnlb_d2.__file__\n"
        "path = get_config_file('configs/demo/Base-Demo-R18-FPN.yaml')\n"
        "shipped = os.path.join(target, 'wnlb_d2', 'model_zoo', 'configs')\n"
        "assert path == os.path.join(shipped, 'demo', 'Base-Demo-R18-FPN.yaml'), path\n"
        "cfg = get_config('COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_nlb.yaml')\n"
        "assert cfg.MODEL.WNLB.FUSION == 'residual' and cfg.SOLVER.MAX_ITER == 270000\n"
        "lazy = get_config('lazy/solov2_R_50_FPN_3x_wnlb.py')\n"
        "assert lazy.model.backbone.bottom_up._target_.__qualname__ == 'WNLBResNet.wrap'\n"
        "print('loaded from', os.path.dirname(path))\n"
    )
    proc = _run([sys.executable, "-c", check, str(target)], cwd=work, env=env)
    assert proc.returncode == 0 and f"loaded from {package_configs}/demo" in proc.stdout, proc.stderr[-3000:]

    # A real command from the installed package, in a folder without configs/: the demo config is
    # the shipped one (random weights, one 64 px picture).
    import cv2
    import numpy as np

    cv2.imwrite(str(work / "img.png"), np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    proc = _run([str(target / "bin" / "wnlb-demo"), "--config-file", DEMO, "--input", "img.png", "--output", "out.png",
                 "--opts", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
                 "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"], cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Wrote 1 picture(s) to out.png" in proc.stdout and cv2.imread(str(work / "out.png")).shape == (48, 64, 3)
    # Messages name the console command; a config the package lacks names where it looked.
    proc = _run([str(target / "bin" / "wnlb-train"), "--config-file", "configs/nope.yaml"], cwd=work, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("wnlb-train: error: FileNotFoundError: Config file not found: "
                                                    f"configs/nope.yaml (nor a config shipped with wnlb_d2, in "
                                                    f"{package_configs})"), proc.stderr[-2000:]
