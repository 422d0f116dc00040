"""YOLOv8n-seg with non-local blocks through ``model.export(format="torchscript" | "onnx")``.

The exported file must give the eager model's raw outputs (boxes as fractions of the image
side, class scores, mask coefficients, prototypes) within 1e-4: TorchScript (traced at one
size, so compared at that size on another image) and ONNX with ``dynamic=True`` (compared on
two sizes other than the export size), for every mode x fusion of the block. The blocks'
output paths get random weights first: at initialisation a block is the identity, and an
export that broke the non-local path would still match.
"""

import importlib.util

import pytest

# find_spec, not importorskip: importing ultralytics before wnlb_d2.yolo would skip the
# package's environment defaults (offline, config folder outside the home folder).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

import os  # noqa: E402

import torch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "configs", "yolo", "yolov8n-seg-wnlb.yaml")
MODES = ("embedded", "gaussian", "dot", "concatenate")
FUSIONS = ("weighted", "residual")
EXPORT_SIZE = 64
TOLERANCE = 1e-4



def _model_yaml(tmp_path, mode, fusion):
    """The shipped YAML for embedded/weighted, else a generated one (scale n from the file name)."""
    if (mode, fusion) == ("embedded", "weighted"):
        return SHIPPED
    from wnlb_d2.yolo.model_yaml import insert_nonlocal_blocks, write_model_yaml

    d = insert_nonlocal_blocks("yolov8n-seg.yaml", fusion=fusion, mode=mode)
    return write_model_yaml(str(tmp_path / f"yolov8n-seg-{mode}-{fusion}.yaml"), d)


def _model_with_active_blocks(path):
    """``YOLO(path)`` whose blocks are not the identity: random W_z, w = 0.5 (weighted fusion)."""
    import wnlb_d2.yolo as wy
    from ultralytics import YOLO

    from wnlb_d2.yolo.export import eager_outputs

    model = YOLO(path)
    images = torch.rand(1, 3, EXPORT_SIZE, EXPORT_SIZE, generator=torch.Generator().manual_seed(1))
    identity = eager_outputs(model, images)
    generator = torch.Generator().manual_seed(0)
    blocks = [m for m in model.model.modules() if isinstance(m, wy.YOLONonLocalBlock2d)]
    assert len(blocks) == 3
    with torch.no_grad():
        for block in blocks:
            for p in block.w_z.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
            if block.fusion_weight is not None:
                block.fusion_weight.fill_(0.5)
    active = eager_outputs(model, images)
    # The blocks now change what the model computes: a broken non-local path cannot pass unseen.
    assert all(torch.isfinite(t).all() for t in active)
    assert float((active[0] - identity[0]).abs().max()) > 1e-2
    return model


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_torchscript_export_equals_eager(tmp_path, monkeypatch, mode, fusion):
    from wnlb_d2.yolo.export import export_difference

    model = _model_with_active_blocks(_model_yaml(tmp_path, mode, fusion))
    monkeypatch.chdir(tmp_path)  # Ultralytics writes the export into the working directory
    path = model.export(format="torchscript", imgsz=EXPORT_SIZE, verbose=False)
    assert os.path.isfile(path)
    diff = export_difference(model, path, [(EXPORT_SIZE, EXPORT_SIZE)], seed=2, batch=2)
    print(f"torchscript {mode}/{fusion}: max difference {diff}")
    assert max(diff.values()) <= TOLERANCE, diff


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_onnx_dynamic_export_equals_eager_on_other_sizes(tmp_path, monkeypatch, mode, fusion):
    pytest.importorskip("onnxruntime")  # in the test requirements; installs without it skip
    from wnlb_d2.yolo.export import export_difference

    model = _model_with_active_blocks(_model_yaml(tmp_path, mode, fusion))
    monkeypatch.chdir(tmp_path)
    path = model.export(format="onnx", imgsz=EXPORT_SIZE, dynamic=True, verbose=False)
    assert os.path.isfile(path)
    diff = export_difference(model, path, [(96, 96), (128, 64)], seed=2)
    print(f"onnx {mode}/{fusion}: max difference {diff}")
    assert max(diff.values()) <= TOLERANCE, diff


def test_output_difference_sees_a_changed_value_nan_and_shape():
    # The comparison itself can fail: a box off by one pixel at side 100 is 1e-2, a NaN is inf.
    from wnlb_d2.yolo.export import output_difference

    a = (torch.zeros(1, 6, 5), torch.zeros(1, 2, 4, 4))
    b = (a[0].clone(), a[1].clone())
    assert output_difference(a, b, (100, 50)) == 0.0
    b[0][0, 1, 3] = 1.0  # a box coordinate: 1 px of 100
    assert output_difference(a, b, (100, 50)) == pytest.approx(1e-2)
    b[0][0, 5, 0] = 1e-3  # a score
    assert output_difference(a, b, (100, 50)) == pytest.approx(1e-2)
    b[1][0, 0, 0, 0] = float("nan")
    assert output_difference(a, b, (100, 50)) == float("inf")
    assert output_difference(a, (b[0][:, :, :4], b[1]), (100, 50)) == float("inf")
