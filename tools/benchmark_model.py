#!/usr/bin/env python
"""Benchmark whole models: a stock detector (Mask R-CNN R50-FPN by default, or any config, e.g.
SOLOv2) vs NLB / wNLB backbones, time and peak memory.

For each image size, phase (inference; training step = forward + backward + SGD step), variant
(``stock``, ``nlb-res3-5``, ``wnlb-res3-5``, ``nlb-res2-5``, ``wnlb-res2-5``), pairwise mode
and sub-sampling (``MODEL.WNLB.SUB_SAMPLE``), one fresh subprocess builds the model, runs one
warm-up and ``--repeats`` timed runs, and reports the median time and the peak memory; ratios
are taken against the stock model measured in the same run.

Fair comparison: every variant gets the stock model's weights (seed 0), and the blocks start as
the identity, so all variants produce the same detections and their heads do the same work;
``SCORE_THRESH_TEST`` is 0, so inference always runs the mask head on
``TEST.DETECTIONS_PER_IMAGE`` (100) boxes, as a trained model on a busy image does (SOLOv2: its
score and update thresholds are 0, so its ``NMS_PRE_TOPK`` candidates go through Matrix NMS).

Peak memory: CPU: the rise of the resident set (``VmHWM`` reset through ``/proc/self/clear_refs``
after the warm-up, glibc's mmap threshold fixed at 64 KiB so freed blocks leave the resident
set); CUDA: ``torch.cuda.max_memory_allocated()`` minus what was allocated before; CUDA-event times.

On a shared CPU, other processes change timings: use ``--repeats 3`` or more (the median is
reported) and compare ratios measured in the same run.

Examples::

    python tools/benchmark_model.py --sizes 800x1333 --variants stock wnlb-res3-5 --modes embedded \\
        --sub-sample off on --skip-train --repeats 3
    python tools/benchmark_model.py --sizes 128x128 --repeats 5 --json bench_demo.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

VARIANTS = ("stock", "nlb-res3-5", "wnlb-res3-5", "nlb-res2-5", "wnlb-res2-5")
MODES = ("embedded", "gaussian", "dot", "concatenate")
PHASES = ("inference", "train")
DEFAULT_CONFIG = "model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
_STAGES = {"res3-5": ["res3", "res4", "res5"], "res2-5": ["res2", "res3", "res4", "res5"]}


def parse_size(text):
    """``"800x1333"`` -> ``(800, 1333)`` (height x width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 800x1333, got {text!r}")
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text!r}")
    return h, w


def variant_opts(variant, mode, sub_sample):
    """Config overrides that turn the stock config into ``variant``."""
    if variant == "stock":
        return []
    kind, stages = variant.split("-", 1)
    return ["MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone", "MODEL.WNLB.STAGES", str(_STAGES[stages]),
            "MODEL.WNLB.FUSION", "residual" if kind == "nlb" else "weighted", "MODEL.WNLB.MODE", mode,
            "MODEL.WNLB.SUB_SAMPLE", str(bool(sub_sample))]


def _build_cfg(args, opts):
    from detectron2.config import get_cfg

    import wnlb_d2

    cfg = get_cfg()
    wnlb_d2.add_wnlb_config(cfg)
    wnlb_d2.merge_from_file(cfg, args.config_file)
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device,
                         "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.SOLOV2.SCORE_THRESH_TEST", "0.0",
                         "MODEL.SOLOV2.UPDATE_THRESH_TEST", "0.0"] + opts)
    return cfg


def _fake_batch(h, w, device, num_classes, train):
    import torch
    from detectron2.structures import Boxes, Instances, PolygonMasks

    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).to(device)
    item = {"image": image, "height": h, "width": w}
    if train:
        # Three rectangles as ground truth: the losses, the samplers and the mask targets all run.
        boxes = [[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.9 * h],
                 [0.2 * w, 0.5 * h, 0.35 * w, 0.7 * h]]
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor([0, 1 % num_classes, 2 % num_classes])
        inst.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes])
        item["instances"] = inst.to(device)
    return [item]


def run_case(args):
    """Measure one (size, phase, variant, mode, sub-sample) in this process; returns a dict."""
    import torch
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from wnlb_d2.utils.measure import time_and_peak

    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = args.size
    # The stock weights for every variant (see the module docstring).
    torch.manual_seed(0)
    stock_state = build_model(_build_cfg(args, [])).state_dict() if args.variant != "stock" else None
    torch.manual_seed(0)
    cfg = _build_cfg(args, variant_opts(args.variant, args.mode, args.sub_sample))
    model = build_model(cfg)
    if stock_state is not None:
        missing, unexpected = model.load_state_dict(stock_state, strict=False)
        assert not unexpected and all(".wnlb." in k for k in missing), (missing, unexpected)
    train = args.phase == "train"
    solo = cfg.MODEL.META_ARCHITECTURE == "SOLOv2"
    num_classes = cfg.MODEL.SOLOV2.NUM_CLASSES if solo else cfg.MODEL.ROI_HEADS.NUM_CLASSES
    batch = _fake_batch(h, w, cfg.MODEL.DEVICE, num_classes, train)
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    if train:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.0, momentum=0.9)  # lr 0: same weights every repeat

        def step():
            torch.manual_seed(1)  # the same proposal sampling in every repeat
            with EventStorage():
                loss = sum(model(batch).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(batch)

    step()  # warm-up: lazy initialisation, allocator pools (time_and_peak synchronises CUDA)
    if args.profile:
        print_profile(step, args.profile, cuda)
    cpu = []
    times, peaks = time_and_peak(step, args.repeats, cuda, cpu_times=cpu)
    res = {"time_s": statistics.median(times), "times_s": times, "peak_bytes": max(peaks),
           "threads": torch.get_num_threads()}
    if cpu:  # CPU seconds: with --threads 1 on a shared machine, the work done (see measure.py)
        res["cpu_s"] = statistics.median(cpu)
    return res


def print_profile(step, rows, cuda):
    """Profile one ``step()`` with torch.profiler; print the top ``rows`` ops by self time to stderr."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        step()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=rows), file=sys.stderr, flush=True)


def cases(args):
    """The measured cases, stock first in every (size, phase) group."""
    out = []
    phases = [p for p in args.phases if not (args.skip_train and p == "train")]
    for size in args.sizes:
        for phase in phases:
            if "stock" in args.variants:
                out.append({"size": size, "phase": phase, "variant": "stock", "mode": None, "sub_sample": False})
            for variant in [v for v in args.variants if v != "stock"]:
                for mode in args.modes:
                    for sub in args.sub_sample:
                        out.append({"size": size, "phase": phase, "variant": variant, "mode": mode,
                                    "sub_sample": sub == "on"})
    return out


def measure(case, args):
    """Run one case in a fresh subprocess; returns its result dict (or ``{"error": ...}``)."""
    h, w = case["size"]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--variant", case["variant"],
           "--mode", case["mode"] or "embedded", "--size", f"{h}x{w}", "--phase", case["phase"],
           "--repeats", str(args.repeats), "--device", args.device, "--config-file", args.config_file,
           "--threads", str(args.threads), "--profile", str(args.profile)]
    if case["sub_sample"]:
        cmd.append("--sub-sample-on")
    # A fixed mmap threshold makes glibc map every block >= 64 KiB and unmap it on free, so the
    # resident set follows the live tensors (see tools/benchmark_nonlocal.py).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if args.profile:
        print(proc.stderr, file=sys.stderr, flush=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(lines[-1])


def add_ratios(rows):
    """Add ``time_ratio``, ``peak_ratio`` and ``cpu_ratio`` (CPU seconds, where both rows have
    ``cpu_s``) against the stock row of the same size and phase.

    Args:
        rows (list[dict]): cases with ``size``, ``phase``, ``variant`` and a ``result`` holding
            ``time_s`` and ``peak_bytes`` (or ``error``).

    Returns:
        list[dict]: the same rows; ratios are None where the stock row or the row itself failed
        or stock was not measured.
    """
    stock = {(tuple(r["size"]), r["phase"]): r["result"] for r in rows
             if r["variant"] == "stock" and "error" not in r["result"]}
    for r in rows:
        base = stock.get((tuple(r["size"]), r["phase"]))
        res = r["result"]
        ok = base is not None and "error" not in res
        r["time_ratio"] = res["time_s"] / base["time_s"] if ok else None
        r["peak_ratio"] = res["peak_bytes"] / max(base["peak_bytes"], 1) if ok else None
        r["cpu_ratio"] = res["cpu_s"] / base["cpu_s"] if ok and "cpu_s" in res and base.get("cpu_s") else None
    return rows


def format_row(r):
    h, w = r["size"]
    name = r["variant"] if r["variant"] == "stock" else f"{r['variant']} {r['mode']}{' sub' if r['sub_sample'] else ''}"
    res = r["result"]
    head = f"{h}x{w:<5} {r['phase']:9} {name:32}"
    if "error" in res:
        return f"{head} | failed: {res['error']}"
    tr = f"{r['time_ratio']:6.2f}x" if r["time_ratio"] is not None else "     -"
    pr = f"{r['peak_ratio']:6.2f}x" if r["peak_ratio"] is not None else "     -"
    cr = f"{r['cpu_ratio']:6.2f}x" if r.get("cpu_ratio") is not None else "     -"
    return f"{head} | {res['time_s']:8.3f} s {tr} | {cr} | {res['peak_bytes'] / 2**20:9.1f} MiB {pr}"


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[(800, 1333), (128, 128)], metavar="HxW",
                   help="image sizes (default 800x1333 128x128)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="models (default all)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="pairwise functions (default all)")
    p.add_argument("--sub-sample", nargs="+", choices=["off", "on"], default=["off", "on"],
                   help="MODEL.WNLB.SUB_SAMPLE values (default both)")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), help="default both")
    p.add_argument("--skip-train", action="store_true", help="inference only")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up; the median is reported")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch threads per case (default: torch's default)")
    p.add_argument("--config-file", default=DEFAULT_CONFIG,
                   help="stock detector config (default: model_zoo:// Mask R-CNN R50-FPN 3x)")
    p.add_argument("--json", help="also write every result to this JSON file")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="profile one extra step of each case (torch.profiler) and print its top ROWS ops by "
                        "self time (default 0: off)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--size", type=parse_size, help=argparse.SUPPRESS)
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--sub-sample-on", dest="sub_sample_on", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.repeats < 1:
        print(f"benchmark_model.py: error: --repeats must be >= 1, got {args.repeats}", file=sys.stderr)
        return 2
    if args.worker:
        args.sub_sample = args.sub_sample_on
        print(json.dumps(run_case(args)))
        return 0

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmark_model.py: error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    todo = cases(args)
    if not todo:
        print("benchmark_model.py: error: nothing to measure (check --variants/--phases/--skip-train)", file=sys.stderr)
        return 2
    print(f"# {args.config_file}, batch 1, device {args.device}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, threads {args.threads or torch.get_num_threads()}, median of {args.repeats}; "
          f"ratios vs stock of the same size and phase")
    print(f"{'size':11} {'phase':9} {'variant':32} | {'time':>10} {'ratio':>7} | {'cpu':>7} | {'peak memory':>13} "
          f"{'ratio':>7}")
    rows = []
    for case in todo:
        case = dict(case, result=measure(case, args))
        rows.append(case)
        add_ratios(rows)
        print(format_row(case), flush=True)
    failed = [r for r in rows if "error" in r["result"]]
    if args.json:
        from wnlb_d2.utils.io import atomic_write_json

        atomic_write_json(args.json, {"config_file": args.config_file, "device": args.device, "repeats": args.repeats,
                                      "torch": torch.__version__, "cpus": os.cpu_count(), "rows": rows}, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
