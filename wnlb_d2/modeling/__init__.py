from .backbone import *  # noqa: F401,F403  (registers the backbones on import)
from .backbone import __all__
