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

``--yolo`` also times Ultralytics' segment training dataset (``__getitem__``: one mosaic of 4
images, with Ultralytics' default augmentation hyperparameters at ``imgsz`` 640, batch 16) on a
set of the same crops, larger than the samples drawn so that each sample's own image is read
from disk as in an epoch over a large dataset: Ultralytics' ``YOLODataset`` (``stock``) against
``wnlb_d2.yolo.LowLightYOLODataset`` with each pipeline (``--yolo-fresh-tiles``: also with
every mosaic tile degraded afresh), in alternating rounds of ``--yolo-samples`` samples, and
prints its table and the CPU-time ratios of both paths side by side. Each YOLO dataset is built
and sampled in its own forked process, as a data-loader worker holds one dataset (in one process
their mosaic buffers fragment each other's heap); each process reports its own CPU time.

``--device-path`` times the training device path (``INPUT.LOW_LIGHT.ON_DEVICE``): its mapper
(reading, parameter draws, annotations; what a data-loader worker still does) as more rows of
the mapper table, and the degradation alone per image: NumPy's pipeline on the CPU against the
torch one (``render_torch`` with its resize and flip) on the CPU and, when CUDA is available,
per batch of 16 images on the GPU (synchronised), in alternating rounds.

Example (the figures of docs/data.md, "Speed")::

    python tools/benchmark_data.py --images 8 --rounds 5 --yolo --device-path --json output/bench_data.json
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

VARIANTS = ("stock", "lv2021", "unprocess")
#: Suffix of a mapper row on the training device path (the worker's share of it).
ON_DEVICE = " on device"
GPU_BATCH = 16
STOCK_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
CROP_H, CROP_W = 480, 640


def source_photos():
    """Paths of the real photos the crops are cut from (matplotlib's, then Ultralytics' if installed)."""
    import matplotlib.cbook

    paths = [matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)]
    # Found, not imported: wnlb_d2.yolo sets Ultralytics' environment before its first import.
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return paths
    assets = os.path.join(list(spec.submodule_search_locations)[0], "assets")
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


def build_config(pipeline=None, on_device=False):
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
        cfg.INPUT.LOW_LIGHT.ON_DEVICE = on_device
    return cfg


def build_mappers(variants):
    """``{name: mapper}`` for the names of :data:`VARIANTS`, in that order."""
    from detectron2.data import DatasetMapper

    from wnlb_d2.data import LowLightDatasetMapper

    def build(v):
        if v == "stock":
            return DatasetMapper(build_config(), is_train=True)
        on_device = v.endswith(ON_DEVICE)
        return LowLightDatasetMapper(build_config(v[:-len(ON_DEVICE)] if on_device else v, on_device), is_train=True)

    return {v: build(v) for v in variants}


def device_degraders(files, variants, devices):
    """``{name: callable(index)}``: the degradation alone of crop ``index``, NumPy against torch.

    ``<pipeline> numpy``: the NumPy pipeline on the 8-bit image; ``<pipeline> torch cpu``: the
    device path's step on the CPU (``render_torch``, then the image's resize and flip) on what its
    mapper ships; ``<pipeline> torch cuda``: the same for a batch of :data:`GPU_BATCH` images
    of one size on the GPU (one call degrades the batch; synchronised), so its time is per batch.
    """
    import numpy as np
    import torch

    from wnlb_d2.data.device_path import DeviceDegradation
    from wnlb_d2.data.image_io import read_image
    from wnlb_d2.data.synthesis.torch_render import draw_noise, render_torch

    images = [read_image(f) for f in files]
    dicts = dataset_dicts(files)
    out = {}
    for v in variants:
        mapper = build_mappers([v + ON_DEVICE])[v + ON_DEVICE]
        shipped = [mapper(d) for d in dicts]
        pipeline = mapper.pipeline
        rng = np.random.default_rng(0)
        out[f"{v} numpy"] = lambda i, p=pipeline, r=rng: p(images[i % len(images)], r, "BGR")
        hook = DeviceDegradation(pipeline, "BGR")
        out[f"{v} torch cpu"] = lambda i, h=hook, s=shipped: h.degrade(s[i % len(s)], torch.device("cpu"))
        if "cuda" in devices:
            batch = torch.stack([torch.from_numpy(images[k % len(images)].transpose(2, 0, 1))
                                 for k in range(GPU_BATCH)]).cuda()
            params = [s["low_light_device"]["params"] for s in (shipped * GPU_BATCH)[:GPU_BATCH]]
            gen = torch.Generator(device="cuda").manual_seed(0)

            def on_gpu(i, p=pipeline, b=batch, ps=params, g=gen):
                noise = draw_noise(p, len(ps), b.shape[2], b.shape[3], g, "cuda")
                render_torch(p, b, ps, noise, "BGR")
                torch.cuda.synchronize()
            out[f"{v} torch cuda (batch of {GPU_BATCH})"] = on_gpu
    return out


YOLO_IMGSZ = 640
YOLO_BATCH = 16
#: Suffix of a YOLO row whose mosaic tiles are each degraded afresh.
FRESH_TILES = " fresh tiles"


def write_yolo_set(folder, files, size):
    """Lay out a YOLO segment dataset of ``size`` images over the crops; returns its root.

    The crops in turn, linked under ``images/train`` as ``wnlb_d2.yolo.export_yolo_dataset``
    lays out a dataset, one polygon label each, and the export index.
    """
    from wnlb_d2.utils.io import atomic_write_json, atomic_write_text
    from wnlb_d2.yolo.convert import INDEX_VERSION

    root = os.path.join(folder, "yolo")
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(root, sub, "train"))
    # dataset_dicts' polygon, normalised.
    poly = [v / (CROP_W if k % 2 == 0 else CROP_H) for k, v in enumerate((200, 150, 440, 150, 440, 330, 200, 330))]
    label = "0 " + " ".join(f"{v:.6f}" for v in poly) + "\n"
    images = []
    for i in range(size):
        stem = f"{i:06d}"
        rel = os.path.join("images", "train", stem + ".jpg")
        os.symlink(files[i % len(files)], os.path.join(root, rel))
        atomic_write_text(os.path.join(root, "labels", "train", stem + ".txt"), label)
        images.append({"yolo_file": rel, "file_name": files[i % len(files)], "image_id": i, "height": CROP_H,
                       "width": CROP_W, "objects": 1})
    atomic_write_json(os.path.join(root, "train.wnlb.json"),
                      {"version": INDEX_VERSION, "names": {0: "thing"}, "category_ids": {0: 1}, "images": images})
    return root


def build_yolo_dataset(folder, root, variant, k):
    """Ultralytics' segment training dataset over :func:`write_yolo_set`'s ``root`` for a name of :data:`VARIANTS`.

    Ultralytics' default training hyperparameters for the segment task at ``imgsz`` 640, batch
    16 (mosaic of 4 images, random perspective, HSV, flip; the mosaic buffer holds the last
    min(size, 16 x 8) images loaded). ``stock`` is Ultralytics' own ``YOLODataset``
    (``build_yolo_dataset``); a pipeline is ``LowLightYOLODataset`` degrading training images
    with it (``train_seed`` 0); a name ending in :data:`FRESH_TILES` degrades every mosaic tile
    afresh (``LowLightSpec(fresh_tiles=True)``). ``k`` numbers its data YAML in ``folder``.
    """
    import logging

    import wnlb_d2.yolo  # noqa: F401  (Ultralytics' offline defaults before its import)
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset as build_stock
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import LOGGER

    from wnlb_d2.yolo.data import LowLightSpec, build_lowlight_dataset, write_data_yaml

    LOGGER.setLevel(logging.WARNING)  # its label scan's lines would interleave with the tables
    pipeline = variant[:-len(FRESH_TILES)] if variant.endswith(FRESH_TILES) else variant
    spec = LowLightSpec(None if variant == "stock" else pipeline, train_seed=0,
                        fresh_tiles=variant.endswith(FRESH_TILES))
    yaml_path = write_data_yaml(os.path.join(folder, f"data_{k}.yaml"), root, {0: "thing"}, train="train",
                                val="train", low_light=spec)
    data = check_det_dataset(yaml_path)
    cfg = get_cfg(overrides={"task": "segment", "imgsz": YOLO_IMGSZ, "data": yaml_path})
    build = build_stock if variant == "stock" else build_lowlight_dataset
    return build(cfg, data["train"], YOLO_BATCH, data, mode="train", stride=32)


class WorkerProcess:
    """A callable timed in its own forked process, as a data-loader worker holds one dataset.

    Several YOLO datasets in one process fragment each other's heap: their mosaic buffers hold
    image-sized arrays between the degradations' temporaries (``unprocess``: 3-4 ms and ~300
    minor page faults more per sample than alone). A worker builds its callable after the fork
    (``build()``, in the child) and answers :meth:`timed_run` with its own CPU time, wall time
    and page faults, so :func:`measure` alternates workers exactly as it alternates callables.

    Args:
        build (callable): returns the callable to time; called once, in the child.
        threads (int): OpenCV and torch threads in the child (0: leave them).

    Raises:
        RuntimeError: ``build`` failed in the child (its error, one line).
    """

    def __init__(self, build, threads=0):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")  # the child inherits ``build``: nothing is pickled
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=self._serve, args=(build, child, threads), daemon=True)
        self._process.start()
        child.close()
        reply = self._receive()
        if reply[0] == "error":
            self.close()
            raise RuntimeError(reply[1])

    @staticmethod
    def _serve(build, conn, threads):
        try:
            if threads:
                import cv2
                import torch

                torch.set_num_threads(threads)
            call = build()
            if threads:  # importing Ultralytics sets OpenCV's threads
                cv2.setNumThreads(threads)
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", f"{type(e).__name__}: {e}"))
            return
        conn.send(("ready",))
        while True:
            items = conn.recv()
            if items is None:
                return
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, w0 = time.process_time(), time.perf_counter()
            for item in items:
                call(item)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            conn.send((cpu, wall, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0))

    def _receive(self):
        try:
            return self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the benchmark's worker process died (exit code {self._process.exitcode})") from None

    def timed_run(self, items):
        """Call the worker's callable on every item; returns ``(cpu_s, wall_s, minor_faults)`` of the child."""
        self._conn.send(list(items))
        return self._receive()

    def close(self):
        """Stop the child process."""
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()


def yolo_workers(folder, files, variants, size, threads=0):
    """``{name: WorkerProcess}``: each :func:`build_yolo_dataset` built and sampled in its own process.

    Each worker samples its dataset as :func:`yolo_samplers` does (the same permutation and draws).
    Close them with :meth:`WorkerProcess.close`.
    """
    root = write_yolo_set(folder, files, size)
    workers = {}
    try:
        for k, v in enumerate(variants):
            workers[v] = WorkerProcess(
                lambda v=v, k=k: yolo_samplers({v: build_yolo_dataset(folder, root, v, k)})[v], threads)
    except BaseException:
        for w in workers.values():
            w.close()
        raise
    return workers


def yolo_samplers(datasets, seed=0):
    """``{name: callable(_)}``: each call returns the dataset's next training sample (a mosaic of 4 images).

    Every dataset walks the same permutation of its images, as an epoch does: with a set larger
    than the samples drawn, every sample's own image is read from disk and its three mosaic
    partners come from the buffer of recent images, as in training on a large dataset. Python's
    and NumPy's global generators (Ultralytics' augmentations draw from them) are seeded from the
    call's position first, so every dataset makes the same choices.
    """
    import random

    import numpy as np

    def sampler(ds):
        order = random.Random(seed).sample(range(len(ds)), len(ds))
        count = [0]

        def sample(_):
            k = count[0]
            count[0] += 1
            random.seed(k)
            np.random.seed(k)
            return ds[order[k % len(order)]]
        return sample

    return {n: sampler(ds) for n, ds in datasets.items()}


def measure(mappers, dicts, rounds, warmup=1):
    """Map every dict with every mapper, alternating, and time each image.

    Args:
        mappers (dict): name -> callable(dataset_dict), or an object whose ``timed_run(dicts)``
            maps them and returns its own ``(cpu_s, wall_s, minor_faults)`` (:class:`WorkerProcess`);
            the first is the reference of the ratios.
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
            if hasattr(mappers[n], "timed_run"):  # a WorkerProcess times itself
                cpu, wall, flt = mappers[n].timed_run(dicts)
            else:
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


def format_table(rows, images, rounds, allocator="project", what=None):
    """The Markdown table that :func:`main` prints (``what``: its first line's subject)."""
    what = what or f"{images} images (640x480 JPEG)"
    lines = [f"per-image medians over {rounds} alternating rounds of {what}, "
             f"ratios to {rows[0]['mapper']}; allocator: {allocator}",
             "| mapper | CPU ms | wall ms | minor faults | CPU ratio | wall ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mapper']} | {r['cpu_ms']:.2f} | {r['wall_ms']:.2f} | {r['minflt']:.0f} | "
                     f"{r['cpu_ratio']:.2f} | {r['wall_ratio']:.2f} |")
    return "\n".join(lines)


def format_side_by_side(mapper_rows, yolo_rows):
    """CPU-time ratios to the stock pipeline of each path, one row per pipeline (a Markdown table)."""
    yolo = {r["mapper"]: r["cpu_ratio"] for r in yolo_rows}
    fresh = any(n.endswith(FRESH_TILES) for n in yolo)
    lines = ["CPU-time ratios to stock, side by side",
             "| pipeline | detectron2 mapper | YOLO dataset |" + (" YOLO, fresh tiles |" if fresh else ""),
             "|---|---:|---:|" + ("---:|" if fresh else "")]
    for r in mapper_rows[1:]:
        n = r["mapper"]
        if n not in yolo:  # a device-path row: YOLO has none
            continue
        line = f"| {n} | {r['cpu_ratio']:.2f} | {yolo[n]:.2f} |"
        if fresh:
            line += f" {yolo[n + FRESH_TILES]:.2f} |" if n + FRESH_TILES in yolo else " |"
        lines.append(line)
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
    p.add_argument("--yolo", action="store_true",
                   help="also time Ultralytics' segment training dataset with and without low light (needs the "
                        "optional Ultralytics)")
    p.add_argument("--yolo-samples", type=int, default=32,
                   help="with --yolo: training samples (mosaics) per round (>= 1; default %(default)s)")
    p.add_argument("--yolo-fresh-tiles", action="store_true",
                   help="with --yolo: also time each pipeline with every mosaic tile degraded afresh")
    p.add_argument("--device-path", action="store_true",
                   help="also time the training device path (INPUT.LOW_LIGHT.ON_DEVICE): its mapper, and the "
                        "degradation alone in NumPy and in torch (CPU; and per batch on the GPU when CUDA is available)")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for key in ("images", "rounds", "yolo_samples"):
        if getattr(args, key) < 1:
            sys.exit(f"benchmark_data.py: error: --{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.yolo_fresh_tiles and not args.yolo:
        sys.exit("benchmark_data.py: error: --yolo-fresh-tiles needs --yolo")
    if args.yolo:
        import importlib.util

        if importlib.util.find_spec("ultralytics") is None:
            sys.exit("benchmark_data.py: error: --yolo needs Ultralytics: pip install 'wnlb_d2[yolo]'")
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
    mappers = build_mappers(["stock"] + args.variants + ([v + ON_DEVICE for v in args.variants]
                                                         if args.device_path else []))
    yolo_rows = device_rows = None
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="benchmark_data_") as folder:
        files = make_crops(folder, args.images)
        rows = measure(mappers, dataset_dicts(files), args.rounds)
        if args.device_path:
            devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
            degraders = device_degraders(files, args.variants, devices)
            device_rows = measure(degraders, list(range(len(files))), args.rounds)
        if args.yolo:
            names = ["stock"] + args.variants
            names += [v + FRESH_TILES for v in args.variants] if args.yolo_fresh_tiles else []
            # Each sample's own image read from disk: more images than the samples drawn. Each
            # dataset in its own process, as in a data-loader worker.
            workers = yolo_workers(folder, files, names, (args.rounds + 1) * args.yolo_samples, args.threads)
            try:
                yolo_rows = measure(workers, list(range(args.yolo_samples)), args.rounds)
            finally:
                for w in workers.values():
                    w.close()
    load.append(os.getloadavg()[0])
    print(format_table(rows, args.images, args.rounds, label))
    if yolo_rows is not None:
        print()
        print(format_table(yolo_rows, args.yolo_samples, args.rounds, label,
                           what=f"{args.yolo_samples} YOLO training samples (mosaics of 640x480 JPEGs, imgsz "
                                f"{YOLO_IMGSZ})"))
        print()
        print(format_side_by_side(rows, yolo_rows))
    if device_rows is not None:
        print()
        print(format_table(device_rows, args.images, args.rounds, label,
                           what=f"{args.images} degradations alone (640x480; the cuda rows: one batch of "
                                f"{GPU_BATCH} per call)"))
    print(f"load average {load[0]:.2f} before, {load[1]:.2f} after")
    if args.json:
        from wnlb_d2.utils.io import atomic_write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        results = {"args": vars(args), "results": rows, "load_average": load}
        if yolo_rows is not None:
            results["yolo"] = yolo_rows
        if device_rows is not None:
            results["device_path"] = device_rows
        atomic_write_json(args.json, results, indent=1)
    if args.device_path:
        return rows, yolo_rows, device_rows
    return (rows, yolo_rows) if args.yolo else rows


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from wnlb_d2.utils.io import main_reporting_os_errors

    main_reporting_os_errors("benchmark_data.py", main)
