"""Multi-process training: detectron2's launcher on GPUs, ``torchrun`` + gloo on CPUs.

detectron2's ``launch`` asserts CUDA and uses NCCL, and its ``create_ddp_model`` passes
``device_ids=[local_rank]``, which DistributedDataParallel rejects for CPU modules. Under
``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``), this module initialises the process group itself (gloo on
CPU, NCCL on GPU) and detectron2's local process group, then runs the main function.
"""

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["launch", "launched_by_torchrun", "init_torchrun_process_group"]

logger = logging.getLogger(__name__)


def launched_by_torchrun():
    """Whether this process was started by ``torchrun`` with more than one process."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_torchrun_process_group(timeout_minutes=30):
    """Initialise ``torch.distributed`` and detectron2's local group from torchrun's variables."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    if hasattr(comm, "create_local_process_group"):  # detectron2 after v0.6
        comm.create_local_process_group(local_world)
    else:
        # v0.6: every rank creates every machine's group, in the same order.
        for machine in range(world // local_world):
            ranks = list(range(machine * local_world, (machine + 1) * local_world))
            group = dist.new_group(ranks)
            if rank in ranks:
                comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    logger.info(f"Process group ready: rank {rank}/{world}, local rank {local_rank}, backend {backend}")


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=()):
    """Run ``main_func(*args)`` in one or many processes.

    * started by ``torchrun`` (CPU or GPU): initialise the group from its variables, run here;
    * otherwise: detectron2's :func:`detectron2.engine.launch` (spawns ``num_gpus_per_machine``
      GPU processes per machine; with 1 GPU and 1 machine, just calls ``main_func``).
    """
    if launched_by_torchrun():
        init_torchrun_process_group()
        try:
            return main_func(*args)
        finally:
            dist.destroy_process_group()
    if num_gpus_per_machine * num_machines > 1 and not torch.cuda.is_available():
        raise RuntimeError(
            f"--num-gpus {num_gpus_per_machine} x --num-machines {num_machines} needs CUDA, which is not "
            "available. For several CPU processes use: torchrun --nproc_per_node N train_net.py ..."
        )
    return d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines,
                     machine_rank=machine_rank, dist_url=dist_url, args=args)
