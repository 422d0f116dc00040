"""tools/benchmark_data.py: the stock DatasetMapper against the low-light mappers, timed in one run."""

import importlib.util
import json
import os
import re

import cv2
import pytest
from helpers import load_script


def _tool():
    return load_script("tools/benchmark_data.py")


def test_tiny_run_prints_a_row_per_mapper_with_positive_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = _tool().main(["--images", "2", "--rounds", "1", "--json", str(out)])
    assert [r["mapper"] for r in rows] == ["stock", "lv2021", "unprocess"]
    text = capsys.readouterr().out
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| mapper")]
    assert len(table) == 3
    for line, row in zip(table, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["mapper"]
        numbers = [float(c) for c in cells[1:]]
        assert len(numbers) == 5 and all(x >= 0 for x in numbers)
        cpu_ms, wall_ms, _, cpu_ratio, wall_ratio = numbers
        assert cpu_ms > 0 and wall_ms > 0 and cpu_ratio > 0 and wall_ratio > 0
        assert cpu_ratio == pytest.approx(row["cpu_ms"] / rows[0]["cpu_ms"], abs=0.006)
    assert rows[0]["cpu_ratio"] == 1.0 and rows[0]["wall_ratio"] == 1.0
    # The degradation costs something on top of the stock mapping (several times its noise).
    assert rows[1]["cpu_ms"] > rows[0]["cpu_ms"] and rows[2]["cpu_ms"] > rows[0]["cpu_ms"]
    assert re.search(r"1 alternating rounds of 2 images.*allocator: project", text)
    assert json.load(open(out))["results"] == json.loads(json.dumps(rows))


def test_crops_are_640x480_jpegs_of_real_photos(tmp_path):
    tool = _tool()
    files = tool.make_crops(str(tmp_path), 3)
    assert len(files) == 3
    images = [cv2.imread(f) for f in files]
    assert all(img.shape == (480, 640, 3) for img in images)
    assert images[0].std() > 20  # a photo, not a blank
    assert len({img.tobytes() for img in images}) == 3


def test_rounds_alternate_and_every_mapper_sees_every_image():
    tool = _tool()
    calls = []
    mappers = {n: (lambda d, n=n: calls.append((n, d["i"]))) for n in ("a", "b", "c")}
    rows = tool.measure(mappers, [{"i": 0}, {"i": 1}], rounds=3, warmup=0)
    order = [n for n, i in calls if i == 0]
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [len(r["cpu_ms_all"]) for r in rows] == [3, 3, 3]


@pytest.mark.parametrize("argv,bad", [(["--images", "0"], "--images"), (["--rounds", "0"], "--rounds"),
                                      (["--threads", "-1"], "--threads")])
def test_bad_arguments_exit_with_one_line(argv, bad):
    with pytest.raises(SystemExit, match=bad):
        _tool().main(argv)


def test_glibc_allocator_run_in_a_fresh_process_keeps_the_defaults():
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "tools", "benchmark_data.py"), "--images", "1",
                          "--rounds", "1", "--variants", "lv2021", "--allocator", "glibc"],
                         capture_output=True, text=True, check=True, cwd=root).stdout
    assert "allocator: glibc" in out and "| lv2021 |" in out and "| unprocess |" not in out


def test_yolo_option_prints_its_table_and_the_ratios_side_by_side(tmp_path, capsys):
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("the optional YOLO extra (ultralytics) is not installed")
    out = tmp_path / "bench.json"
    rows, yolo = _tool().main(["--images", "2", "--rounds", "1", "--variants", "lv2021", "--yolo",
                               "--yolo-samples", "2", "--yolo-fresh-tiles", "--json", str(out)])
    assert [r["mapper"] for r in rows] == ["stock", "lv2021"]
    assert [r["mapper"] for r in yolo] == ["stock", "lv2021", "lv2021 fresh tiles"]
    text = capsys.readouterr().out
    assert re.search(r"1 alternating rounds of 2 YOLO training samples \(mosaics of 640x480 JPEGs, imgsz 640\)", text)
    tables = [[line for line in block.splitlines() if line.startswith("| ")] for block in text.split("\n\n")]
    yolo_table = [line for line in tables[1] if not line.startswith("| mapper")]
    assert [line.split("|")[1].strip() for line in yolo_table] == ["stock", "lv2021", "lv2021 fresh tiles"]
    for line, row in zip(yolo_table, yolo):
        cpu_ms, wall_ms, _, cpu_ratio, wall_ratio = (float(c) for c in line.strip("|").split("|")[1:])
        assert cpu_ms == pytest.approx(row["cpu_ms"], abs=0.006) and cpu_ms > 0 and wall_ms > 0
        assert cpu_ratio == pytest.approx(row["cpu_ms"] / yolo[0]["cpu_ms"], abs=0.006)
    # The degradation costs something on top of Ultralytics' own sample, and 4 per mosaic more.
    assert yolo[0]["cpu_ms"] < yolo[1]["cpu_ms"] < yolo[2]["cpu_ms"]
    side = tables[2]
    assert side[0] == "| pipeline | detectron2 mapper | YOLO dataset | YOLO, fresh tiles |"
    ratios = (rows[1]["cpu_ratio"], yolo[1]["cpu_ratio"], yolo[2]["cpu_ratio"])
    assert side[1:] == ["| lv2021 | {:.2f} | {:.2f} | {:.2f} |".format(*ratios)]
    assert re.search(r"^load average [\d.]+ before, [\d.]+ after$", text, re.M)
    saved = json.load(open(out))
    assert saved["yolo"] == json.loads(json.dumps(yolo)) and saved["results"] == json.loads(json.dumps(rows))


def test_yolo_samplers_walk_one_permutation_with_the_same_draws():
    import random

    import numpy as np

    tool = _tool()
    seen = {"a": [], "b": []}

    class Fake(list):
        def __init__(self, name):
            super().__init__(range(10))
            self.name = name

        def __getitem__(self, i):
            seen[self.name].append((i, random.random(), np.random.rand()))

    samplers = tool.yolo_samplers({"a": Fake("a"), "b": Fake("b")})
    for _ in range(10):
        samplers["a"](None)
    for _ in range(10):
        samplers["b"](None)
    assert seen["a"] == seen["b"]
    assert sorted(i for i, _, _ in seen["a"]) == list(range(10))  # every image once, as an epoch


def test_worker_process_times_its_own_callable_in_its_own_process():
    import time

    tool = _tool()
    built_in = []

    def build():
        built_in.append(os.getpid())  # in the child: the parent's list stays empty
        state = {"calls": 0}

        def call(item):
            state["calls"] += 1
            end = time.process_time() + 0.02 * item  # CPU work in the child
            while time.process_time() < end:
                pass
        return call

    worker = tool.WorkerProcess(build)
    try:
        c0 = time.process_time()
        cpu, wall, faults = worker.timed_run([1, 2, 3])
        parent_cpu = time.process_time() - c0
        assert built_in == []
        assert 0.12 <= cpu < 0.5 and wall >= cpu * 0.5 and faults >= 0
        assert parent_cpu < 0.06  # the parent waited; the child's CPU time is the child's
        rows = tool.measure({"w": worker}, [1], rounds=2, warmup=0)
        assert len(rows[0]["cpu_ms_all"]) == 2 and 15 <= rows[0]["cpu_ms"] < 100
    finally:
        worker.close()
    assert not worker._process.is_alive()


def test_worker_process_build_error_and_death_are_one_line_errors():
    tool = _tool()

    def broken():
        raise ValueError("no such dataset")

    with pytest.raises(RuntimeError, match="ValueError: no such dataset"):
        tool.WorkerProcess(broken)
    worker = tool.WorkerProcess(lambda: (lambda item: os._exit(3)))
    try:
        with pytest.raises(RuntimeError, match="worker process died"):
            worker.timed_run([0])
    finally:
        worker.close()


@pytest.mark.parametrize("argv,bad", [(["--yolo-samples", "0", "--yolo"], "--yolo-samples"),
                                      (["--yolo-fresh-tiles"], "needs --yolo")])
def test_bad_yolo_arguments_exit_with_one_line(argv, bad):
    with pytest.raises(SystemExit, match=bad):
        _tool().main(argv)


def test_device_path_option_times_its_mapper_and_the_degradation_alone(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows, yolo, device = _tool().main(["--images", "2", "--rounds", "1", "--variants", "lv2021", "--device-path",
                                       "--yolo", "--yolo-samples", "1", "--json", str(out)])
    assert [r["mapper"] for r in yolo] == ["stock", "lv2021"]
    assert [r["mapper"] for r in rows] == ["stock", "lv2021", "lv2021 on device"]
    names = [r["mapper"] for r in device]
    assert names[:2] == ["lv2021 numpy", "lv2021 torch cpu"]  # cuda rows only with a GPU
    assert all(r["cpu_ms"] > 0 and r["cpu_ratio"] > 0 for r in rows + device)
    # The worker's share of the device path skips the degradation and the resize: cheaper than stock.
    assert rows[2]["cpu_ratio"] < rows[1]["cpu_ratio"]
    text = capsys.readouterr().out
    assert "| lv2021 on device |" in text and "degradations alone" in text and "| lv2021 torch cpu |" in text
    assert [r["mapper"] for r in json.loads(out.read_text())["device_path"]] == names
