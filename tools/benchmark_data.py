#!/usr/bin/env python
"""Cost of the low-light data mapper per training image, against detectron2's stock DatasetMapper.

Cuts ``--images`` 640x480 JPEG crops from real photos shipped with installed packages
(matplotlib's sample data, and Ultralytics' assets when installed), then maps each crop with

- ``stock``: ``detectron2.data.DatasetMapper(cfg, is_train=True)``,
- ``lv2021`` and ``unprocess``: ``wnlb_d2``'s ``LowLightDatasetMapper`` with that pipeline,

all built from the same stock config (Mask R-CNN R50-FPN 3x: ResizeShortestEdge (640..800)
max 1333 and RandomFlip; one box with a polygon mask per image, so annotations are mapped too).
After a warm-up, ``--rounds`` rounds map every image once with every mapper in turn (the order
rotates each round), all in this one process, so the load of a shared machine falls on all of
them alike. It prints the median per-image CPU time (``time.process_time``: all threads of this
process), wall time and minor page faults, and each mapper's CPU-time ratio to ``stock`` (the
median of the per-round ratios). Compare ratios, not absolute times, on a loaded machine.

The allocator settings are process-wide, so they apply to every mapper of a run alike:
``--allocator project`` (default) applies ``wnlb_d2.utils.allocator.tune_allocator`` first, as
every process that maps images for wnlb_d2 does (the stock mapper is timed in it too);
``--allocator glibc`` keeps glibc's defaults (as a plain detectron2 data-loader worker has them).

Example (the figures of docs/data.md, "Speed")::

    python tools/benchmark_data.py --images 8 --rounds 5 --json output/bench_data.json
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

VARIANTS = ("stock", "lv2021", "unprocess")
STOCK_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
CROP_H, CROP_W = 480, 640


def source_photos():
    """Paths of the real photos the crops are cut from (matplotlib's, then Ultralytics' if installed)."""
    import matplotlib.cbook

    paths = [matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)]
    try:
        import ultralytics
    except ImportError:
        return paths
    assets = os.path.join(os.path.dirname(ultralytics.__file__), "assets")
    paths += [os.path.join(assets, n) for n in ("bus.jpg", "zidane.jpg") if os.path.isfile(os.path.join(assets, n))]
    return paths


def make_crops(folder, count):
    """Write ``count`` 640x480 JPEG crops (quality 95) of the source photos into ``folder``.

    A photo smaller than the crop is enlarged first; crops of one photo start at different offsets.

    Returns:
        list[str]: the crop files.
    """
    import cv2
    import numpy as np

    photos = [cv2.imread(p) for p in source_photos()]
    files = []
    for i in range(count):
        img = photos[i % len(photos)]
        scale = max(CROP_H / img.shape[0], CROP_W / img.shape[1], 1.0)
        if scale > 1.0:
            img = cv2.resize(img, (int(np.ceil(img.shape[1] * scale)), int(np.ceil(img.shape[0] * scale))),
                             interpolation=cv2.INTER_CUBIC)
        k = i // len(photos)
        y = (k * 37) % (img.shape[0] - CROP_H + 1)
        x = (k * 53) % (img.shape[1] - CROP_W + 1)
        path = os.path.join(folder, f"crop_{i:03d}.jpg")
        if not cv2.imwrite(path, img[y:y + CROP_H, x:x + CROP_W], [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"could not write {path}")
        files.append(path)
    return files


def dataset_dicts(files):
    """detectron2 dataset dicts for the crops: one box with a polygon mask each."""
    from detectron2.structures import BoxMode

    poly = [200.0, 150.0, 440.0, 150.0, 440.0, 330.0, 200.0, 330.0]
    return [{"file_name": f, "image_id": i, "height": CROP_H, "width": CROP_W,
             "annotations": [{"bbox": [200.0, 150.0, 440.0, 330.0], "bbox_mode": BoxMode.XYXY_ABS,
                              "category_id": 0, "segmentation": [poly], "iscrowd": 0}]}
            for i, f in enumerate(files)]


def build_config(pipeline=None):
    """The stock R50-FPN 3x config (with wnlb_d2's keys); low light on with ``pipeline``."""
    from detectron2.config import get_cfg

    import wnlb_d2

    cfg = get_cfg()
    wnlb_d2.add_wnlb_config(cfg)
    wnlb_d2.merge_from_file(cfg, wnlb_d2.MODEL_ZOO_PREFIX + STOCK_CONFIG)
    if pipeline:
        cfg.INPUT.LOW_LIGHT.ENABLED = True
        cfg.INPUT.LOW_LIGHT.PIPELINE = pipeline
        cfg.INPUT.LOW_LIGHT.TRAIN_SEED = 0
    return cfg


def build_mappers(variants):
    """``{name: mapper}`` for the names of :data:`VARIANTS`, in that order."""
    from detectron2.data import DatasetMapper

    from wnlb_d2.data import LowLightDatasetMapper

    return {v: DatasetMapper(build_config(), is_train=True) if v == "stock"
            else LowLightDatasetMapper(build_config(v), is_train=True) for v in variants}


def measure(mappers, dicts, rounds, warmup=1):
    """Map every dict with every mapper, alternating, and time each image.

    Args:
        mappers (dict): name -> callable(dataset_dict); the first is the reference of the ratios.
        dicts (list[dict]): the images.
        rounds (int): timed rounds; the order of the mappers rotates by one each round.
        warmup (int): untimed rounds first.

    Returns:
        list[dict]: one row per mapper: ``cpu_ms``, ``wall_ms``, ``minflt`` (medians over rounds
        of the per-image means), ``cpu_ratio``, ``wall_ratio`` (medians of the per-round ratios
        to the first mapper) and the per-round ``cpu_ms_all``.
    """
    names = list(mappers)
    per = {n: {"cpu": [], "wall": [], "minflt": []} for n in names}
    for r in range(-warmup, rounds):
        order = names[r % len(names):] + names[:r % len(names)] if r >= 0 else names
        for n in order:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, w0 = time.process_time(), time.perf_counter()
            for d in dicts:
                mappers[n](d)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            if r >= 0:
                per[n]["cpu"].append(1e3 * cpu / len(dicts))
                per[n]["wall"].append(1e3 * wall / len(dicts))
                per[n]["minflt"].append(flt / len(dicts))
    ref = names[0]
    rows = []
    for n in names:
        ratio = lambda k: statistics.median(a / b for a, b in zip(per[n][k], per[ref][k]))  # noqa: E731
        rows.append({"mapper": n, "cpu_ms": statistics.median(per[n]["cpu"]),
                     "wall_ms": statistics.median(per[n]["wall"]), "minflt": statistics.median(per[n]["minflt"]),
                     "cpu_ratio": ratio("cpu"), "wall_ratio": ratio("wall"), "cpu_ms_all": per[n]["cpu"]})
    return rows


def format_table(rows, images, rounds, allocator="project"):
    """The Markdown table that :func:`main` prints."""
    lines = [f"per-image medians over {rounds} alternating rounds of {images} images (640x480 JPEG), "
             f"ratios to {rows[0]['mapper']}; allocator: {allocator}",
             "| mapper | CPU ms | wall ms | minor faults | CPU ratio | wall ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mapper']} | {r['cpu_ms']:.2f} | {r['wall_ms']:.2f} | {r['minflt']:.0f} | "
                     f"{r['cpu_ratio']:.2f} | {r['wall_ratio']:.2f} |")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8, help="640x480 crops mapped per round (>= 1)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round (>= 1)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS[1:], default=list(VARIANTS[1:]),
                   help="low-light pipelines to compare with the stock mapper")
    p.add_argument("--threads", type=int, default=1,
                   help="OpenCV and torch threads (default 1, as in a data-loader worker; 0 keeps the libraries' "
                        "defaults)")
    p.add_argument("--allocator", choices=("project", "glibc"), default="project",
                   help="project: wnlb_d2's malloc settings for every mapper (default); glibc: glibc's defaults")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for key in ("images", "rounds"):
        if getattr(args, key) < 1:
            sys.exit(f"benchmark_data.py: error: --{key} must be >= 1, got {getattr(args, key)}")
    if args.threads < 0:
        sys.exit(f"benchmark_data.py: error: --threads must be >= 0, got {args.threads}")
    import cv2
    import torch

    from wnlb_d2.utils import allocator

    if args.threads:
        cv2.setNumThreads(args.threads)
        torch.set_num_threads(args.threads)
    if args.allocator == "glibc":
        os.environ[allocator.ENV_VAR] = "0"  # LowLightDatasetMapper's first call leaves glibc alone
    applied = allocator.tune_allocator()
    if args.allocator == "glibc" and applied:
        sys.exit("benchmark_data.py: error: --allocator glibc: this process already has the project's malloc "
                 "settings; run the tool in a fresh process")
    label = args.allocator if applied or args.allocator == "glibc" else "project (not in effect: not glibc)"
    mappers = build_mappers(["stock"] + args.variants)
    with tempfile.TemporaryDirectory(prefix="benchmark_data_") as folder:
        dicts = dataset_dicts(make_crops(folder, args.images))
        rows = measure(mappers, dicts, args.rounds)
    print(format_table(rows, args.images, args.rounds, label))
    if args.json:
        from wnlb_d2.utils.io import atomic_write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_json(args.json, {"args": vars(args), "results": rows}, indent=1)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from wnlb_d2.utils.io import main_reporting_os_errors

    main_reporting_os_errors("benchmark_data.py", main)
