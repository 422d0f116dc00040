"""train_net.py with the tiny demo dataset registered (for tests that run it as a process).

Usage: TINY_DEMO_ROOT=/tmp/x python tests/tiny_train_net.py <train_net.py arguments>
(also under ``torchrun``).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from engine_helpers import register_tiny_demo  # noqa: E402

register_tiny_demo(os.environ["TINY_DEMO_ROOT"])

import train_net  # noqa: E402

if __name__ == "__main__":
    train_net.invoke_main()
