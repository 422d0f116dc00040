#!/usr/bin/env python
"""Cost of the non-local blocks inside YOLOv8-seg: the plain model against the model with blocks.

For each model scale (``--models``), input size (``--sizes``) and phase (``inference``: the
model's forward pass in eval mode, before NMS; ``train``: forward, Ultralytics' segmentation
loss on a fixed synthetic batch, backward and an AdamW step), one process builds the plain
model and the variants with blocks after P3-P5 (``--variants``: ``wnlb`` weighted,
``nlb`` residual fusion; the plain model's weights loaded, so the blocks start as the identity),
runs a warm-up of each and then ``--repeats`` rounds that time every model once in turn. It
reports the median CPU time (``time.process_time``: all threads of this process) and wall time
per model and the ratio to the plain model of the same round-robin.

CPU time with ``--threads 1`` is what to compare on a shared machine: other processes change
the wall time a lot and the CPU time of a single thread much less.

Example (the table of docs/results.md, "Cost: YOLOv8")::

    python tools/benchmark_yolo.py --models yolov8n-seg yolov8m-seg --sizes 640 128 --threads 1 \\
        --repeats 3 --json output/bench_yolo.json
"""

import argparse
import os
import statistics
import sys
import time

PHASES = ("inference", "train")
VARIANTS = ("wnlb", "nlb")


def synthetic_batch(batch, size, nc=80, objects=3):
    """A fixed training batch in Ultralytics' layout (overlapping masks at 1/4 resolution)."""
    import torch

    img = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    cls, boxes, idx = [], [], []
    masks = torch.zeros(batch, size // 4, size // 4)
    for b in range(batch):
        for k in range(objects):
            cx, cy, w, h = 0.25 + 0.25 * k, 0.3 + 0.2 * k, 0.2, 0.25
            cls.append([float(k % nc)])
            boxes.append([cx, cy, w, h])
            idx.append(float(b))
            m = size // 4
            masks[b, int((cy - h / 2) * m):int((cy + h / 2) * m), int((cx - w / 2) * m):int((cx + w / 2) * m)] = k + 1
    return {"img": img, "cls": torch.tensor(cls), "bboxes": torch.tensor(boxes), "batch_idx": torch.tensor(idx),
            "masks": masks}


def build_models(name, variants):
    """``{"plain": model, "wnlb": model, ...}``; the variants carry the plain model's weights."""
    import torch

    import wnlb_d2.yolo as wy  # first: its offline defaults apply before Ultralytics is imported
    from wnlb_d2.yolo.model_yaml import load_stock_yaml
    from ultralytics.cfg import get_cfg  # noqa: I001
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(0)
    models = {"plain": SegmentationModel(load_stock_yaml(f"{name}.yaml"), verbose=False)}
    for v in variants:
        d = wy.insert_nonlocal_blocks(f"{name}.yaml", fusion="weighted" if v == "wnlb" else "residual")
        models[v] = SegmentationModel(d, verbose=False)
        wy.load_plain_weights(models[v], models["plain"])
    for m in models.values():
        m.args = get_cfg()  # the loss reads its gains and overlap_mask from model.args
    return models


def _step(model, phase, batch, opt):
    import torch

    if phase == "inference":
        model.eval()
        with torch.no_grad():
            model(batch["img"])
    else:
        model.train()
        loss, _ = model.loss(batch)
        loss.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def run_case(name, size, phase, variants, repeats, batch):
    """Round-robin timing of one (model, size, phase); returns one dict per model."""
    import torch

    models = build_models(name, variants)
    data = synthetic_batch(batch, size)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) if phase == "train" else None for k, m in models.items()}
    times = {k: {"cpu": [], "wall": []} for k in models}
    for k, m in models.items():  # warm-up (allocator, kernel choice, the criterion's buffers)
        _step(m, phase, data, opts[k])
    for _ in range(repeats):
        for k, m in models.items():
            c0, w0 = time.process_time(), time.perf_counter()
            _step(m, phase, data, opts[k])
            times[k]["cpu"].append(time.process_time() - c0)
            times[k]["wall"].append(time.perf_counter() - w0)
    med = {k: {t: statistics.median(v) for t, v in d.items()} for k, d in times.items()}
    out = []
    for k in models:
        params = sum(p.numel() for p in models[k].parameters())
        out.append({"model": name, "size": size, "phase": phase, "variant": k, "batch": batch,
                    "threads": torch.get_num_threads(), "repeats": repeats, "params": params,
                    "cpu_s": med[k]["cpu"], "wall_s": med[k]["wall"],
                    "cpu_ratio": med[k]["cpu"] / med["plain"]["cpu"],
                    "wall_ratio": med[k]["wall"] / med["plain"]["wall"],
                    "cpu_all": times[k]["cpu"], "wall_all": times[k]["wall"]})
    return out


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["yolov8n-seg", "yolov8m-seg"],
                   help="stock model names (yolov8{n,s,m,l,x}-seg)")
    p.add_argument("--sizes", nargs="+", type=int, default=[640, 128], help="square input sizes (multiples of 32)")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["wnlb"], help="models with blocks")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after a warm-up; the median is reported")
    p.add_argument("--batch", type=int, default=1, help="images per step")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--json", help="also write every result to this JSON file")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    bad = [s for s in args.sizes if s < 32 or s % 32]
    if bad or args.repeats < 1 or args.batch < 1:
        sys.exit(f"benchmark_yolo.py: error: sizes must be multiples of 32 (got {bad or args.sizes}), "
                 f"repeats and batch >= 1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print("| model | input | phase | variant | params | CPU time | x plain | wall | x plain |")
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models:
        for size in args.sizes:
            for phase in args.phases:
                for r in run_case(name, size, phase, args.variants, args.repeats, args.batch):
                    rows.append(r)
                    print(f"| {r['model']} | {size} | {phase} | {r['variant']} | {r['params'] / 1e6:.2f} M | "
                          f"{r['cpu_s']:.3f} s | {r['cpu_ratio']:.2f} | {r['wall_s']:.3f} s | "
                          f"{r['wall_ratio']:.2f} |", flush=True)
    if args.json:
        from wnlb_d2.utils.io import atomic_write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_json(args.json, {"args": vars(args), "results": rows}, indent=1)
    return rows


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    main_reporting_os_errors("benchmark_yolo.py", main)  # main returns the rows, not an exit status
    sys.exit(0)
