"""Detectors with wNLB blocks exported (TorchScript tracing, ONNX) equal eager; export_model.py."""

import os
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

from wnlb_d2.engine.setup import setup_cfg
from wnlb_d2.export import ExportError, FlatDetector, eager_outputs, export_model_bytes, load_exported, max_difference

pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "demo", "Base-Demo-R18-FPN.yaml")
SOLOV2_DEMO = os.path.join(ROOT, "configs", "demo", "SOLOv2-Demo-R18-FPN.yaml")
TOOL = os.path.join(ROOT, "tools", "deploy", "export_model.py")
WNLB = ["MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone", "MODEL.DEVICE", "cpu", "MODEL.WNLB.WEIGHT_INIT", "0.5"]
#: Score thresholds: every proposal kept (several detections), none kept (zero).
MANY, NONE = "0.0", "1.01"


def _model(config, mode, score_thresh, extra=()):
    cfg = setup_cfg(config, WNLB + ["MODEL.WNLB.MODE", mode, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", score_thresh,
                                    *extra])
    torch.manual_seed(0)
    return FlatDetector(build_model(cfg).eval()).eval()


def _images(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *size, generator=gen) * 255 for size in [(96, 128), (64, 96), (128, 80)]]


@pytest.mark.parametrize("mode, fmt", [
    *[(mode, "torchscript") for mode in ("embedded", "gaussian", "dot", "concatenate")],
    ("gaussian", "onnx"), ("concatenate", "onnx"),  # the two that exported wrong before (NaN, onnxruntime)
])
def test_mask_rcnn_exported_equals_eager_with_many_and_zero_detections(mode, fmt):
    trace_image, *others = _images()
    for thresh in (MANY, NONE):
        flat = _model(DEMO, mode, thresh)
        run = load_exported(export_model_bytes(flat, trace_image, fmt, "tracing"), fmt)
        for image in others:
            expected = eager_outputs(flat, image)
            assert (len(expected[1]) > 1) == (thresh == MANY), "the thresholds must give several / zero"
            assert max_difference(expected, run(image)) <= 1e-4


def test_solov2_refuses_to_be_traced():
    flat = _model(SOLOV2_DEMO, "embedded", MANY)
    with pytest.raises(ExportError, match="SOLOv2 cannot be traced"):
        export_model_bytes(flat, _images()[0], "torchscript", "tracing")


def _checkpoint(tmp_path, mode="embedded"):
    cfg = setup_cfg(DEMO, WNLB + ["MODEL.WNLB.MODE", mode])
    torch.manual_seed(0)
    path = str(tmp_path / "model.pth")
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


def _run_tool(args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_model_tool_end_to_end(tmp_path, fmt):
    weights = _checkpoint(tmp_path, "gaussian")
    out = tmp_path / "export"
    sample = os.path.join(os.path.dirname(__import__("matplotlib").__file__), "mpl-data", "sample_data",
                          "grace_hopper.jpg")
    proc = _run_tool(["--config-file", DEMO, "--format", fmt, "--export-method", "tracing", "--output", str(out),
                      "--sample-image", sample, "MODEL.WEIGHTS", weights, *WNLB, "MODEL.WNLB.MODE", "gaussian",
                      "MODEL.ROI_HEADS.SCORE_THRESH_TEST", MANY])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max |exported - eager| =" in proc.stdout and "exported / eager =" in proc.stdout
    name = "model.ts" if fmt == "torchscript" else "model.onnx"
    assert os.listdir(out) == [name]
    # The written file is the checked model: load it again and compare once more.
    flat = _model(DEMO, "gaussian", MANY)
    flat.model.load_state_dict(torch.load(weights)["model"])
    image = _images()[1]
    run = load_exported((out / name).read_bytes(), fmt)
    assert max_difference(eager_outputs(flat, image), run(image)) <= 1e-4


def test_export_model_tool_names_the_block_that_cannot_be_exported(tmp_path, monkeypatch, capsys):
    # A block whose export path fails: one line naming it and why, exit non-zero, no file.
    sys.path.insert(0, os.path.dirname(TOOL))
    import export_model

    from wnlb_d2.layers import NonLocalBlock2d

    def refuse(self, x):
        raise NotImplementedError(f"mode {self.mode!r} has no export path")

    monkeypatch.setattr(NonLocalBlock2d, "_forward_export", refuse)
    out = tmp_path / "export"
    with pytest.raises(SystemExit) as exc:
        export_model.main(["--config-file", DEMO, "--output", str(out), *WNLB, "MODEL.WNLB.MODE", "dot"])
    msg = str(exc.value.code)
    assert msg.startswith("export_model.py: error: block backbone.bottom_up.wnlb.res2 (mode 'dot'"), msg
    assert "has no export path" in msg and "\n" not in msg
    assert not out.exists()


def test_export_model_tool_writes_nothing_above_the_tolerance(tmp_path):
    out = tmp_path / "export"
    proc = _run_tool(["--config-file", DEMO, "--output", str(out), "--tolerance", "-1", *WNLB])
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("export_model.py: error: the exported model differs")
    assert not out.exists()


def test_export_model_tool_refuses_solov2_in_one_line(tmp_path):
    out = tmp_path / "export"
    proc = _run_tool(["--config-file", SOLOV2_DEMO, "--output", str(out), *WNLB])
    assert proc.returncode != 0
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("export_model.py: error: ") and "SOLOv2 cannot be traced" in line
    assert not out.exists()
