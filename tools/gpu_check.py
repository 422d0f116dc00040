#!/usr/bin/env python
"""The GPU checks in one command (about 4 minutes on one H100/H200); prints one table.

1. ``tools/benchmark_nonlocal.py --device cuda`` at 800x1333, res3-5, every mode (CUDA-event
   times, ``torch.cuda.max_memory_allocated``), and the embedded and Gaussian blocks once more
   with the tiled kernel forced, to check that "auto" (fused, resp. symmetric) picks the faster
   kernel on the GPU too.
2. ``tools/benchmark_model.py --device cuda``: Mask R-CNN R50-FPN training step at 800x1333,
   stock vs wNLB at res3-5 (embedded, with and without sub-sampling).
3. bf16 and fp16 autocast through one block at res3 (embedded, gaussian): relative error of the
   output and of the input gradient against float32.
4. Training of the demo config (``configs/demo/Base-Demo-R18-FPN.yaml``) with the wNLB
   backbone and ``MODEL.WNLB.NORM SyncBN`` for a few iterations: 2 processes over NCCL
   (``train_net.py --num-gpus 2``) when there are 2 GPUs, otherwise 1 process (noted).

Exits 2 without CUDA, 1 if any check failed. Everything is written under ``--output``.

Usage::

    python tools/gpu_check.py
    python tools/gpu_check.py --output /tmp/gpu_check --iters 10
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "Base-Demo-R18-FPN.yaml")


def autocast_error(mode, dtype, device, shape=(1, 512, 100, 168), seed=0):
    """Relative error of one block's output and input gradient under autocast vs float32.

    The block is given non-trivial weights (W_z's norm weight 1, w = 0.5) so that the
    non-local term reaches the output; otherwise the block is the identity at initialisation.

    Args:
        mode (str): pairwise function of the block.
        dtype (torch.dtype): autocast dtype, ``torch.bfloat16`` or ``torch.float16``.
        device (str): "cuda" or "cpu".
        shape (tuple): input ``(B, C, H, W)``; default the res3 map of an 800x1333 image.
        seed (int): seed of the weights and the input.

    Returns:
        dict: ``mode``, ``dtype``, ``out_rel_err`` and ``grad_rel_err`` (max abs difference over
        the float32 tensor's max abs value), ``out_dtype``.
    """
    import torch

    from wnlb_d2.layers import NonLocalBlock2d

    torch.manual_seed(seed)
    block = NonLocalBlock2d(shape[1], mode=mode, weight_init=0.5, norm="GN").to(device)
    with torch.no_grad():
        block.w_z.norm.weight.fill_(1.0)
    x = (torch.randn(shape, device=device) * 0.1).requires_grad_()
    grad_z = torch.randn(shape, device=device)

    def run(amp):
        x.grad = None
        with torch.autocast(device_type=device, dtype=dtype, enabled=amp):
            z = block(x)
        z.float().backward(grad_z)
        return z.detach().float(), x.grad.detach().clone()

    z32, g32 = run(False)
    zlo, glo = run(True)

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()

    return {"mode": mode, "dtype": str(dtype).replace("torch.", ""), "out_rel_err": rel(zlo, z32),
            "grad_rel_err": rel(glo, g32), "out_dtype": str(zlo.dtype).replace("torch.", "")}


def _run(cmd, log_path, timeout):
    """Run ``cmd``; stdout+stderr to ``log_path``. Returns (ok, seconds, last line)."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout)
            ok = proc.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
    with open(log_path) as log:
        lines = [ln for ln in log.read().splitlines() if ln.strip()]
    return ok, time.perf_counter() - t0, (lines[-1] if lines else "")


def _nonlocal_rows(path):
    rows = []
    with open(path) as f:
        for r in json.load(f):
            eff, ref = r["efficient"], r["reference"]
            if "skipped" in eff or "skipped" in ref:
                rows.append((f"block {r['stage']} {r['mode']}", "skipped: " + eff.get("skipped", ref.get("skipped"))))
                continue
            rows.append((f"block {r['stage']} {r['mode']}",
                         f"eff {eff['time_s'] * 1e3:.1f} ms / ref {ref['time_s'] * 1e3:.1f} ms = "
                         f"{eff['time_s'] / ref['time_s']:.2f}x time, "
                         f"{eff['peak_extra_bytes'] / max(ref['peak_extra_bytes'], 1):.3f}x memory"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "gpu_check"), help="folder for logs and JSON")
    parser.add_argument("--iters", type=int, default=20, help="training iterations of step 4 (default 20)")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check.py: error: CUDA is not available: this script checks the GPU code paths; run it on a "
              "machine with an NVIDIA GPU (the CPU paths are covered by `make test`)", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    out = lambda name: os.path.join(args.output, name)  # noqa: E731
    py = sys.executable
    size = ["--height", str(args.height), "--width", str(args.width)]
    table, failed = [], []

    def check(name, cmd, log, timeout):
        ok, secs, last = _run(cmd, out(log), timeout)
        if not ok:
            failed.append(name)
            table.append((name, f"FAILED after {secs:.0f} s: {last[:120]} (log: {out(log)})"))
        return ok

    gpus = torch.cuda.device_count()
    table.append(("device", f"{torch.cuda.get_device_name(0)} x {gpus}, torch {torch.__version__}"))

    if check("benchmark_nonlocal", [py, "tools/benchmark_nonlocal.py", "--device", "cuda", "--stages", "res3", "res4",
                                    "res5", "--repeats", "3", "--json", out("nonlocal.json")] + size,
             "nonlocal.log", 240):
        table += _nonlocal_rows(out("nonlocal.json"))
    if check("benchmark_nonlocal tiled", [py, "tools/benchmark_nonlocal.py", "--device", "cuda", "--stages", "res3",
                                          "res4", "--modes", "embedded", "gaussian", "--softmax-kernel", "tiled",
                                          "--repeats", "3",
                                          "--json", out("nonlocal_tiled.json")] + size, "nonlocal_tiled.log", 180):
        table += [(name + " (tiled forced)", text) for name, text in _nonlocal_rows(out("nonlocal_tiled.json"))]

    if check("benchmark_model", [py, "tools/benchmark_model.py", "--device", "cuda", "--sizes",
                                 f"{args.height}x{args.width}", "--variants", "stock", "wnlb-res3-5", "--modes",
                                 "embedded", "--sub-sample", "off", "on", "--phases", "train", "--repeats", "3",
                                 "--json", out("model.json")], "model.log", 240):
        with open(out("model.json")) as f:
            for r in json.load(f)["rows"]:
                name = r["variant"] + ("" if r["variant"] == "stock" else f" {r['mode']}" + (" sub" if r["sub_sample"] else ""))
                res = r["result"]
                table.append((f"train step {name}", f"{res['time_s'] * 1e3:.0f} ms ({r['time_ratio']:.2f}x), "
                                                    f"{res['peak_bytes'] / 2**20:.0f} MiB ({r['peak_ratio']:.2f}x)"))

    for dtype in (torch.bfloat16, torch.float16):
        for mode in ("embedded", "gaussian"):
            name = f"autocast {str(dtype)[6:]} {mode}"
            try:
                r = autocast_error(mode, dtype, "cuda")
                table.append((name, f"output rel err {r['out_rel_err']:.2e}, grad rel err {r['grad_rel_err']:.2e} "
                                    f"vs float32 (output {r['out_dtype']})"))
            except Exception as e:  # reported in the table, the other checks still run
                failed.append(name)
                table.append((name, f"FAILED: {type(e).__name__}: {str(e)[:120]}"))

    procs = 2 if gpus >= 2 else 1
    train = [py, "train_net.py", "--num-gpus", str(procs), "--config-file", DEMO_CONFIG,
             "MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone", "MODEL.WNLB.NORM", "SyncBN",
             "MODEL.DEVICE", "cuda", "SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", "()",
             "SOLVER.WARMUP_ITERS", "0", "OUTPUT_DIR", out("train")]
    note = "2 processes, NCCL" if procs == 2 else "1 GPU only: 1 process (the 2-process NCCL run needs 2 GPUs)"
    if check(f"train demo SyncBN ({note})", train, "train.log", 240):
        table.append((f"train demo SyncBN ({note})", f"{args.iters} iterations + evaluation: ok (log: {out('train.log')})"))

    width = max(len(name) for name, _ in table)
    print(f"{'check':{width}} | result")
    print("-" * (width + 60))
    for name, text in table:
        print(f"{name:{width}} | {text}")
    with open(out("summary.json"), "w") as f:
        json.dump({"rows": table, "failed": failed}, f, indent=1)
    if failed:
        print(f"gpu_check.py: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    sys.exit(main_reporting_os_errors("gpu_check.py", main))
