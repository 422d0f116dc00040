"""The package's layout rules: command lines outside the library, lazy optional dependencies."""

import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "wnlb_d2")


def _module_level_imports(path):
    """Top-level module names imported at module scope (not inside functions)."""
    tree = ast.parse(open(path).read(), path)
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _library_files():
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(root, name)


def test_no_command_line_code_in_the_library():
    # argparse belongs to the commands (wnlb_d2/cli, which tools/, datasets/ and train_net.py call);
    # the rest of the library has functions.
    cli = os.path.join(PACKAGE, "cli") + os.sep
    offenders = [os.path.relpath(p, REPO) for p in _library_files()
                 if "argparse" in _module_level_imports(p) and not p.startswith(cli)]
    assert offenders == []


def test_worker_pools_start_in_one_place():
    offenders = [os.path.relpath(p, REPO) for p in _library_files()
                 if "multiprocessing" in _module_level_imports(p) and not p.endswith(os.path.join("utils", "pool.py"))]
    assert offenders == []


def test_import_wnlb_d2_imports_no_optional_integration():
    # Ultralytics (AGPL-3.0) is an optional extra: the core never imports it.
    code = ("import sys, wnlb_d2, wnlb_d2.experiment, wnlb_d2.engine, wnlb_d2.visualization; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ultralytics', 'wnlb_d2') "
            "and (m.startswith('ultralytics') or m.startswith('wnlb_d2.yolo'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
