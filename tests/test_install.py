"""The install's compatibility guards: checkpoints read without detectron2's private API, the
setuptools<81 message, tools/install_detectron2.py's checks, and make test-d2main's guard."""

import errno
import importlib.util
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

import wnlb_d2
from wnlb_d2.config import resolve_config_path
from wnlb_d2.checkpoint import wnlb_layout_of_checkpoint
from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL = os.path.join(ROOT, "tools", "install_detectron2.py")

WNLB_KEYS = {
    "backbone.bottom_up.res3.0.conv1.weight": (8, 4, 1, 1),
    "backbone.bottom_up.wnlb.res3.theta.weight": (2, 4, 1, 1),
    "backbone.bottom_up.wnlb.res3.fusion_weight": (1,),
    "backbone.bottom_up.wnlb.res5.theta.weight": (2, 4, 1, 1),
    "backbone.bottom_up.wnlb.res5.concat_project.weight": (1, 4, 1, 1),
}


@pytest.fixture
def no_private_load_file(monkeypatch):
    """detectron2 main asserts that _load_file is called from load() only: make any use fail here
    too, so these tests catch a private call on v0.6 as well."""
    def refuse(self, f):
        raise AssertionError("DetectionCheckpointer._load_file called outside load()")

    monkeypatch.setattr(DetectionCheckpointer, "_load_file", refuse)


def test_layout_from_pth_without_private_api(tmp_path, no_private_load_file):
    state = {k: torch.zeros(s) for k, s in WNLB_KEYS.items()}
    path = tmp_path / "model.pth"
    torch.save({"model": state, "iteration": 7}, path)  # what DetectionCheckpointer.save writes
    assert wnlb_layout_of_checkpoint(str(path)) == {"stages": ["res3", "res5"], "mode": "concatenate"}
    bare = tmp_path / "bare.pth"
    torch.save({k: v for k, v in state.items() if "concat" not in k}, bare)  # a plain state dict
    assert wnlb_layout_of_checkpoint(str(bare)) == {"stages": ["res3", "res5"], "mode": None}


@pytest.mark.parametrize("wrapper", ["model", "blobs"])
def test_layout_from_pkl_without_private_api(tmp_path, no_private_load_file, wrapper):
    # Model-zoo .pkl files hold numpy arrays under "model" (Detectron1 ones under "blobs").
    state = {k: np.zeros(s, np.float32) for k, s in WNLB_KEYS.items() if "res5" not in k}
    path = tmp_path / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump({wrapper: state, "__author__": "test"}, f)
    assert wnlb_layout_of_checkpoint(str(path)) == {"stages": ["res3"], "mode": None}


def test_layout_of_unreadable_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="Cannot read checkpoint .*broken.pth"):
        wnlb_layout_of_checkpoint(str(path))
    listed = tmp_path / "list.pkl"
    with open(listed, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        wnlb_layout_of_checkpoint(str(listed))


def test_missing_pkg_resources_says_to_pin_setuptools(monkeypatch):
    import detectron2

    # setuptools >= 81 has no pkg_resources: None in sys.modules makes its import fail the same way.
    monkeypatch.setitem(sys.modules, "pkg_resources", None)
    for name in ("detectron2.model_zoo", "detectron2.model_zoo.model_zoo"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delattr(detectron2, "model_zoo", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'setuptools<81'"):
        resolve_config_path(wnlb_d2.MODEL_ZOO_PREFIX + "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")


def test_model_zoo_resolves_with_the_installed_setuptools():
    # The pin the install declares is in effect: the stock config file is found.
    path = resolve_config_path(wnlb_d2.MODEL_ZOO_PREFIX + "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert os.path.isfile(path) and path.endswith("mask_rcnn_R_50_FPN_3x.yaml")


def _install(*args):
    return subprocess.run([sys.executable, INSTALL, *args], capture_output=True, text=True, timeout=120)


def test_install_status_matches_the_installed_detectron2():
    spec = importlib.util.find_spec("detectron2")
    d2_dir = os.path.dirname(spec.origin)
    compiled = any(f.startswith("_C.") and f.endswith((".so", ".pyd")) for f in os.listdir(d2_dir))
    result = _install("--status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("compiled" if compiled else "pure-python")


def test_install_source_errors_are_one_line(tmp_path):
    missing = tmp_path / "nope.tar.gz"
    not_d2 = tmp_path / "empty"
    not_d2.mkdir()
    for source, message in [(missing, "detectron2 source not found"),
                            (not_d2, "is not a detectron2 source tree")]:
        # --force: even beside a compiled detectron2 the bad source is reported, nothing built.
        result = _install("--source", str(source), "--force")
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert message in result.stderr and str(source) in result.stderr
    result = _install("--source", str(not_d2), "--sdist", str(missing))
    assert result.returncode != 0 and "exclude each other" in result.stderr


def _plain_make_env():
    """The environment without what an enclosing make passes down: under ``make test-d2main
    D2MAIN_SRC=...`` (CI), MAKEFLAGS carries that variable into every make these tests start."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "D2MAIN_SRC", "D2MAIN_GIT", "D2MAIN_VENV",
            "D2_SOURCE", "VENV"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _make(*args, timeout=60):
    """``make -s ARGS`` in the repository; on a timeout the whole process group is killed, so a
    regression that starts building a venv leaves no make, pip or compiler running."""
    proc = subprocess.Popen(["make", "-s", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=_plain_make_env())
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_make_test_d2main_without_source_fails_clearly(tmp_path):
    make = subprocess.run(["make", "--version"], capture_output=True)
    if make.returncode != 0:
        pytest.skip("make is not installed")
    missing = tmp_path / "detectron2-main.tar.gz"
    result = _make("test-d2main", f"D2MAIN_SRC={missing}", f"D2MAIN_VENV={tmp_path / 'venv'}")
    assert result.returncode != 0
    assert f"detectron2 source not found: {missing}" in result.stderr
    assert not (tmp_path / "venv").exists()  # nothing was created before the check


def _install_module():
    return load_script("tools/install_detectron2.py")


def _make_available():
    return subprocess.run(["make", "--version"], capture_output=True).returncode == 0


def test_make_test_d2main_defaults_to_detectron2s_git_repository():
    # No path of the development environment is a default: without D2MAIN_SRC the source is
    # detectron2's own repository.
    if not _make_available():
        pytest.skip("make is not installed")

    def value(name):
        return subprocess.run(["make", "-s", "--no-print-directory", f"print-{name}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30, env=_plain_make_env()).stdout.strip()

    assert value("D2MAIN_SRC") == ""
    assert value("D2MAIN_SOURCE") == "git+https://github.com/facebookresearch/detectron2.git"
    with open(os.path.join(ROOT, "Makefile")) as f:
        assert "shared/vendor" not in f.read()


def test_make_test_d2main_with_an_unreachable_repository_says_how_to_point_at_a_source(tmp_path):
    if not _make_available():
        pytest.skip("make is not installed")
    # ".invalid" never resolves (RFC 2606): the same path as a machine without GitHub.
    result = _make("test-d2main", "D2MAIN_GIT=git+https://invalid.invalid/detectron2.git",
                   f"D2MAIN_VENV={tmp_path / 'venv'}")
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("make test-d2main:")]
    assert len(ours) == 1, result.stderr
    assert "error: cannot reach https://invalid.invalid/detectron2.git" in ours[0]
    assert "set D2MAIN_SRC=" in ours[0]
    assert not (tmp_path / "venv").exists()  # nothing was created before the check


def test_source_problem_of_each_kind_of_source(tmp_path, monkeypatch):
    install = _install_module()
    folder = tmp_path / "detectron2"
    folder.mkdir()
    assert install.source_problem(str(folder)) is None
    assert "detectron2 source not found" in install.source_problem(str(tmp_path / "nope.tar.gz"))
    assert "no detectron2 source given" in install.source_problem("")
    assert install.is_git_source(install.GIT_SOURCE) and not install.is_git_source(str(folder))
    # A git that fails as it does without network: its last line is the reason given.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "git").write_text("#!/bin/sh\necho 'fatal: unable to access: Could not resolve host' >&2\nexit 128\n")
    (fake_bin / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    problem = install.source_problem(install.GIT_SOURCE + "@main")
    assert problem.startswith("cannot reach https://github.com/facebookresearch/detectron2.git (fatal: unable")
    assert "D2MAIN_SRC=" in problem
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "git is not installed" in install.source_problem(install.GIT_SOURCE)


def test_check_source_command_is_one_line(tmp_path):
    result = _install("--check-source", str(tmp_path / "nope.tar.gz"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"install_detectron2.py: error: detectron2 source not found: {tmp_path / 'nope.tar.gz'} "
        "(a source folder or .tar.gz archive)"]
    assert _install("--check-source", str(tmp_path)).returncode == 0


def test_standin_is_written_atomically(tmp_path, monkeypatch):
    install = _install_module()
    d2_dir = tmp_path / "detectron2"
    d2_dir.mkdir()

    def full_disk(source, target):
        with open(target, "w") as f:
            f.write("# half a mod")
        raise OSError(errno.ENOSPC, "No space left on device", target)

    monkeypatch.setattr(install.shutil, "copyfile", full_disk)
    with pytest.raises(OSError, match="No space left"):
        install._add_standin(str(d2_dir))
    assert os.listdir(d2_dir) == []  # neither a half-written _C.py nor a temporary
    monkeypatch.undo()
    install._add_standin(str(d2_dir))
    assert os.listdir(d2_dir) == ["_C.py"]
    with open(d2_dir / "_C.py") as f, open(install.STANDIN) as g:
        assert f.read() == g.read()
