"""tools/benchmark_data.py: the stock DatasetMapper against the low-light mappers, timed in one run."""

import importlib.util
import json
import os
import re

import cv2
import pytest


def _tool():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "benchmark_data.py")
    spec = importlib.util.spec_from_file_location("benchmark_data_tool", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
