#!/usr/bin/env python
"""Run the paper's Table I study (pre-trained / fine-tuned / NLB / wNLB) for a detector, on any datasets.

The code (presets: ``DETECTOR_DEMOS``, ``preset_values``) is :mod:`wnlb_d2.cli.study`, installed as
the ``wnlb-study`` command; this script runs it from a checkout (``--help`` describes the
arguments). Examples::

    python tools/run_experiment.py --preset demo                      # make demo
    python tools/run_experiment.py --preset study --detector solov2   # make study DETECTOR=solov2
"""

import os
import sys

try:
    import wnlb_d2  # noqa: F401
except ImportError:
    # Run from a checkout without `pip install -e .`: the package is one folder up.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wnlb_d2.cli import study as _command  # noqa: E402

if __name__ == "__main__":
    sys.exit(_command.command())

# Imported (tools/study_blocks.py's `from run_experiment import preset_values`, tests): the module
# is wnlb_d2.cli.study itself (what is set on it is what runs); a loader that keeps this module
# object sees its names.
globals().update({k: v for k, v in vars(_command).items() if not (k.startswith("__") and k.endswith("__"))})
sys.modules[__name__] = _command
