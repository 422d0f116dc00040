"""tools/benchmark_prepare.py: wnlb-prepare against the read + write floor, timed in one run."""

import json
import os
import re

import cv2
import pytest
from helpers import load_script


def _tool():
    # Registered as an import would: the floor's worker function is pickled by module name.
    return load_script("tools/benchmark_prepare.py", register=True)


def test_tiny_run_prints_the_floor_and_each_pipeline_with_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = _tool().main(["--images", "3", "--rounds", "1", "--pipelines", "lv2021", "unprocess",
                         "--project", "5000", "--folder", str(tmp_path / "work"), "--json", str(out)])
    assert [r["run"] for r in rows] == ["floor", "wnlb-prepare lv2021", "wnlb-prepare unprocess"]
    text = capsys.readouterr().out
    assert re.search(r"^3 640x480 JPEGs, 2 worker process\(es\), medians of 1 alternating rounds, ratios to floor; "
                     r"\d{4}-\d\d-\d\d, .* with \d+ cores; load average [\d.]+ before, [\d.]+ after$", text, re.M)
    assert ("| run | seconds | images/s | 5000 images (min) | ratio | CPU ms/image | CPU ratio | "
            "5000 images on 2 idle cores (min) |") in text
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| run")]
    assert len(table) == 3
    for line, row in zip(table, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["run"]
        seconds, per_s, minutes, ratio, cpu_ms, cpu_ratio, idle_minutes = map(float, cells[1:])
        assert seconds > 0 and ratio > 0 and cpu_ms > 0 and cpu_ratio > 0
        assert per_s == pytest.approx(3 / row["seconds"], rel=0.01, abs=0.06)
        assert minutes == pytest.approx(5000 * row["seconds"] / 3 / 60, rel=0.01, abs=0.006)
        assert ratio == pytest.approx(row["seconds"] / rows[0]["seconds"], abs=0.006)
        assert cpu_ratio == pytest.approx(row["cpu_ms"] / rows[0]["cpu_ms"], abs=0.006)
        assert idle_minutes == pytest.approx(5000 * row["cpu_ms"] / 1e3 / 2 / 60, rel=0.01, abs=0.006)
    assert rows[0]["ratio"] == 1.0 and rows[0]["cpu_ratio"] == 1.0
    # The workers' CPU time is counted: degrading costs more than reading and writing.
    assert rows[1]["cpu_ms"] > rows[0]["cpu_ms"] and rows[2]["cpu_ms"] > rows[0]["cpu_ms"]
    saved = json.load(open(out))
    assert saved["results"] == json.loads(json.dumps(rows)) and len(saved["load_average"]) == 2
    assert os.listdir(tmp_path / "work") == []  # the set and every output are removed


def test_the_set_is_640x480_jpegs_of_real_photos_with_a_coco_json(tmp_path):
    images_dir, json_file = _tool().make_dataset(str(tmp_path / "set"), 5)
    coco = json.load(open(json_file))
    assert [im["id"] for im in coco["images"]] == [1, 2, 3, 4, 5]
    images = [cv2.imread(os.path.join(images_dir, im["file_name"])) for im in coco["images"]]
    assert all(img.shape == (480, 640, 3) for img in images)
    assert images[0].std() > 20 and len({img.tobytes() for img in images}) == 5
    assert sorted(os.listdir(images_dir)) == sorted(im["file_name"] for im in coco["images"])


def test_rounds_alternate_and_the_ratio_is_to_the_first_run():
    tool = _tool()
    calls = []

    def runner(name, seconds):
        return lambda r: calls.append((name, r)) or seconds

    rows = tool.measure({"floor": runner("floor", 1.0), "a": runner("a", 3.0)}, count=10, rounds=3, project=100,
                        workers=2)
    assert calls == [("floor", 0), ("a", 0), ("a", 1), ("floor", 1), ("floor", 2), ("a", 2)]
    assert rows[1]["ratio"] == 3.0 and rows[1]["images_per_s"] == pytest.approx(10 / 3)
    assert rows[1]["projected_s"] == pytest.approx(30.0)
    assert rows[1]["idle_projected_s"] == pytest.approx(100 * rows[1]["cpu_ms"] / 1e3 / 2)
    assert [len(r["cpu_ms_all"]) for r in rows] == [3, 3]


@pytest.mark.parametrize("argv,bad", [(["--images", "0"], "--images"), (["--rounds", "0"], "--rounds"),
                                      (["--workers", "0"], "--workers")])
def test_bad_arguments_exit_with_one_line(argv, bad):
    with pytest.raises(SystemExit, match=bad):
        _tool().main(argv)
