"""Export detectron2 models of this project (wNLB backbones, Mask R-CNN, SOLOv2) to TorchScript
and ONNX, and check the exported model against eager.

The blocks switch to a plain, exact path while traced or exported
(:func:`wnlb_d2.layers.nonlocal_ops.is_exporting`), and so does SOLOv2's inference
(:func:`wnlb_d2.modeling.meta_arch.postprocess.solov2_inference_single_image_padded`: tensor
operations only, the same instances as eager for any number of detections). detectron2's own
``TracingAdapter`` lives in ``detectron2.export``, which does not import on the pure-Python v0.6
(no caffe2), so :class:`FlatDetector` flattens a model's inputs and outputs to tensors itself.
"""

import io
import logging
import re
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..layers import NonLocalBlock2d

__all__ = [
    "EXPORT_FORMATS", "ExportError", "FlatDetector", "export_model_bytes", "load_exported", "max_difference",
    "time_ratio",
]

logger = logging.getLogger(__name__)

#: (format, method) pairs: TorchScript by tracing or scripting, ONNX by either exporter.
EXPORT_FORMATS = {
    "torchscript": ("tracing", "scripting"),
    "onnx": ("tracing", "dynamo"),
}
#: Names of the flat outputs, in order.
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks")


class ExportError(RuntimeError):
    """A model (or one of its blocks) that cannot be exported, with the reason."""


class FlatDetector(nn.Module):
    """A detectron2 detector as ``image (C, H, W) -> (boxes, scores, classes, masks)`` tensors.

    For a GeneralizedRCNN the outputs are those before ``detector_postprocess`` (as
    detectron2's ``TracingAdapter`` gives them): boxes in the input image's frame and Mask
    R-CNN's 28 x 28 mask probabilities. For SOLOv2, its instances at the input size (binary
    masks as 0/1 floats, boxes from the masks); traced, the padded candidates are reduced to the
    detections by boolean indexing, so the outputs' first dimension is dynamic, zero included.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        inputs = [{"image": image}]
        if hasattr(self.model, "roi_heads"):
            instances = self.model.inference(inputs, do_postprocess=False)[0]
        else:
            instances = self.model(inputs)[0]["instances"]
        masks = instances.pred_masks if instances.has("pred_masks") else instances.scores.new_zeros((0,))
        return instances.pred_boxes.tensor, instances.scores, instances.pred_classes, masks.float()


def _first_line(e):
    """The first non-empty line of an exception's message (TorchScript's start with a newline),
    without terminal colour codes (torch.onnx's)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


@contextmanager
def _naming_failing_block(model):
    """Turn an exception raised inside a NonLocalBlock2d into an :class:`ExportError` naming it."""
    running = []  # (name, block) of the blocks being run, innermost last

    def enter(name):
        def hook(module, args):
            running.append((name, module))  # returns None: the input is left as it is
        return hook

    def leave(module, args, output):
        running.pop()  # a hook's return value would replace the block's output

    handles = []
    # Names as in the detector's state dict (without FlatDetector's "model.").
    for name, module in getattr(model, "model", model).named_modules():
        if isinstance(module, NonLocalBlock2d):
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave))
    try:
        yield
    except ExportError:
        raise
    except Exception as e:
        if running:
            name, block = running[-1]
            raise ExportError(
                f"block {name} (mode {block.mode!r}, fusion {block.fusion!r}) cannot be exported: {_first_line(e)}"
            ) from e
        raise ExportError(_first_line(e)) from e
    finally:
        for h in handles:
            h.remove()


def export_model_bytes(flat, image, fmt, method):
    """Export ``flat`` (a :class:`FlatDetector` or any module of one tensor) at ``image``.

    Args:
        flat (nn.Module): in eval mode.
        image (Tensor): the tracing input.
        fmt (str): "torchscript" or "onnx".
        method (str): one of ``EXPORT_FORMATS[fmt]``.

    Returns:
        bytes: the serialised model (``torch.jit.save`` or an ONNX file).

    Raises:
        ExportError: the export failed; the message names the block it failed in, if any.
    """
    if method not in EXPORT_FORMATS.get(fmt, ()):
        raise ExportError(f"format {fmt!r} has no export method {method!r}; expected one of {EXPORT_FORMATS}")
    buffer = io.BytesIO()
    # Hooks cannot be scripted, and scripting runs nothing: name the failing block only when run.
    naming = _naming_failing_block(flat) if method != "scripting" else _naming_failing_block(nn.Module())
    with naming, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings of detectron2's own shape checks
        if fmt == "torchscript":
            module = torch.jit.trace(flat, (image,), check_trace=False) if method == "tracing" \
                else torch.jit.script(flat)
            torch.jit.save(module, buffer)
        elif method == "tracing":
            torch.onnx.export(flat, (image,), buffer, dynamo=False, input_names=["image"],
                              output_names=list(OUTPUT_NAMES), opset_version=17,
                              dynamic_axes={"image": {1: "height", 2: "width"},
                                            **{n: {0: "detections"} for n in OUTPUT_NAMES}})
        else:
            dims = {1: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC}
            program = torch.onnx.export(flat, (image,), dynamo=True, input_names=["image"],
                                        output_names=list(OUTPUT_NAMES), dynamic_shapes={"image": dims},
                                        verbose=False)
            program.save(buffer)
    return buffer.getvalue()


def load_exported(data, fmt):
    """A callable ``image -> list of numpy arrays`` running the exported model (CPU)."""
    if fmt == "torchscript":
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")

        def run(image):
            with torch.no_grad():
                return [t.numpy() for t in module(image)]

        return run
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image.numpy()})


def eager_outputs(flat, image):
    with torch.no_grad():
        return [t.numpy() for t in flat(image)]


def max_difference(expected, got):
    """Largest absolute difference between two output lists; inf if a shape differs or a value is NaN.

    A different number of detections (e.g. a trace that kept the tracing image's count) is a
    shape difference, hence inf.
    """
    worst = 0.0
    for e, g in zip(expected, got):
        e, g = np.asarray(e), np.asarray(g)
        if e.shape != g.shape or not np.isfinite(g).all():
            return float("inf")
        if e.size:
            worst = max(worst, float(np.abs(e.astype(np.float64) - g.astype(np.float64)).max()))
    return worst if len(expected) == len(got) else float("inf")


def time_ratio(eager, exported, image, repeats=3):
    """Median wall time of ``exported(image)`` over that of ``eager(image)`` (after one warm-up each)."""
    def median_time(fn):
        fn(image)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(image)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    return median_time(exported) / median_time(eager)
