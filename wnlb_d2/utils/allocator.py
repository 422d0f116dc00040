"""glibc's allocator settings for the processes that transform images (data-loader workers, preparation pools).

With glibc's defaults an image-sized array (a few MB) is either mapped fresh from the kernel
(above ``M_MMAP_THRESHOLD``) or, once freed at the top of the heap, handed back to it (above
``M_TRIM_THRESHOLD``); the next image pays for it again in minor page faults and zeroed pages:
4-10 thousand per training image with the low-light pipelines, a third of their cost or more.
Keeping those arrays on the heap and the freed memory in the process makes the next image reuse
them. The price is memory: a worker keeps its largest recent working set (tens of MB) instead
of returning it between images.

:func:`tune_allocator` applies the settings once per process (a forked child applies them
again: cheap, and the same values); ``LowLightDatasetMapper`` calls it in every data-loader
worker (detectron2's loaders take no ``worker_init_fn``), and ``prepare_lowlight`` in its pool.
Elsewhere than glibc (macOS, Windows, musl) it does nothing and says so in a debug log line.
Set the environment variable ``WNLB_D2_MALLOPT=0`` to keep glibc's defaults.
"""

import ctypes
import ctypes.util
import logging
import os

__all__ = ["tune_allocator", "M_MMAP_THRESHOLD", "M_TRIM_THRESHOLD", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "ENV_VAR"]

logger = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers of glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Allocations below this size come from the heap (glibc's largest allowed value on 64-bit,
#: 4 * 1024 * 1024 * sizeof(long)): a float32 (H, W, 3) image up to about 2.8 megapixels.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap is returned to the kernel only above this size.
TRIM_THRESHOLD = 128 * 1024 * 1024

#: The environment variable that turns the settings off ("0").
ENV_VAR = "WNLB_D2_MALLOPT"

_state = {"pid": None, "applied": False}


def _glibc():
    """The C library if it is glibc, else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # gnu_get_libc_version exists in glibc only; musl also has a mallopt, which does nothing.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def tune_allocator():
    """Apply :data:`MMAP_THRESHOLD` and :data:`TRIM_THRESHOLD` with glibc's ``mallopt``, once per process.

    Returns:
        bool: whether the settings are in effect in this process (False: not glibc, refused,
        or turned off with ``WNLB_D2_MALLOPT=0``).
    """
    pid = os.getpid()
    if _state["pid"] == pid:
        return _state["applied"]
    _state["pid"], _state["applied"] = pid, False
    if os.environ.get(ENV_VAR, "1").strip() == "0":
        logger.debug(f"allocator: {ENV_VAR}=0, glibc's malloc settings left as they are")
        return False
    libc = _glibc()
    if libc is None:
        logger.debug("allocator: the C library is not glibc; malloc settings left as they are")
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    # The mmap threshold first: setting it also turns off glibc's dynamic adjustment of both.
    ok = (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1) & (libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    _state["applied"] = bool(ok)
    logger.debug(f"allocator: mallopt M_MMAP_THRESHOLD={MMAP_THRESHOLD} M_TRIM_THRESHOLD={TRIM_THRESHOLD} "
                 f"in process {pid}: {'applied' if ok else 'refused by glibc'}")
    return _state["applied"]
