"""Two CPU processes under torchrun (gloo): same weights afterwards, different images seen."""

import json
import os
import socket
import subprocess
import sys

from engine_helpers import REPO, register_tiny_demo


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_stay_in_sync(tmp_path):
    root = str(tmp_path / "demo")
    register_tiny_demo(root)  # generate once here, not in both ranks
    out = str(tmp_path / "out")
    os.makedirs(out)
    env = dict(os.environ, TINY_DEMO_ROOT=root, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), os.path.join(REPO, "tests", "dist_train_check.py"), out]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(2)]
    assert all(r["world_size"] == 2 and r["ddp"] == "DistributedDataParallel" for r in ranks)
    assert ranks[0]["weights"] == ranks[1]["weights"], "ranks diverged"
    assert len(ranks[0]["images"]) == len(ranks[1]["images"]) == 3 * 1  # 3 iterations x (2 images / 2 ranks)
    assert ranks[0]["images"] != ranks[1]["images"], "both ranks trained on the same images"
