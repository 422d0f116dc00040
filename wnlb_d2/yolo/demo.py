"""YOLOv8-seg on the embedded demo dataset: train, then score with pycocotools.

``python -m wnlb_d2.yolo.demo --output output/yolo_demo`` trains ``yolov8n-seg`` (no blocks,
from scratch: no COCO weights offline) at 128 px on the 400 normal-light demo images and
reports COCO segm/bbox AP on the 100 normal-light val images and on their low-light
versions, as detectron2's rows are reported. ``--model configs/yolo/yolov8n-seg-wnlb.yaml``
trains the wNLB model instead; ``--low-light lv2021`` trains on degraded images.
"""

import argparse
import json
import logging
import os
import sys
import time

__all__ = ["main"]

logger = logging.getLogger(__name__)


def build_parser():
    """The command line of the demo."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="output/yolo_demo", help="run folder")
    p.add_argument("--model", default="yolov8n-seg.yaml", help="model YAML (stock name or configs/yolo/...)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--minutes", type=float, default=None,
                   help="train for this long instead (Ultralytics re-plans the epochs after the first one)")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr0", type=float, default=2e-3)
    p.add_argument("--close-mosaic", type=int, default=5, help="last epochs without mosaic")
    p.add_argument("--warmup-epochs", type=float, default=3.0, help="Ultralytics' warm-up (epochs)")
    p.add_argument("--low-light", default=None, help="pipeline of the training/val degradation (default none)")
    p.add_argument("--plain-weights", default=None, help="start from a plain model's .pt")
    p.add_argument("--train", default="wnlb_demo_train")
    p.add_argument("--val", default="wnlb_demo_val")
    p.add_argument("--extra-val", nargs="*", default=["wnlb_demo_val_lowlight"],
                   help="further registered test sets scored with the trained weights")
    return p


def main(argv=None):
    """Run the demo; print and write ``<output>/demo.json``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import wnlb_d2  # noqa: F401  (registers the demo datasets)

    from . import LowLightSpec, evaluate_yolo, train_yolo_row

    spec = LowLightSpec(args.low_light) if args.low_light else None
    t0 = time.perf_counter()
    results = {args.val: train_yolo_row(args.model, args.train, args.val, args.output, low_light=spec,
                                        plain_weights=args.plain_weights, epochs=args.epochs, imgsz=args.imgsz,
                                        batch=args.batch, lr0=args.lr0, close_mosaic=args.close_mosaic,
                                        warmup_epochs=args.warmup_epochs,
                                        **({"time": args.minutes / 60} if args.minutes else {}))}
    with open(os.path.join(args.output, "row.json")) as f:
        row = json.load(f)
    for name in args.extra_val:
        results[name] = evaluate_yolo(row["weights"], name, os.path.join(args.output, f"eval_{name}"),
                                      imgsz=args.imgsz, batch=32)
    summary = {"seconds": time.perf_counter() - t0, "train_seconds": row["train_seconds"], "results": results}
    with open(os.path.join(args.output, "demo.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for name, res in results.items():
        print(f"{name}: segm AP {res['segm']['AP']:.1f} AP50 {res['segm']['AP50']:.1f} | "
              f"bbox AP {res['bbox']['AP']:.1f} (pycocotools)")
    print(f"trained in {row['train_seconds']:.0f} s; total {summary['seconds']:.0f} s; {args.output}/demo.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
