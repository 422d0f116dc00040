"""YOLOv8-seg on the embedded demo dataset: train, then score with pycocotools.

Needs the optional extra (``pip install -e '.[yolo]'``; Ultralytics is AGPL-3.0, see docs/yolov8.md).
Normal light, from scratch (7 minutes on 2 CPU cores: segm AP about 30 on the normal-light val
images), then a low-light fine-tune of the wNLB model from those weights::

    python tools/yolo_demo.py --output output/yolo_demo --minutes 7 --close-mosaic 3
    python tools/yolo_demo.py --output output/yolo_wnlb --model configs/yolo/yolov8n-seg-wnlb.yaml \\
        --plain-weights output/yolo_demo/train/weights/best.pt --low-light lv2021 \\
        --epochs 5 --lr0 1e-3 --warmup-epochs 1 --close-mosaic 2 --extra-val
"""

import argparse
import logging
import sys


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/yolo_demo", help="run folder (default output/yolo_demo)")
    p.add_argument("--model", default="yolov8n-seg.yaml", help="model YAML: a stock name or configs/yolo/...")
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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    extra = {"time": args.minutes / 60} if args.minutes else {}
    try:
        from wnlb_d2.yolo.weights import check_weights_file

        # Before anything runs: Ultralytics would take a missing `yolov8n-seg.pt` for a release
        # asset and look it up on GitHub, offline or not. (The model YAML is checked first thing
        # by train_yolo_row.)
        if args.plain_weights is not None:
            check_weights_file(args.plain_weights, "--plain-weights")
        from wnlb_d2.yolo.demo import run_demo

        summary = run_demo(args.output, model=args.model, train=args.train, val=args.val, extra_val=args.extra_val,
                           low_light=args.low_light, plain_weights=args.plain_weights, imgsz=args.imgsz,
                           epochs=args.epochs, batch=args.batch, lr0=args.lr0, close_mosaic=args.close_mosaic,
                           warmup_epochs=args.warmup_epochs, **extra)
    except (FileNotFoundError, KeyError, ValueError, PermissionError) as e:
        from wnlb_d2.data.mapper import worker_error_message

        # A data-loader worker's error: its message (which names the file), not its traceback.
        sys.exit(f"yolo_demo.py: error: {type(e).__name__}: {worker_error_message(e)}")
    for name, res in summary["results"].items():
        print(f"{name}: segm AP {res['segm']['AP']:.1f} AP50 {res['segm']['AP50']:.1f} | "
              f"bbox AP {res['bbox']['AP']:.1f} (pycocotools)")
    print(f"trained {summary['epochs']} epochs in {summary['train_seconds']:.0f} s; total {summary['seconds']:.0f} s; "
          f"{args.output}/demo.json")
    return 0


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    sys.exit(main_reporting_os_errors("yolo_demo.py", main))
