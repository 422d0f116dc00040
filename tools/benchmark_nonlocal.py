#!/usr/bin/env python
"""Benchmark one non-local block: efficient vs reference, forward+backward time and peak memory.

For each ResNet stage after which a block can sit (res2..res5 of an ``--height x --width``
image, padded to a multiple of 32 as detectron2's FPN does) and each pairwise function, runs
forward+backward of one :class:`NonLocalBlock2d` with ``impl="efficient"`` and with
``impl="reference"`` and prints them side by side with their ratios, measured in the same run.

Each measurement runs in a fresh subprocess, so peak memory is that run's alone. On the CPU the
process's CPU time is reported too ("cpu eff/ref"): with ``--threads 1`` on a shared machine it
measures the work done, where wall time also measures how much CPU the other jobs left. With
``--rounds R`` the efficient and reference processes alternate R times and each ratio is the
median of the rounds' ratios, so that both sides of a ratio ran under the same load.

* CPU: peak resident memory during forward+backward (``VmHWM``, reset through
  ``/proc/self/clear_refs`` after a warm-up run) minus the resident memory before it.
* CUDA: ``torch.cuda.max_memory_allocated()`` minus the memory allocated before it; times
  from CUDA events.

A reference run whose N x N matrices would not fit in the available memory is skipped (and
says so) instead of running the machine out of memory.

Usage::

    python tools/benchmark_nonlocal.py                      # all stages and modes, CPU
    python tools/benchmark_nonlocal.py --stages res3 --modes embedded dot --device cuda
    python tools/benchmark_nonlocal.py --stages res3 --modes embedded --softmax-kernel fused --threads 1
    python tools/benchmark_nonlocal.py --stages res3 res4 res5 --threads 1 --rounds 3 --min-seconds 10  # loaded
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

STAGES = {"res2": (4, 256), "res3": (8, 512), "res4": (16, 1024), "res5": (32, 2048)}  # stride, channels
MODES = ("embedded", "gaussian", "dot", "concatenate")
# The reference keeps about this many N x M float32 matrices alive at its peak (affinity,
# normalised affinity, and their gradients during backward).
REFERENCE_MATRICES = 4


def _available_bytes(device):
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not in /proc/meminfo")


def feature_size(stage, height, width):
    """(H, W, C) of the feature map after ``stage`` for an image padded to a multiple of 32."""
    stride, channels = STAGES[stage]
    ph, pw = math.ceil(height / 32) * 32, math.ceil(width / 32) * 32
    return ph // stride, pw // stride, channels


def run_one(args):
    """Measure one (stage, mode, impl) in this process; returns a dict."""
    import torch

    from wnlb_d2.layers import NonLocalBlock2d
    from wnlb_d2.utils.measure import time_and_peak

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w, c = feature_size(args.stage, args.height, args.width)
    n = h * w
    m = n // 4 if args.sub_sample else n
    if args.impl == "reference":
        need = REFERENCE_MATRICES * args.batch * n * m * 4
        avail = _available_bytes(args.device)
        if need > 0.8 * avail:
            return {"skipped": f"N x N matrices need ~{need / 2**30:.0f} GiB, {avail / 2**30:.0f} GiB available"}
    dev = torch.device(args.device)
    block = NonLocalBlock2d(c, mode=args.mode, impl=args.impl, sub_sample=args.sub_sample,
                            softmax_kernel=args.softmax_kernel).to(dev)
    with torch.no_grad():
        block.fusion_weight.fill_(0.5)
    x = torch.randn(args.batch, c, h, w, device=dev) * 0.1
    x.requires_grad_(True)  # the stage before the block is trained too
    grad_z = torch.randn_like(x)

    def step():
        z = block(x)
        z.backward(grad_z)  # a fixed upstream gradient: no loss tensors in the measurement
        block.zero_grad(set_to_none=True)
        x.grad = None

    start = time.perf_counter()
    for _ in range(args.warmup):  # lazy initialisation, allocator pools
        step()
    warm = (time.perf_counter() - start) / max(args.warmup, 1)
    repeats = args.repeats
    if args.min_seconds and args.warmup:
        # Short cases get more timed runs (their median is less noisy); long ones keep --repeats.
        repeats = max(repeats, math.ceil(args.min_seconds / max(warm, 1e-3)))
    cpu = []
    times, peaks = time_and_peak(step, repeats, cuda=dev.type == "cuda", cpu_times=cpu)
    res = {"time_s": sorted(times)[len(times) // 2], "peak_extra_bytes": max(peaks), "n": n, "repeats": repeats}
    if cpu:
        res["cpu_s"] = sorted(cpu)[len(cpu) // 2]
    return res


def _measure(stage, mode, impl, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--stage", stage, "--mode", mode,
           "--impl", impl, "--height", str(args.height), "--width", str(args.width),
           "--batch", str(args.batch), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--min-seconds", str(args.min_seconds),
           "--device", args.device, "--threads", str(args.threads), "--softmax-kernel", args.softmax_kernel]
    if args.sub_sample:
        cmd.append("--sub-sample")
    # A fixed mmap threshold makes glibc map every block >= 64 KiB and unmap it on free, so the
    # resident set follows the live tensors (the default dynamic threshold would keep freed
    # warm-up memory in the heap and hide later peaks).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"skipped": f"failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _rounds(stage, mode, args):
    """Measure efficient and reference ``args.rounds`` times, alternating, and combine them.

    On a shared machine the share of CPU (and of caches) left by other jobs drifts over
    minutes; measuring the two back to back in each round and taking the median of the rounds'
    ratios compares them under the same load. Times are the rounds' medians, peaks their
    maximum, and each ratio the median of the per-round ratios (``ratios``).
    """
    effs, refs = [], []
    for _ in range(args.rounds):
        effs.append(_measure(stage, mode, "efficient", args))
        if refs and "skipped" in refs[0]:
            continue  # not measurable here; one reason is enough
        refs.append(_measure(stage, mode, "reference", args))
    for runs in (effs, refs):
        if any("skipped" in r for r in runs):
            runs[:] = [next(r for r in runs if "skipped" in r)]
    if len(effs) == 1 and len(refs) == 1:
        return effs[0], refs[0], {}
    ratios = {}
    if "skipped" not in effs[0] and "skipped" not in refs[0]:
        for key in ("time_s", "cpu_s"):
            if all(key in r for r in effs + refs):
                ratios[key] = _median([e[key] / r[key] for e, r in zip(effs, refs)])
        ratios["peak_extra_bytes"] = _median([e["peak_extra_bytes"] / max(r["peak_extra_bytes"], 1)
                                              for e, r in zip(effs, refs)])

    def combine(runs):
        if "skipped" in runs[0]:
            return runs[0]
        out = {"n": runs[0]["n"], "time_s": _median([r["time_s"] for r in runs]),
               "peak_extra_bytes": max(r["peak_extra_bytes"] for r in runs), "rounds": runs}
        if all("cpu_s" in r for r in runs):
            out["cpu_s"] = _median([r["cpu_s"] for r in runs])
        return out

    return combine(effs), combine(refs), ratios


def _ratio(eff, ref, key, ratios=None):
    if ratios and key in ratios:
        return f"{ratios[key]:.2f}"
    return f"{eff[key] / ref[key]:.2f}" if key in eff and key in ref and ref[key] > 0 else "-"


def _fmt_mem(b):
    return f"{b / 2**20:9.1f} MiB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--height", type=int, default=800, help="image height (default 800)")
    parser.add_argument("--width", type=int, default=1333, help="image width (default 1333)")
    parser.add_argument("--batch", type=int, default=1, help="images per batch (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after a warm-up; median (default 1)")
    parser.add_argument("--min-seconds", type=float, default=0,
                        help="at least this many seconds of timed runs per process: a case whose warm-up run "
                             "takes t seconds gets max(--repeats, ceil(min / t)) timed runs (default 0: off)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate efficient and reference processes this many times per case; ratios are "
                             "the median of the rounds' ratios (default 1; more on a loaded machine)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs first (default 1; 0 for the slow res2 cases: the first run then "
                             "also pays one-off initialisation)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (default: torch's default); 1 on a loaded machine, where "
                             "threads that wait for each other at every op distort the comparison")
    parser.add_argument("--softmax-kernel", default="auto", choices=["auto", "fused", "tiled", "symmetric"],
                        help="kernel of the efficient embedded/gaussian blocks (default auto)")
    parser.add_argument("--sub-sample", action="store_true", help="max-pool phi and g by 2 (MODEL.WNLB.SUB_SAMPLE)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.worker:
        print(json.dumps(run_one(args)))
        return 0

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmark_nonlocal.py: error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    print(f"# non-local block forward+backward, batch {args.batch}, image {args.height}x{args.width}, "
          f"device {args.device}, torch {torch.__version__}, {os.cpu_count()} CPUs, sub_sample={args.sub_sample}, "
          f"warm-up runs {args.warmup}, timed runs {args.repeats} (median)"
          f"{f' or {args.min_seconds:g} s of them' if args.min_seconds else ''}, rounds {args.rounds}, threads {args.threads or torch.get_num_threads()}, "
          f"softmax kernel {args.softmax_kernel}")
    header = (f"{'stage':5} {'N':>6} {'C':>5} {'mode':11} | {'efficient':>9} {'reference':>9} {'time eff/ref':>12} "
              f"{'cpu eff/ref':>11} | {'eff peak':>13} {'ref peak':>13} {'mem eff/ref':>11}")
    print(header)
    print("-" * len(header))
    results = []
    for stage in args.stages:
        h, w, c = feature_size(stage, args.height, args.width)
        for mode in args.modes:
            eff, ref, ratios = _rounds(stage, mode, args)
            row = {"stage": stage, "h": h, "w": w, "channels": c, "mode": mode, "efficient": eff, "reference": ref}
            if ratios:
                row["ratios"] = ratios
            results.append(row)
            cells = [f"{stage:5} {h * w:6d} {c:5d} {mode:11} |"]
            if "skipped" in eff:
                cells.append(f" efficient {eff['skipped']}")
            elif "skipped" in ref:
                cells.append(f" {eff['time_s']:8.2f}s {'-':>9} {'-':>12} {'-':>11} | {_fmt_mem(eff['peak_extra_bytes'])} "
                             f"{'-':>13} {'-':>11}   (reference skipped: {ref['skipped']})")
            else:
                mem = ratios.get("peak_extra_bytes", eff["peak_extra_bytes"] / max(ref["peak_extra_bytes"], 1))
                cells.append(
                    f" {eff['time_s']:8.2f}s {ref['time_s']:8.2f}s {_ratio(eff, ref, 'time_s', ratios):>12} "
                    f"{_ratio(eff, ref, 'cpu_s', ratios):>11} | "
                    f"{_fmt_mem(eff['peak_extra_bytes'])} {_fmt_mem(ref['peak_extra_bytes'])} {mem:11.3f}")
            print("".join(cells), flush=True)
    if args.json:
        from wnlb_d2.utils.io import atomic_write_json

        atomic_write_json(args.json, results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
