#!/usr/bin/env python
"""Train and evaluate low-light instance segmentation models (wNLB) with detectron2.

The code is :mod:`wnlb_d2.cli.train`, installed as the ``wnlb-train`` command; this script runs
it from a checkout. Examples::

    # train (any stock config, or one of configs/)
    python train_net.py --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_wnlb.yaml \\
        --num-gpus 8 MODEL.WEIGHTS detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl
    # evaluate
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    # several CPU processes (gloo)
    torchrun --nproc_per_node 2 train_net.py --config-file ...
"""

import os
import sys

try:
    import wnlb_d2  # noqa: F401
except ImportError:
    # Run from a checkout without `pip install -e .`: the package is beside this script.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from wnlb_d2.cli import train as _command  # noqa: E402

if __name__ == "__main__":
    sys.exit(_command.command())

# Imported (`import train_net`): the module is wnlb_d2.cli.train itself, so what is set on it
# (Trainer, main, ...) is what runs; a loader that keeps this module object sees its names.
globals().update({k: v for k, v in vars(_command).items() if not (k.startswith("__") and k.endswith("__"))})
sys.modules[__name__] = _command
