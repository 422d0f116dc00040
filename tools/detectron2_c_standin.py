"""Stand-in for detectron2's compiled extension ``detectron2._C``.

Installed as ``detectron2/_C.py`` by ``tools/install_detectron2.py`` only when detectron2 was
installed as pure Python (no C++/CUDA build). Several detectron2 modules do
``from detectron2 import _C`` at import time although Mask R-CNN / Faster R-CNN / RetinaNet with
FPN never call it on the CPU (ROIAlign and NMS go through torchvision). This module lets those
imports succeed and turns any actual use of a compiled operator into a clear error instead of a
wrong result.
"""

__all__ = []

#: Marks this module as the stand-in, so code can tell it apart from a real build.
IS_STANDIN = True


# Build information that detectron2.utils.collect_env prints (default_setup logs it).
def get_compiler_version():
    return "none: pure-Python detectron2 with the _C stand-in (tools/install_detectron2.py)"


def get_cuda_version():
    return "none: no compiled extension"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise NotImplementedError(
        f"detectron2._C.{name} is a compiled detectron2 operator, but this detectron2 was "
        "installed as pure Python without its C++/CUDA extension. Operators that need it: "
        "deformable conv, rotated boxes, and COCOEvaluator(use_fast_impl=True). Build "
        "detectron2 from source (see docs/install.md, 'With CUDA and detectron2 built from source') or avoid these operators "
        "(e.g. COCOEvaluator(..., use_fast_impl=False))."
    )
