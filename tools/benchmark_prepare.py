#!/usr/bin/env python
"""Speed of the offline low-light preparation against the read + write floor, timed in one run.

Builds ``--images`` 640x480 JPEG crops of real photos (those of ``tools/benchmark_data.py``:
matplotlib's sample photo and Ultralytics' assets when installed; a few dozen distinct crops,
hard-linked under the other names) and a COCO JSON listing them, in a temporary folder. Then,
in alternating rounds (the order swaps every round, so the load of a shared machine falls on
both alike), it times wall clock for

- ``floor``: the same ``--workers`` forked processes read each JPEG, decode it, encode it at
  the same JPEG quality and write it (no degradation, no manifest, no atomic rename): what any
  preparation of the set has to do;
- each ``--pipelines``: ``wnlb-prepare`` (``datasets/prepare_lowlight_coco.py``) with
  ``--workers``, as a user runs it (manifest, atomic and durable writes, annotation copy), into a
  fresh output folder.

It prints, per row, wall seconds, images/s, the projected time for ``--project`` images (5,000:
COCO val2017) and the ratio to the floor (median of the per-round ratios), then the CPU time per
image (this process and its workers), its ratio to the floor's, and the time ``--project`` images
would take at that CPU time on ``--workers`` idle cores; with the load average before and after.
Compare ratios on a shared machine: the wall times there depend on the other processes.

Example (the figures of docs/data.md, "Speed")::

    python tools/benchmark_prepare.py --images 1000 --rounds 3 --workers 2
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

PIPELINES = ("lv2021", "unprocess")
JPEG_QUALITY = 95  # wnlb-prepare's default, and the crops' own quality
DISTINCT_CROPS = 48


def _benchmark_data():
    """``tools/benchmark_data.py`` (its crops of real photos), loaded from beside this file."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_data.py")
    spec = importlib.util.spec_from_file_location("benchmark_data_tool", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_dataset(folder, count):
    """``count`` 640x480 JPEG crops of real photos under ``folder/images`` and a COCO JSON listing them.

    A few dozen crops are cut (each distinct); the other names are hard links to them (a copy
    where links are refused), so a large set costs little to build. Each image has its own id,
    hence its own degradation.

    Returns:
        tuple[str, str]: the image folder and the JSON's path.
    """
    images = os.path.join(folder, "images")
    os.makedirs(images)
    crops = _benchmark_data().make_crops(images, min(count, DISTINCT_CROPS))
    entries = []
    for i in range(count):
        name = f"{i:012d}.jpg"  # COCO's naming
        src = crops[i % len(crops)]
        dst = os.path.join(images, name)
        try:
            os.link(src, dst)
        except OSError:
            import shutil

            shutil.copyfile(src, dst)
        entries.append({"id": i + 1, "file_name": name, "height": 480, "width": 640})
    for c in crops:
        os.remove(c)
    coco = {"images": entries, "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    json_file = os.path.join(folder, "instances.json")
    from wnlb_d2.utils.io import atomic_write_json

    atomic_write_json(json_file, coco)
    return images, json_file


def _floor_one(task):
    import cv2

    src, dst = task
    image = cv2.imread(src, cv2.IMREAD_COLOR)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if image is None or not ok:
        raise OSError(f"could not re-encode {src}")
    with open(dst, "wb") as f:
        f.write(buf.tobytes())
    return len(buf)


def run_floor(images_dir, names, output, workers):
    """Read, decode, encode and write every image with ``workers`` forked processes; the wall seconds."""
    from wnlb_d2.utils.pool import process_pool

    t0 = time.perf_counter()
    os.makedirs(output)
    tasks = [(os.path.join(images_dir, n), os.path.join(output, n)) for n in names]
    if workers == 1:
        list(map(_floor_one, tasks))
    else:
        with process_pool(workers) as pool:
            list(pool.imap_unordered(_floor_one, tasks, chunksize=max(1, min(16, len(tasks) // (workers * 8)))))
            pool.close()
            pool.join()  # ended, not killed: their CPU time is counted
    return time.perf_counter() - t0


def run_prepare(images_dir, json_file, output, workers, pipeline):
    """``wnlb-prepare`` on the set (a fresh output, annotation copy beside it); the wall seconds."""
    from wnlb_d2.cli import prepare as command

    t0 = time.perf_counter()
    code = command.main(["--images", images_dir, "--annotations", json_file, "--output", output,
                         "--pipeline", pipeline, "--seed", "0", "--workers", str(workers),
                         "--jpeg-quality", str(JPEG_QUALITY), "--no-progress"])
    seconds = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"wnlb-prepare exited with {code} on the benchmark set")
    return seconds


def cpu_seconds():
    """CPU seconds (user + system) of this process and of its children that have ended."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(runners, count, rounds, project, workers=1):
    """Run every runner once per round (the order rotates each round) and summarise.

    Args:
        runners (dict): name -> callable(round index) returning wall seconds; the first is the
            reference of the ratios (the floor). Its CPU time is that of this process and of the
            children it waited for (a pool's workers).
        count (int): images per run.
        rounds (int): timed rounds.
        project (int): images to project the time of.
        workers (int): processes of a run, for the projection on idle cores.

    Returns:
        list[dict]: one row per runner: ``seconds`` (median wall), ``images_per_s``,
        ``projected_s`` (``project`` images at the median rate), ``ratio`` (median of the
        per-round wall ratios to the first runner), ``cpu_ms`` (median CPU per image),
        ``idle_projected_s`` (``project`` images at that CPU time on ``workers`` idle cores: what
        a quiet machine would take), ``cpu_ratio`` and the per-round ``seconds_all``, ``cpu_ms_all``.
    """
    names = list(runners)
    per = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            c0 = cpu_seconds()
            per[n].append(runners[n](r))
            cpu[n].append(1e3 * (cpu_seconds() - c0) / count)
    ref = names[0]
    rows = []
    for n in names:
        s, c = statistics.median(per[n]), statistics.median(cpu[n])
        rows.append({"run": n, "seconds": s, "images_per_s": count / s, "projected_s": project * s / count,
                     "ratio": statistics.median(a / b for a, b in zip(per[n], per[ref])),
                     "cpu_ms": c, "idle_projected_s": project * c / 1e3 / workers,
                     "cpu_ratio": statistics.median(a / b for a, b in zip(cpu[n], cpu[ref])),
                     "seconds_all": per[n], "cpu_ms_all": cpu[n]})
    return rows


def format_table(rows, images, rounds, workers, project, load_before, load_after):
    """The Markdown table that :func:`main` prints."""
    lines = [f"{images} 640x480 JPEGs, {workers} worker process(es), medians of {rounds} alternating rounds, "
             f"ratios to {rows[0]['run']}; {datetime.date.today().isoformat()}, {platform.machine()} with "
             f"{os.cpu_count()} cores; load average {load_before:.2f} before, {load_after:.2f} after",
             f"| run | seconds | images/s | {project} images (min) | ratio | CPU ms/image | CPU ratio | "
             f"{project} images on {workers} idle cores (min) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['seconds']:.2f} | {r['images_per_s']:.1f} | {r['projected_s'] / 60:.2f} | "
                     f"{r['ratio']:.2f} | {r['cpu_ms']:.2f} | {r['cpu_ratio']:.2f} | "
                     f"{r['idle_projected_s'] / 60:.2f} |")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000, help="640x480 JPEGs in the set (>= 1; default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (>= 1; default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="processes of both the floor and wnlb-prepare (>= 1)")
    p.add_argument("--pipelines", nargs="+", choices=PIPELINES, default=["lv2021"],
                   help="pipelines to prepare the set with (default: %(default)s)")
    p.add_argument("--project", type=int, default=5000,
                   help="images to project the time of (default %(default)s: COCO val2017)")
    p.add_argument("--folder", help="where to build the set (default: a temporary folder, removed at the end)")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for key in ("images", "rounds", "workers", "project"):
        if getattr(args, key) < 1:
            sys.exit(f"benchmark_prepare.py: error: --{key} must be >= 1, got {getattr(args, key)}")
    import logging
    import shutil

    # wnlb-prepare's INFO lines would interleave with the table; warnings and errors still show.
    logging.getLogger("wnlb_d2.data.prepare").setLevel(logging.WARNING)
    if args.folder:
        os.makedirs(args.folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="benchmark_prepare_", dir=args.folder) as folder:
        images_dir, json_file = make_dataset(os.path.join(folder, "set"), args.images)
        with open(json_file) as f:
            names = [im["file_name"] for im in json.load(f)["images"]]

        def floor(r):
            out = os.path.join(folder, f"floor_{r}")
            try:
                return run_floor(images_dir, names, out, args.workers)
            finally:
                shutil.rmtree(out, ignore_errors=True)

        def prepare(pipeline):
            def run(r):
                root = os.path.join(folder, f"{pipeline}_{r}")
                try:
                    return run_prepare(images_dir, json_file, os.path.join(root, "images"), args.workers, pipeline)
                finally:
                    shutil.rmtree(root, ignore_errors=True)
            return run

        runners = {"floor": floor}
        runners.update({f"wnlb-prepare {p}": prepare(p) for p in args.pipelines})
        load_before = os.getloadavg()[0]
        rows = measure(runners, args.images, args.rounds, args.project, args.workers)
        load_after = os.getloadavg()[0]
    print(format_table(rows, args.images, args.rounds, args.workers, args.project, load_before, load_after))
    if args.json:
        from wnlb_d2.utils.io import atomic_write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_json(args.json, {"args": vars(args), "date": datetime.date.today().isoformat(),
                                      "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                                      "load_average": [load_before, load_after], "results": rows}, indent=1)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from wnlb_d2.utils.io import main_reporting_os_errors

    main_reporting_os_errors("benchmark_prepare.py", main)
