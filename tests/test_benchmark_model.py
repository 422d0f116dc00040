"""tools/benchmark_model.py: case selection, ratios, and real worker runs on a tiny model and image."""

import json
import os

import pytest
from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "Base-Demo-R18-FPN.yaml")
SOLOV2_DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "SOLOv2-Demo-R18-FPN.yaml")


@pytest.fixture(scope="module")
def bench():
    return load_script("tools/benchmark_model.py")


def test_help_and_cases(bench):
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    args = bench.build_parser().parse_args(["--sizes", "64x96", "--variants", "stock", "wnlb-res3-5", "nlb-res2-5",
                                            "--modes", "dot", "--sub-sample", "on", "--skip-train"])
    todo = bench.cases(args)
    assert [(c["variant"], c["mode"], c["sub_sample"], c["phase"], c["size"]) for c in todo] == [
        ("stock", None, False, "inference", (64, 96)),
        ("wnlb-res3-5", "dot", True, "inference", (64, 96)),
        ("nlb-res2-5", "dot", True, "inference", (64, 96))]
    assert bench.variant_opts("nlb-res2-5", "dot", True) == [
        "MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone", "MODEL.WNLB.STAGES",
        "['res2', 'res3', 'res4', 'res5']", "MODEL.WNLB.FUSION", "residual", "MODEL.WNLB.MODE", "dot",
        "MODEL.WNLB.SUB_SAMPLE", "True"]
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--sizes", "800by1333"])


def test_ratios(bench):
    def row(variant, size, phase, t, peak):
        return {"variant": variant, "size": size, "phase": phase, "mode": "embedded", "sub_sample": False,
                "result": {"time_s": t, "peak_bytes": peak}}

    rows = [row("stock", (8, 8), "inference", 2.0, 100), row("wnlb-res3-5", (8, 8), "inference", 3.0, 150),
            row("stock", (8, 8), "train", 4.0, 400), row("wnlb-res3-5", (8, 8), "train", 5.0, 300),
            row("wnlb-res2-5", (16, 16), "train", 1.0, 1),
            {"variant": "nlb-res3-5", "size": (8, 8), "phase": "train", "mode": "dot", "sub_sample": True,
             "result": {"error": "exit 1: boom"}}]
    bench.add_ratios(rows)
    assert [r["time_ratio"] for r in rows] == [1.0, 1.5, 1.0, 1.25, None, None]
    assert [r["peak_ratio"] for r in rows] == [1.0, 1.5, 1.0, 0.75, None, None]
    assert [r["cpu_ratio"] for r in rows] == [None] * 6  # no cpu_s in these results
    rows[0]["result"]["cpu_s"], rows[1]["result"]["cpu_s"] = 2.0, 5.0
    assert bench.add_ratios(rows)[1]["cpu_ratio"] == 2.5
    assert "failed: exit 1: boom" in bench.format_row(rows[-1])
    assert "1.50x" in bench.format_row(rows[1])


def test_tool_runs_workers_on_a_tiny_model(bench, tmp_path, capsys):
    # Two subprocesses (importing detectron2 dominates their time): inference of stock and wNLB.
    out = str(tmp_path / "bench.json")
    rc = bench.main(["--sizes", "64x64", "--variants", "stock", "wnlb-res3-5", "--modes", "embedded",
                     "--sub-sample", "on", "--skip-train", "--repeats", "1", "--threads", "1",
                     "--config-file", DEMO_CONFIG, "--json", out])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    with open(out) as f:
        data = json.load(f)
    rows = data["rows"]
    assert [(r["variant"], r["phase"], r["sub_sample"]) for r in rows] == [
        ("stock", "inference", False), ("wnlb-res3-5", "inference", True)]
    for r in rows:
        res = r["result"]
        assert "error" not in res, res
        assert res["time_s"] > 0 and res["peak_bytes"] >= 0 and len(res["times_s"]) == 1 and res["threads"] == 1
    assert rows[0]["time_ratio"] == 1.0 and rows[0]["peak_ratio"] == 1.0
    assert rows[1]["time_ratio"] == pytest.approx(rows[1]["result"]["time_s"] / rows[0]["result"]["time_s"])
    assert rows[1]["peak_ratio"] == pytest.approx(rows[1]["result"]["peak_bytes"] / max(rows[0]["result"]["peak_bytes"], 1))
    assert "wnlb-res3-5 embedded sub" in printed and printed.count("64x64") == 2


def test_worker_train_step_in_process(bench):
    # The worker's training step (forward + backward + SGD) run here, without a subprocess.
    import torch

    threads = torch.get_num_threads()
    try:
        args = bench.build_parser().parse_args(["--worker", "--variant", "nlb-res3-5", "--mode", "dot", "--size",
                                                "64x64", "--phase", "train", "--repeats", "2", "--threads", "1",
                                                "--config-file", DEMO_CONFIG])
        args.sub_sample = False
        res = bench.run_case(args)
    finally:
        torch.set_num_threads(threads)
    assert set(res) == {"time_s", "times_s", "peak_bytes", "threads", "cpu_s"}
    assert len(res["times_s"]) == 2 and res["time_s"] > 0 and res["peak_bytes"] >= 0
    assert 0 < res["cpu_s"] < 10 * res["time_s"]  # one thread: CPU seconds at most about the wall time


def test_profile_prints_the_top_ops(bench, capsys):
    import torch

    a = torch.randn(64, 64)
    bench.print_profile(lambda: (a @ a).relu().sum(), 5, cuda=False)
    table = capsys.readouterr().err
    assert "aten::mm" in table and "Self CPU" in table
    args = bench.build_parser().parse_args(["--profile", "7"])
    assert args.profile == 7


@pytest.mark.parametrize("phase", ["inference", "train"])
def test_worker_runs_solov2(bench, phase, monkeypatch, tmp_path):
    """Any detector config: SOLOv2's loss, and its inference on every candidate (thresholds 0)."""
    import torch

    seen = {}
    original = bench._fake_batch

    def spy(h, w, device, num_classes, train):
        seen["num_classes"] = num_classes
        return original(h, w, device, num_classes, train)

    monkeypatch.setattr(bench, "_fake_batch", spy)
    config = tmp_path / "solo.yaml"  # 3 classes, where ROI_HEADS.NUM_CLASSES stays 6
    config.write_text(f'_BASE_: "{SOLOV2_DEMO_CONFIG}"\nMODEL:\n  SOLOV2:\n    NUM_CLASSES: 3\n')
    threads = torch.get_num_threads()
    try:
        args = bench.build_parser().parse_args(["--worker", "--variant", "wnlb-res3-5", "--mode", "embedded",
                                                "--size", "64x64", "--phase", phase, "--repeats", "1",
                                                "--threads", "1", "--config-file", str(config)])
        args.sub_sample = False
        cfg = bench._build_cfg(args, [])
        assert cfg.MODEL.META_ARCHITECTURE == "SOLOv2"
        assert cfg.MODEL.SOLOV2.SCORE_THRESH_TEST == 0.0 and cfg.MODEL.SOLOV2.UPDATE_THRESH_TEST == 0.0
        res = bench.run_case(args)
    finally:
        torch.set_num_threads(threads)
    assert res["time_s"] > 0 and seen["num_classes"] == 3  # MODEL.SOLOV2.NUM_CLASSES, not ROI_HEADS' 6
