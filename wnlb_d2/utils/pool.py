"""One way to start worker processes for data preparation."""

import multiprocessing as mp
import sys

__all__ = ["process_pool"]


def process_pool(workers, initializer=None, initargs=()):
    """A ``multiprocessing.Pool`` of ``workers`` processes.

    On Linux the workers are forked: they inherit the imported modules (torch, detectron2) at
    no start-up cost, and nothing they need has to be pickled. Elsewhere the platform's default
    start method is used, so ``initializer`` and the mapped function must be importable.

    Args:
        workers (int): number of processes, >= 1.
        initializer (callable or None): run once in each worker with ``initargs``.

    Returns:
        multiprocessing.pool.Pool: use it as a context manager.
    """
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context()
    return ctx.Pool(workers, initializer, initargs)
