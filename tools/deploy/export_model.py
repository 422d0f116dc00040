#!/usr/bin/env python
"""Export a detector of this project (wNLB backbones) to TorchScript or ONNX, checked against eager.

The code is :mod:`wnlb_d2.cli.export`, installed as the ``wnlb-export`` command; this script runs
it from a checkout (``--help`` describes the arguments). Example::

    python tools/deploy/export_model.py --config-file configs/demo/Base-Demo-R18-FPN.yaml \\
        --export-method tracing --format onnx --output ./export --sample-image img.jpg \\
        MODEL.WEIGHTS output/model_final.pth MODEL.BACKBONE.NAME build_resnet_wnlb_fpn_backbone
"""

import os
import sys

# The checkout's package first (this script is part of it).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from wnlb_d2.cli import export as _command  # noqa: E402

if __name__ == "__main__":
    sys.exit(_command.command())

# Imported (`import export_model`): the module is wnlb_d2.cli.export itself (what is set on it is
# what runs); a loader that keeps this module object sees its names.
globals().update({k: v for k, v in vars(_command).items() if not (k.startswith("__") and k.endswith("__"))})
sys.modules[__name__] = _command
