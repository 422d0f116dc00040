#!/usr/bin/env python
"""Run a (wNLB) detectron2 model on images or a video and draw its masks, boxes and labels.

The code is :mod:`wnlb_d2.cli.demo`, installed as the ``wnlb-demo`` command; this script runs it
from a checkout (``--help`` describes the arguments). Example::

    python tools/demo.py --config-file configs/demo/Base-Demo-R18-FPN.yaml \\
        --input datasets/wnlb_demo/*/val/00000[1-4].png --low-light lv2021 --side-by-side --scale 3 \\
        --output output/demo_pictures --opts MODEL.WEIGHTS output/demo/wnlb/model_final.pth
"""

import os
import sys

try:
    import wnlb_d2  # noqa: F401
except ImportError:
    # Run from a checkout without `pip install -e .`: the package is one folder up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wnlb_d2.cli import demo as _command  # noqa: E402

if __name__ == "__main__":
    sys.exit(_command.command())

# Imported: the module is wnlb_d2.cli.demo itself (what is set on it is what runs); a loader
# that keeps this module object sees its names.
globals().update({k: v for k, v in vars(_command).items() if not (k.startswith("__") and k.endswith("__"))})
sys.modules[__name__] = _command
