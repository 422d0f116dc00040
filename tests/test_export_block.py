"""NonLocalBlock2d exports: TorchScript tracing and scripting, both ONNX exporters, equal to eager.

Each exported block is traced at one size and run at two others (and another batch size):
nothing it does may depend on the tracing input's size. ONNX models run in onnxruntime.
"""

import io
import itertools
import warnings

import numpy as np
import pytest
import torch

from wnlb_d2.layers import NONLOCAL_FUSIONS, NONLOCAL_MODES, NonLocalBlock2d
from wnlb_d2.layers.nonlocal_ops import is_exporting, softmax_attention

ort = pytest.importorskip("onnxruntime")

TRACE_SHAPE = (1, 16, 8, 8)
#: Sizes other than the tracing one, and another batch size.
OTHER_SHAPES = [(1, 16, 6, 10), (2, 16, 12, 7)]
TOLERANCE = 1e-4


def _block(mode, fusion, sub_sample=False, seed=0):
    """An eval-mode block whose every parameter and BN statistic is random (so W_z(y) != 0)."""
    block = NonLocalBlock2d(16, mode=mode, fusion=fusion, norm="BN", sub_sample=sub_sample, weight_init=0.3)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in itertools.chain(block.named_parameters(), block.named_buffers()):
            if t.dtype.is_floating_point and t.dim():
                if "running_var" in name:
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
    return block.eval()


def _inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) for shape in OTHER_SHAPES]


def _max_difference(run, block):
    """Largest |exported - eager| over the other input sizes."""
    worst = 0.0
    for x in _inputs():
        with torch.no_grad():
            expected = block(x).numpy()
        got = np.asarray(run(x))
        assert got.shape == expected.shape
        assert np.isfinite(got).all(), "the exported block gives NaN or inf"  # max() would skip a NaN
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _onnx_session(block, dynamo):
    x = torch.randn(*TRACE_SHAPE)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
            program = torch.onnx.export(block, (x,), dynamo=True, input_names=["x"], dynamic_shapes={"x": dims},
                                        verbose=False)
            program.save(f)
        else:
            torch.onnx.export(block, (x,), f, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    return lambda t: session.run(None, {"x": t.numpy()})[0]


@pytest.mark.parametrize("sub_sample", [False, True])
@pytest.mark.parametrize("fusion", NONLOCAL_FUSIONS)
@pytest.mark.parametrize("mode", NONLOCAL_MODES)
def test_traced_block_equals_eager_at_other_sizes(mode, fusion, sub_sample):
    block = _block(mode, fusion, sub_sample)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(block, (torch.randn(*TRACE_SHAPE),))
    # No branch of ours on a traced value (detectron2's Conv2d checks numel() itself, harmlessly).
    ours = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning) and "wnlb_d2" in w.filename]
    assert not ours, [str(w.message) for w in ours]
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)  # an autograd Function in the graph could not be saved
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    assert _max_difference(lambda x: loaded(x).detach(), block) <= TOLERANCE


@pytest.mark.parametrize("fusion", NONLOCAL_FUSIONS)
@pytest.mark.parametrize("mode", NONLOCAL_MODES)
def test_scripted_block_equals_eager(mode, fusion):
    block = _block(mode, fusion, sub_sample=mode == "embedded")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, still offered
        scripted = torch.jit.script(block)
    assert _max_difference(lambda x: scripted(x).detach(), block) <= TOLERANCE


@pytest.mark.parametrize("fusion", NONLOCAL_FUSIONS)
@pytest.mark.parametrize("mode", NONLOCAL_MODES)
def test_onnx_torchscript_exporter_equals_eager(mode, fusion):
    # The Gaussian used to export NaN for every input (the symmetric kernel's in-place
    # accumulation, dropped by this exporter: 0 / 0); concatenate hit an onnxruntime MatMul bug.
    block = _block(mode, fusion)
    diff = _max_difference(_onnx_session(block, dynamo=False), block)
    assert diff <= TOLERANCE


@pytest.mark.parametrize("fusion", NONLOCAL_FUSIONS)
@pytest.mark.parametrize("mode", NONLOCAL_MODES)
def test_onnx_dynamo_exporter_equals_eager(mode, fusion):
    pytest.importorskip("onnxscript")
    block = _block(mode, fusion, sub_sample=mode in ("dot", "concatenate"))
    assert _max_difference(_onnx_session(block, dynamo=True), block) <= TOLERANCE


def test_softmax_attention_is_plain_while_tracing():
    # Called on its own under a trace, the efficient entry point must not record an autograd
    # Function (it would be a PythonOp that cannot be saved) nor specialise on sizes.
    def attend(theta, g):
        return softmax_attention(theta, theta, g)

    theta, g = torch.randn(1, 20, 4), torch.randn(1, 20, 3)
    traced = torch.jit.trace(attend, (theta, g))
    assert "SoftmaxAttention" not in str(traced.graph)
    theta2, g2 = torch.randn(2, 33, 4), torch.randn(2, 33, 3)
    expected = torch.bmm(torch.bmm(theta2, theta2.transpose(1, 2)).softmax(-1), g2)
    torch.testing.assert_close(traced(theta2, g2), expected, rtol=1e-5, atol=1e-5)


def test_is_exporting_only_while_tracing():
    assert not is_exporting()
    seen = []

    def probe(x):
        seen.append(is_exporting())
        return x + 1

    torch.jit.trace(probe, (torch.zeros(2),))
    assert seen[0] is True  # (check_trace then runs it once more eagerly)
    assert not is_exporting()
