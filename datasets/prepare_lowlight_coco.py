#!/usr/bin/env python
"""Render a COCO split (or any COCO-format dataset) to a low-light copy.

A thin command line over :func:`wnlb_d2.data.prepare.prepare_lowlight`; see ``--help`` and
datasets/README.md. Example (the copy that ``coco_2017_val_lowlight`` reads)::

    python datasets/prepare_lowlight_coco.py \\
        --images $DETECTRON2_DATASETS/coco/val2017 \\
        --annotations $DETECTRON2_DATASETS/coco/annotations/instances_val2017.json \\
        --output $DETECTRON2_DATASETS/coco/lowlight/val2017 \\
        --pipeline lv2021 --seed 0 --workers 8
"""

import os
import sys

try:
    from wnlb_d2.data.prepare import main
except ImportError:
    # Run from a checkout without `pip install -e .`: the package is one folder up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from wnlb_d2.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
