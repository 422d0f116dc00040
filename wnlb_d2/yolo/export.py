"""How far an exported YOLO segmentation model (TorchScript, ONNX) is from the eager model.

``YOLO(...).export(format="torchscript" | "onnx")`` writes a file; :func:`export_difference`
runs that file and the eager model on the same images and returns the largest difference of
their raw outputs (``output0``: boxes, class scores and mask coefficients per anchor;
``output1``: mask prototypes), before any threshold or NMS. Box coordinates are in pixels, so
they are compared as a fraction of the image side: a 1e-4 tolerance then means the same thing
for a 64-pixel and a 1280-pixel image, where float32 alone rounds pixel coordinates by 6e-5.

Example::

    import wnlb_d2.yolo
    from ultralytics import YOLO
    from wnlb_d2.yolo.export import export_difference

    model = YOLO("configs/yolo/yolov8n-seg-wnlb.yaml")
    path = model.export(format="onnx", imgsz=640, dynamic=True)
    print(export_difference(model, path, [(480, 640), (736, 736)]))
"""

import copy
import logging
import os

import torch

__all__ = ["EXPORT_TOLERANCE", "eager_outputs", "exported_outputs", "output_difference", "export_difference",
           "check_exported_file"]

logger = logging.getLogger(__name__)

#: Rows of ``output0`` that are box coordinates (x, y, w, h in pixels); the rest are class
#: scores and mask coefficients.
BOX_ROWS = 4


def _inference_copy(model):
    """A fused, evaluation-mode float copy of a ``YOLO`` object's (or a detection model's) network,
    as Ultralytics' predictor runs it (AutoBackend fuses Conv + BatchNorm, as the exporter does)."""
    net = getattr(model, "model", model)
    return copy.deepcopy(net).float().fuse(verbose=False).eval()


def eager_outputs(model, images):
    """``(output0, output1)`` of the eager model, as the exported file names them.

    Args:
        model: an Ultralytics ``YOLO`` object (or its ``SegmentationModel``); not modified.
        images (Tensor): ``(B, 3, H, W)`` float in [0, 1].

    Returns:
        tuple[Tensor, Tensor]: predictions ``(B, 4 + classes + masks, anchors)`` and mask
        prototypes ``(B, masks, H/4, W/4)``.
    """
    with torch.no_grad():
        out = _inference_copy(model)(images)
    (predictions, protos), _ = out  # Segment head in eval mode: ((outputs, proto), raw predictions)
    return predictions, protos


def exported_outputs(path, images):
    """``(output0, output1)`` of an exported ``.torchscript`` or ``.onnx`` file.

    Args:
        path (str): the file ``YOLO.export`` returned.
        images (Tensor): ``(B, 3, H, W)`` float in [0, 1].

    Returns:
        tuple[Tensor, Tensor]

    Raises:
        ValueError: a format this function cannot run (named with the file).
    """
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".torchscript":
        with torch.no_grad():
            out = torch.jit.load(path, map_location="cpu")(images)
        return tuple(out)
    if suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return tuple(torch.from_numpy(o) for o in session.run(None, {name: images.numpy()}))
    raise ValueError(f"export_difference: {path!r} is neither a .torchscript nor an .onnx file")


def output_difference(expected, got, image_shape):
    """Largest difference between two ``(output0, output1)`` pairs, box rows relative to the image side.

    Args:
        expected, got (tuple[Tensor, Tensor]): eager and exported outputs.
        image_shape (tuple[int, int]): ``(H, W)`` of the input.

    Returns:
        float: ``inf`` when the shapes differ or either side has a NaN.

    Raises:
        ValueError: the two do not have the same number of outputs.
    """
    if len(expected) != len(got):
        raise ValueError(f"eager gives {len(expected)} outputs, the export {len(got)}")
    side = float(max(image_shape))
    worst = 0.0
    for i, (a, b) in enumerate(zip(expected, got)):
        a, b = a.float(), b.float()
        if a.shape != b.shape:
            logger.warning(f"output{i}: eager shape {tuple(a.shape)}, exported {tuple(b.shape)}")
            return float("inf")
        diff = (a - b).abs()
        if i == 0:  # box coordinates in pixels -> fractions of the image side
            diff[:, :BOX_ROWS] /= side
        worst = max(worst, float(diff.nan_to_num(nan=float("inf")).max()))  # a NaN on either side: inf
    return worst


def export_difference(model, path, sizes, seed=0, batch=1):
    """Largest difference between an exported file and the eager model, per image size.

    Args:
        model: the ``YOLO`` object the file was exported from.
        path (str): the exported ``.torchscript`` or ``.onnx`` file.
        sizes (list[tuple[int, int]]): ``(H, W)`` of the images to compare on (a file traced
            without dynamic shapes runs only at its export size).
        seed (int): seed of the random images.
        batch (int): images per size.

    Returns:
        dict[tuple[int, int], float]: size -> :func:`output_difference`.
    """
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for h, w in sizes:
        images = torch.rand(batch, 3, h, w, generator=generator)
        result[(h, w)] = output_difference(eager_outputs(model, images), exported_outputs(path, images), (h, w))
    return result


#: Largest difference an exported file may have from the eager model (box rows relative to the image side).
EXPORT_TOLERANCE = 1e-4


def check_exported_file(model, path, sizes, tolerance=EXPORT_TOLERANCE, batch=1):
    """Compare an exported file with its eager model; remove the file when it differs.

    Args:
        model: the ``YOLO`` object the file was exported from.
        path (str): the exported ``.torchscript`` or ``.onnx`` file.
        sizes (list[tuple[int, int]]): ``(H, W)`` to compare on; the first is the export size.
        tolerance (float): the largest difference allowed.
        batch (int): images per size (the export's batch).

    Returns:
        dict[tuple[int, int], float]: size -> largest difference, all within ``tolerance``.

    Raises:
        ValueError: a difference above ``tolerance`` (or a NaN, or another output shape), naming
            the file, the size and the difference; the file has been removed, so no file that
            gives other outputs than the model it came from is left behind.
    """
    differences = export_difference(model, path, sizes, batch=batch)
    for size, difference in differences.items():
        if not difference <= tolerance:
            os.remove(path)
            raise ValueError(f"{os.fspath(path)} gives other outputs than the eager model at {size[0]}x{size[1]} "
                             f"(largest difference {difference:.3g} > {tolerance:g}); the file was removed")
    return differences
