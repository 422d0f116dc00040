"""tools/gpu_check.py on a machine without CUDA: help, the clear error, and its autocast check on CPU."""

import os
import subprocess
import sys

import pytest
import torch
from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "gpu_check.py")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpu_check():
    return load_script("tools/gpu_check.py")


def test_help_lists_every_check():
    run = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for words in ("benchmark_nonlocal.py", "benchmark_model.py", "autocast", "NCCL", "--num-gpus 2", "SyncBN"):
        assert words in run.stdout, words


def test_fails_clearly_without_cuda(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, SCRIPT, "--output", str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=120, env=env)
    assert run.returncode == 2
    assert "gpu_check.py: error: CUDA is not available" in run.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


@pytest.mark.parametrize("mode", ["embedded", "gaussian"])
def test_autocast_error_measures_bfloat16_against_float32(gpu_check, mode):
    r = gpu_check.autocast_error(mode, torch.bfloat16, "cpu", shape=(2, 64, 12, 13))
    assert r["dtype"] == "bfloat16" and r["mode"] == mode
    # bfloat16 ran (a non-zero difference) and stayed within its precision, output and gradient.
    assert 0 < r["out_rel_err"] < 5e-2, r
    assert 0 < r["grad_rel_err"] < 5e-2, r


def test_autocast_error_is_zero_when_nothing_is_cast(gpu_check, monkeypatch):
    # With autocast disabled the two runs are the same computation: the check itself adds no error.
    real = torch.autocast

    def no_cast(device_type, dtype=None, enabled=True):
        return real(device_type, dtype=dtype, enabled=False)

    monkeypatch.setattr(torch, "autocast", no_cast)
    r = gpu_check.autocast_error("embedded", torch.bfloat16, "cpu", shape=(1, 32, 6, 7))
    assert r["out_rel_err"] == 0 and r["grad_rel_err"] == 0
