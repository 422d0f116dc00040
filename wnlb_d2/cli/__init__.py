"""The command lines of wnlb_d2: the console commands of an installed package, and the code of the
repository's scripts (which call it).

========================  ===============================  ================================
command                   script in the repository         module
========================  ===============================  ================================
``wnlb-train``            ``train_net.py``                 :mod:`wnlb_d2.cli.train`
``wnlb-demo``             ``tools/demo.py``                :mod:`wnlb_d2.cli.demo`
``wnlb-study``            ``tools/run_experiment.py``      :mod:`wnlb_d2.cli.study`
``wnlb-prepare``          ``datasets/prepare_lowlight_coco.py``  :mod:`wnlb_d2.cli.prepare`
``wnlb-export``           ``tools/deploy/export_model.py``  :mod:`wnlb_d2.cli.export`
========================  ===============================  ================================

Each module's ``command()`` is what the command and the script run (it returns the exit status).
A config path such as ``configs/demo/Base-Demo-R18-FPN.yaml`` given to any of them is the file
of that name when it exists, else the copy shipped with the package (:mod:`wnlb_d2.model_zoo`),
so the commands work from any folder. ``wnlb-yolo`` is :mod:`wnlb_d2.yolo.cli`.

This package imports none of its modules: each pulls in what its command needs.
"""

import os
import sys

__all__ = ["COMMANDS", "tool_name"]

#: Console command -> (its entry point, the script it replaces in messages). setup.py's
#: ``console_scripts`` list the same entry points (a test compares the installed wheel's).
COMMANDS = {
    "wnlb-train": ("wnlb_d2.cli.train:command", "train_net.py"),
    "wnlb-demo": ("wnlb_d2.cli.demo:command", "demo.py"),
    "wnlb-study": ("wnlb_d2.cli.study:command", "run_experiment.py"),
    "wnlb-prepare": ("wnlb_d2.cli.prepare:command", "prepare_lowlight_coco.py"),
    "wnlb-export": ("wnlb_d2.cli.export:command", "export_model.py"),
}


def tool_name(script):
    """The name a command's messages start with (``<name>: error: ...``).

    Args:
        script (str): the repository script's name (``"run_experiment.py"``).

    Returns:
        str: the console command's name (``"wnlb-study"``) when the process was started as one,
        else ``script`` (the script itself, ``python -m``, or a test calling ``main``).
    """
    started_as = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if started_as.endswith(".exe"):  # the launchers pip writes on Windows
        started_as = started_as[:-4]
    return started_as if started_as in COMMANDS else script
