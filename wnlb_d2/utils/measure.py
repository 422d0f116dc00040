"""Time and peak memory of a repeated step, on CPU or CUDA (used by the benchmark tools).

CPU peak memory is the rise of the resident set: ``VmHWM`` is reset to the current ``VmRSS``
through ``/proc/self/clear_refs`` before each run (Linux only). Callers that want freed blocks to
leave the resident set should fix glibc's mmap threshold first (the tools do).
"""

import time

__all__ = ["status_kib", "time_and_peak"]


def status_kib(field):
    """A ``/proc/self/status`` field in KiB, e.g. ``status_kib("VmRSS")``.

    Raises:
        RuntimeError: the field is not there.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def time_and_peak(step, repeats, cuda, cpu_times=None):
    """Run ``step()`` ``repeats`` times; wall time and peak extra memory of each run.

    Args:
        step (callable): one measured unit of work (already warmed up by the caller).
        repeats (int): timed runs.
        cuda (bool): time each run with CUDA events (the GPU's own clock, from the first
            kernel queued to the last one finished) and measure
            ``torch.cuda.max_memory_allocated()`` above what was allocated before it;
            otherwise wall time and the rise of the process's resident set.
        cpu_times (list): if given, the CPU seconds of this process (all its threads) during
            each run are appended to it. With one thread on a shared machine they measure the
            work done, where wall time also measures how much of the CPU the others left.

    Returns:
        tuple[list[float], list[int]]: seconds and peak extra bytes, one per run.
    """
    import torch

    times, peaks = [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = status_kib("VmRSS") * 1024
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)  # ms -> s
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            times.append(time.perf_counter() - t0)
            if cpu_times is not None:
                cpu_times.append(time.process_time() - c0)
        peaks.append(torch.cuda.max_memory_allocated() - base if cuda else status_kib("VmHWM") * 1024 - base)
    return times, peaks
