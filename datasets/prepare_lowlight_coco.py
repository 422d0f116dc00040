#!/usr/bin/env python
"""Render a COCO split (or any COCO-format dataset) to a low-light copy.

The code is :mod:`wnlb_d2.cli.prepare`, installed as the ``wnlb-prepare`` command; this script
runs it from a checkout (``--help`` describes the arguments; datasets/README.md the datasets).
Example (the copy that ``coco_2017_val_lowlight`` reads)::

    python datasets/prepare_lowlight_coco.py \\
        --images $DETECTRON2_DATASETS/coco/val2017 \\
        --annotations $DETECTRON2_DATASETS/coco/annotations/instances_val2017.json \\
        --output $DETECTRON2_DATASETS/coco/lowlight/val2017 \\
        --pipeline lv2021 --seed 0 --workers 8
"""

import os
import sys

try:
    import wnlb_d2  # noqa: F401
except ImportError:
    # Run from a checkout without `pip install -e .`: the package is one folder up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wnlb_d2.cli import prepare as _command  # noqa: E402

if __name__ == "__main__":
    sys.exit(_command.command())

# Imported: the module is wnlb_d2.cli.prepare itself (what is set on it is what runs); a loader
# that keeps this module object sees its names.
globals().update({k: v for k, v in vars(_command).items() if not (k.startswith("__") and k.endswith("__"))})
sys.modules[__name__] = _command
