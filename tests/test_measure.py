"""wnlb_d2.utils.measure and tools/benchmark_nonlocal.py on tiny inputs."""

import json
import os
import subprocess
import sys

import pytest

from wnlb_d2.utils.measure import status_kib, time_and_peak

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_PEAK_PROBE = """
import json, numpy as np
from wnlb_d2.utils.measure import time_and_peak
size = 64 * 2**20
sizes = []
def step():
    a = np.ones(size, dtype=np.uint8)  # touched: resident, 64 MiB
    sizes.append(int(a.sum()))
    del a
cpu = []
times, peaks = time_and_peak(step, repeats=3, cuda=False, cpu_times=cpu)
_, idle = time_and_peak(lambda: None, repeats=2, cuda=False)
print(json.dumps({"size": size, "sizes": sizes, "times": times, "peaks": peaks, "idle": idle, "cpu": cpu}))
"""


def test_peak_is_the_rise_of_the_resident_set_during_each_run():
    # A fresh process: the suite's own allocations (arenas, caches) must not blur the figure.
    run = subprocess.run([sys.executable, "-c", _PEAK_PROBE], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    size = r["size"]
    assert len(r["times"]) == len(r["peaks"]) == 3 and r["sizes"] == [size] * 3
    assert all(t > 0 for t in r["times"])
    assert len(r["cpu"]) == 3 and all(0 < c for c in r["cpu"])
    # Each run's peak sees the 64 MiB array, and not the runs before it (VmHWM is reset).
    assert all(size * 0.9 <= p <= size * 1.5 for p in r["peaks"]), r["peaks"]
    assert all(p < size * 0.1 for p in r["idle"]), r["idle"]


def test_status_kib_reads_proc_and_names_a_missing_field():
    assert status_kib("VmRSS") > 0
    with pytest.raises(RuntimeError, match="NoSuchField not in /proc/self/status"):
        status_kib("NoSuchField")


def test_benchmark_nonlocal_reports_both_implementations(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark_nonlocal.py"), "--stages", "res5",
         "--modes", "dot", "concatenate", "--height", "128", "--width", "128", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["stage"], r["mode"]) for r in rows] == [("res5", "dot"), ("res5", "concatenate")]
    for r in rows:
        assert (r["h"], r["w"], r["channels"]) == (4, 4, 2048)  # 128 px / stride 32
        for impl in ("efficient", "reference"):
            assert r[impl]["time_s"] > 0 and r[impl]["n"] == 16
    assert "time eff/ref" in run.stdout and "res5" in run.stdout


def test_benchmark_nonlocal_softmax_kernel_and_threads(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark_nonlocal.py"), "--stages", "res5", "--modes",
         "gaussian", "--height", "96", "--width", "96", "--softmax-kernel", "tiled", "--threads", "1",
         "--warmup", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "threads 1" in run.stdout and "softmax kernel tiled" in run.stdout
    (row,) = json.loads(out.read_text())
    assert row["mode"] == "gaussian" and row["efficient"]["n"] == 9 and row["reference"]["time_s"] > 0
    assert row["efficient"]["cpu_s"] > 0 and "cpu eff/ref" in run.stdout


def test_benchmark_nonlocal_rounds_alternate_and_take_median_ratios(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark_nonlocal.py"), "--stages", "res5", "--modes",
         "gaussian", "--height", "96", "--width", "96", "--softmax-kernel", "symmetric", "--threads", "1",
         "--rounds", "2", "--min-seconds", "1.0", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rounds 2" in run.stdout and "softmax kernel symmetric" in run.stdout
    (row,) = json.loads(out.read_text())
    for impl in ("efficient", "reference"):
        assert len(row[impl]["rounds"]) == 2 and row[impl]["cpu_s"] > 0
        # A 3 x 3 map runs in milliseconds: 1 s of timed runs are several of them, even when a
        # loaded machine makes the warm-up (the first call) take a tenth of a second.
        assert all(r["repeats"] > 1 for r in row[impl]["rounds"])
    assert set(row["ratios"]) == {"time_s", "cpu_s", "peak_extra_bytes"}
    assert f"{row['ratios']['cpu_s']:.2f}" in run.stdout
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark_nonlocal.py"), "--rounds", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--rounds must be at least 1, got 0" in bad.stderr


def test_benchmarks_refuse_cuda_without_it():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    for tool in ("benchmark_nonlocal.py", "benchmark_model.py"):
        run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), "--device", "cuda"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 2, (tool, run.stderr[-500:])
        assert "--device cuda but CUDA is not available" in run.stderr, tool
