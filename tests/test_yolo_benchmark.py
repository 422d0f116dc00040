"""tools/benchmark_yolo.py: the plain YOLOv8-seg against the models with blocks, timed in one run."""

import importlib.util
import json
import os

import pytest
from helpers import load_script

if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


def _tool():
    return load_script("tools/benchmark_yolo.py")


def test_both_phases_with_ratios_to_the_plain_model(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = _tool().main(["--models", "yolov8n-seg", "--sizes", "64", "--repeats", "1", "--variants", "wnlb", "nlb",
                         "--threads", "1", "--json", str(out)])
    assert [(r["phase"], r["variant"]) for r in rows] == [(p, v) for p in ("inference", "train")
                                                          for v in ("plain", "wnlb", "nlb")]
    for r in rows:
        assert r["cpu_s"] > 0 and r["wall_s"] > 0 and r["threads"] == 1 and len(r["cpu_all"]) == 1
        assert r["cpu_ratio"] == pytest.approx(r["cpu_s"] / rows[0 if r["phase"] == "inference" else 3]["cpu_s"])
    # Three blocks (P3-P5) on top of the plain model's 3.41 M parameters; wNLB has one w more each.
    assert rows[0]["params"] < rows[2]["params"] < rows[0]["params"] * 1.1
    assert rows[1]["params"] == rows[2]["params"] + 3
    assert json.load(open(out))["results"] == json.loads(json.dumps(rows))
    assert "| yolov8n-seg | 64 | train | wnlb |" in capsys.readouterr().out


def test_the_training_step_is_a_real_step():
    # Ultralytics' segmentation loss on the synthetic batch (objects assigned, masks scored), a
    # backward pass and an optimizer step: the weights move.
    tool = _tool()
    import torch

    m = tool.build_models("yolov8n-seg", [])["plain"]
    batch = tool.synthetic_batch(2, 64)
    m.train()
    _, items = m.loss(batch)
    assert items["seg_loss"] > 0 and all(torch.isfinite(v) for v in items.values())
    before = {k: v.clone() for k, v in m.state_dict().items()}
    tool._step(m, "train", batch, torch.optim.AdamW(m.parameters(), lr=1e-3))
    changed = [k for k, v in m.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert len(changed) > 100


def test_bad_sizes_fail_in_one_line():
    with pytest.raises(SystemExit, match="multiples of 32"):
        _tool().main(["--sizes", "100"])


def test_the_command_exits_0(tmp_path):
    # Bug: the script ended with sys.exit(<the rows>), so a successful run printed the list and exited 1.
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.join(root, "tools", "benchmark_yolo.py"), "--sizes", "64",
                           "--repeats", "1", "--phases", "inference", "--variants", "wnlb", "--threads", "1"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=root, YOLO_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| yolov8n-seg | 64 | inference | wnlb |" in proc.stdout and "[{" not in proc.stdout + proc.stderr
