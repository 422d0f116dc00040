"""YOLOv8-seg on the embedded demo dataset: train one row, score it and more test sets.

The command line is ``tools/yolo_demo.py``; :func:`run_demo` is the function behind it. By
default it trains ``yolov8n-seg`` (no blocks, from scratch: no COCO weights offline) at 128 px
on the 400 normal-light demo images and reports COCO segm/bbox AP on the 100 normal-light val
images and on their low-light versions, as the detectron2 rows are reported.
"""

import json
import logging
import os
import time

from .api import evaluate_yolo, train_yolo_row
from .data import LowLightSpec

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def run_demo(output, model="yolov8n-seg.yaml", train="wnlb_demo_train", val="wnlb_demo_val",
             extra_val=("wnlb_demo_val_lowlight",), low_light=None, plain_weights=None, imgsz=128, **train_args):
    """Train one row with :func:`train_yolo_row`, then score it on further test sets.

    Args:
        output (str): the run folder.
        model (str): model YAML (a stock name or ``configs/yolo/...``).
        train, val (str): registered datasets (``val`` is degraded too when ``low_light`` is set).
        extra_val (sequence of str): further registered test sets scored with the trained weights
            (as they are).
        low_light (str or LowLightSpec or None): pipeline (or spec) of the training (fresh) and
            ``val`` (seeded) degradation.
        plain_weights: a plain model's ``.pt`` to start from.
        imgsz (int): image size.
        **train_args: further arguments of :func:`train_yolo_row` (``epochs``, ``batch``,
            ``lr0``, ``close_mosaic``, ``time`` ...).

    Returns:
        dict: ``{"seconds", "train_seconds", "epochs", "results": {dataset: COCO metrics}}``,
        also written to ``<output>/demo.json``.
    """
    import wnlb_d2  # noqa: F401  (registers the demo datasets)

    spec = LowLightSpec.from_dict(low_light) if isinstance(low_light, dict) else (
        LowLightSpec(low_light) if low_light else None)
    t0 = time.perf_counter()
    results = {val: train_yolo_row(model, train, val, output, low_light=spec, plain_weights=plain_weights,
                                   imgsz=imgsz, **train_args)}
    with open(os.path.join(output, "row.json")) as f:
        row = json.load(f)
    for name in extra_val:
        results[name] = evaluate_yolo(row["weights"], name, os.path.join(output, f"eval_{name}"), imgsz=imgsz,
                                      batch=32)
    summary = {"seconds": time.perf_counter() - t0, "train_seconds": row["train_seconds"], "epochs": row["epochs"],
               "results": results}
    with open(os.path.join(output, "demo.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
