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
    "output_differences", "time_ratio",
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
    R-CNN's 28 x 28 mask probabilities. For SOLOv2, its instances at the input size: ``(N, H, W)``
    mask *probabilities* (``pred_mask_probs``, before ``MODEL.SOLOV2.MASK_THRESH_TEST``; the
    binary mask is ``masks > mask_thresh``) and the boxes of those binary masks; traced, the
    padded candidates are reduced to the detections by boolean indexing, so the outputs' first
    dimension is dynamic, zero included.

    Probabilities rather than binary masks because a threshold is not continuous: onnxruntime's
    convolutions differ from torch's by about 1e-6, which flips a pixel whose probability is that
    close to the threshold (a difference of 1); at COCO sizes some nearly always is (measured:
    13 to 41 pixels an image at 600-938 x 800). Probabilities compare within float error
    (:func:`max_difference`).

    Attributes:
        mask_thresh (float or None): SOLOv2's mask threshold, which its boxes are computed at
            (for :func:`max_difference`); None for a GeneralizedRCNN.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.mask_thresh = None if hasattr(model, "roi_heads") else float(model.test_opts["mask_thresh"])

    def forward(self, image):
        inputs = [{"image": image}]
        if hasattr(self.model, "roi_heads"):
            with _one_image_without_splits():
                instances = self.model.inference(inputs, do_postprocess=False)[0]
            masks = instances.pred_masks if instances.has("pred_masks") else instances.scores.new_zeros((0,))
        else:
            instances = self.model(inputs, mask_probs=True)[0]["instances"]
            masks = instances.pred_mask_probs
        return instances.pred_boxes.tensor, instances.scores, instances.pred_classes, masks.float()


def _mask_probs_of_one_image(pred_mask_logits, pred_instances):
    """detectron2's ``mask_rcnn_inference`` for one image, without its per-image ``split``."""
    (instances,) = pred_instances
    if pred_mask_logits.size(1) == 1:  # class-agnostic masks
        probs = pred_mask_logits.sigmoid()
    else:
        indices = torch.arange(pred_mask_logits.shape[0], device=pred_mask_logits.device)
        probs = pred_mask_logits[indices, instances.pred_classes][:, None].sigmoid()
    instances.pred_masks = probs  # (N, 1, Hmask, Wmask)


@contextmanager
def _one_image_without_splits():
    """Run a GeneralizedRCNN on one image without detectron2's per-image ``split`` calls.

    detectron2 splits its batched proposals, probabilities and masks into images by sizes taken
    with ``len()`` (FastRCNNOutputLayers.predict_probs / predict_boxes, ``mask_rcnn_inference``).
    A trace records those sizes as constants, so a traced model fails (``split_with_sizes expects
    split_sizes to sum exactly to ...``) on any image whose number of proposals or detections
    differs from the tracing image's: with a score threshold, nearly every other image. With one
    image the split is the identity, so it is left out here; the outputs are unchanged.
    """
    from detectron2.modeling.roi_heads import mask_head
    from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

    saved = mask_head.mask_rcnn_inference, FastRCNNOutputLayers.predict_probs, FastRCNNOutputLayers.predict_boxes

    def predict_probs(layer, predictions, proposals):
        if len(proposals) != 1:
            return saved[1](layer, predictions, proposals)
        return (torch.nn.functional.softmax(predictions[0], dim=-1),)

    def predict_boxes(layer, predictions, proposals):
        if len(proposals) != 1:
            return saved[2](layer, predictions, proposals)
        deltas, boxes = predictions[1], proposals[0].proposal_boxes.tensor
        return (layer.box2box_transform.apply_deltas(deltas, boxes),)

    mask_head.mask_rcnn_inference = _mask_probs_of_one_image
    FastRCNNOutputLayers.predict_probs, FastRCNNOutputLayers.predict_boxes = predict_probs, predict_boxes
    try:
        yield
    finally:
        mask_head.mask_rcnn_inference, FastRCNNOutputLayers.predict_probs, FastRCNNOutputLayers.predict_boxes = saved


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


#: Indices of the boxes and masks in the flat outputs (:data:`OUTPUT_NAMES`).
BOXES, MASKS = OUTPUT_NAMES.index("boxes"), OUTPUT_NAMES.index("masks")
#: Added to the measured mask difference when bracketing SOLOv2's boxes: the float32 rounding of
#: the threshold itself (0.3 is 0.30000001 in float32), so a pixel at it counts as at it.
_THRESH_SLACK = 1e-7


def _boxes_of(masks):
    """Tight XYXY boxes of ``(N, H, W)`` bool masks (numpy), as ``masks_to_boxes``, and which are non-empty.

    Returns:
        tuple[ndarray, ndarray]: ``(N, 4)`` float64 boxes (zero for an empty mask), ``(N,)`` bool.
    """
    h, w = masks.shape[1:]
    cols, rows = masks.any(axis=1), masks.any(axis=2)  # (N, W), (N, H)
    xs, ys = np.arange(w), np.arange(h)
    boxes = np.stack([np.where(cols, xs, w).min(axis=1, initial=w), np.where(rows, ys, h).min(axis=1, initial=h),
                      np.where(cols, xs, -1).max(axis=1, initial=-1) + 1,
                      np.where(rows, ys, -1).max(axis=1, initial=-1) + 1], axis=1).astype(np.float64)
    nonempty = cols.any(axis=1)
    return boxes * nonempty[:, None], nonempty


def _box_excess(probs, boxes, mask_thresh, slack):
    """How far (pixels) each box lies outside the boxes that masks within ``slack`` of ``probs`` can have.

    A mask whose probabilities are within ``slack`` of ``probs`` contains ``probs > mask_thresh +
    slack`` (inner) and is contained in ``probs > mask_thresh - slack`` (outer), and a tight box
    grows with its mask: its left edge lies between the outer's and the inner's, and so on.

    Args:
        probs (ndarray): ``(N, H, W)`` eager mask probabilities.
        boxes (ndarray): ``(N, 4)`` exported XYXY boxes (zero for an empty mask).
        mask_thresh (float): the threshold the boxes' masks were made at.
        slack (float): the largest probability difference allowed.

    Returns:
        ndarray: ``(N,)`` float64, 0 where the box is one such a mask has.
    """
    probs = probs.astype(np.float64)
    inner, inner_any = _boxes_of(probs > mask_thresh + slack)
    outer, outer_any = _boxes_of(probs > mask_thresh - slack)
    # Bounds of x0, y0, x1, y1; with an empty inner mask, any non-empty part of the outer one.
    low = np.where(inner_any[:, None], np.concatenate([outer[:, :2], inner[:, 2:]], axis=1),
                   np.concatenate([outer[:, :2], outer[:, :2] + 1], axis=1))
    high = np.where(inner_any[:, None], np.concatenate([inner[:, :2], outer[:, 2:]], axis=1),
                    np.concatenate([outer[:, 2:] - 1, outer[:, 2:]], axis=1))
    excess = np.maximum(np.maximum(low - boxes, boxes - high), 0.0).max(axis=1, initial=0.0)
    empty = ~boxes.any(axis=1)  # the exported mask is empty: right only if the inner one is
    excess = np.where(empty, np.where(inner_any, inner.max(axis=1, initial=0.0), 0.0), excess)
    # An empty outer mask: only an empty box is right.
    return np.where(~outer_any, np.abs(boxes).max(axis=1, initial=0.0), excess)


def output_differences(expected, got, image_shape, mask_thresh=None):
    """Largest difference of each flat output (:data:`OUTPUT_NAMES`) between eager and exported.

    Box coordinates count as fractions of the image's longer side, as the YOLO export check's
    (:func:`wnlb_d2.yolo.export.output_difference`): float32 alone rounds a coordinate of a
    1333-px image by up to 6e-5 px, and the exported blocks' float error moves a coordinate in
    proportion to it (1.1e-4 px TorchScript, 3.6e-4 px ONNX near 60 px with open Gaussian blocks),
    so a fixed number of pixels is no scale-free tolerance. Scores, classes and masks (Mask
    R-CNN's 28 x 28 and SOLOv2's full-size probabilities) count as they are.

    With ``mask_thresh`` (SOLOv2: boxes of the masks ``probabilities > mask_thresh``), a box is
    compared with what the eager masks allow: a pixel whose probability lies within float error
    of the threshold may fall on either side of it in another runtime, and the box edge with it
    (by a pixel, or more for a lone pixel). A box counts as equal when it is the box of some mask
    whose probabilities are within ``d`` of eager's (``d`` the largest mask difference measured),
    and otherwise by how far it lies outside those boxes. So the masks' ``d`` must be within the
    tolerance, and a box that no such mask gives (an export that shifted it) is not.

    Args:
        expected, got (list[ndarray]): eager and exported ``(boxes, scores, classes, masks)``.
        image_shape (tuple[int, int]): ``(H, W)`` of the input image.
        mask_thresh (float or None): :attr:`FlatDetector.mask_thresh`.

    Returns:
        dict[str, float]: output name -> largest difference; every one ``inf`` if the number of
        outputs or any shape differs (a different number of detections, e.g. a trace that kept
        the tracing image's count) or an exported value is not finite.
    """
    expected, got = [np.asarray(e) for e in expected], [np.asarray(g) for g in got]
    inf = dict.fromkeys(OUTPUT_NAMES, float("inf"))
    if len(expected) != len(got) or len(got) != len(OUTPUT_NAMES):
        return inf
    if any(e.shape != g.shape or not np.isfinite(g).all() for e, g in zip(expected, got)):
        return inf
    diffs = {name: float(np.abs(e.astype(np.float64) - g.astype(np.float64)).max(initial=0.0))
             for name, e, g in zip(OUTPUT_NAMES, expected, got)}
    side = float(max(image_shape))
    if mask_thresh is None:
        diffs["boxes"] /= side
    else:
        excess = _box_excess(expected[MASKS], got[BOXES].astype(np.float64), mask_thresh,
                             diffs["masks"] + _THRESH_SLACK)
        diffs["boxes"] = float(excess.max(initial=0.0)) / side
    return diffs


def max_difference(expected, got, image_shape, mask_thresh=None):
    """The largest of :func:`output_differences` (``inf`` if a shape differs or a value is not finite)."""
    return max(output_differences(expected, got, image_shape, mask_thresh).values())


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
