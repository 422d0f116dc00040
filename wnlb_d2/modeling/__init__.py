from .backbone import *  # noqa: F401,F403  (registers the backbones on import)
from .backbone import __all__
from . import meta_arch  # noqa: F401  (registers SOLOv2 in META_ARCH_REGISTRY)
