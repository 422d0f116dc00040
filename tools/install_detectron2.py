#!/usr/bin/env python
"""Install detectron2 into the running Python environment, or keep the one already there.

Order of preference:

1. A detectron2 that is already importable (e.g. built from source with CUDA) is used as it is.
   If it lacks the compiled ``_C`` extension, a stand-in ``_C`` module is added (the only file
   this script ever writes into a detectron2 installation).
2. Otherwise the v0.6 release is taken from PyPI's ``pb1-detectron2==0.6`` source distribution
   (a file-for-file re-upload of detectron2 v0.6 that lacks the C++ sources, so it cannot be
   built as published). Its pure-Python ``detectron2/`` package, with the stock configs under
   ``detectron2/model_zoo/configs``, is repackaged as a distribution named ``detectron2`` 0.6
   and installed with pip, plus the stand-in ``_C``.

``--source SOURCE`` instead builds detectron2 with its compiled C++ operators, unless a compiled
detectron2 is installed already. SOURCE is detectron2's git repository
(``git+https://github.com/facebookresearch/detectron2.git``, newest main), or a local source
folder or ``.tar.gz`` archive of it (a clone, or a ``git archive`` snapshot for machines
without GitHub). torch must be installed first (detectron2's setup.py imports it); the build
reads ``FORCE_CUDA`` and ``MAX_JOBS`` from the environment as detectron2's own setup does.

``--check-source SOURCE`` only checks that SOURCE can be read (a local path exists; a git URL
answers ``git ls-remote``) and says in one line what to do when not (``make test-d2main`` runs
it before it creates anything). ``--status`` prints what is installed: ``compiled``,
``pure-python`` or ``absent`` (the Makefile picks the v0.6 pins, e.g. Pillow<10, only when
detectron2 is not a compiled one).

Usage::

    python tools/install_detectron2.py [--sdist PATH | --source SOURCE] [--force] [--status]
    python tools/install_detectron2.py --check-source SOURCE
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

SDIST_REQUIREMENT = "pb1-detectron2==0.6"
#: detectron2's own repository: what ``--source`` builds by default in ``make test-d2main``.
GIT_SOURCE = "git+https://github.com/facebookresearch/detectron2.git"
TOOLS = os.path.dirname(os.path.realpath(__file__))  # realpath: also when run through a link to tools/
STANDIN = os.path.join(TOOLS, "detectron2_c_standin.py")
IO_MODULE = os.path.join(os.path.dirname(TOOLS), "wnlb_d2", "utils", "io.py")
# How long `git ls-remote` may take to say whether the repository answers.
GIT_CHECK_TIMEOUT_S = 30

SETUP_PY = '''
from setuptools import setup, find_packages
setup(
    name="detectron2",
    version="0.6",
    description="detectron2 v0.6, pure-Python package repackaged from pb1-detectron2==0.6",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    include_package_data=True,
    python_requires=">=3.7",
)
'''


def _io():
    """wnlb_d2's writer module (atomic_write), loaded from its file.

    ``import wnlb_d2`` needs detectron2, which this script is installing; ``wnlb_d2/utils/io.py``
    needs only the standard library, so it is loaded on its own.
    """
    spec = importlib.util.spec_from_file_location("_wnlb_d2_utils_io", IO_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def _detectron2_dir():
    spec = importlib.util.find_spec("detectron2")
    return None if spec is None else os.path.dirname(spec.origin)


def _has_compiled_ext(d2_dir):
    return any(
        f.startswith("_C.") and (f.endswith(".so") or f.endswith(".pyd")) for f in os.listdir(d2_dir)
    )


def _add_standin(d2_dir):
    target = os.path.join(d2_dir, "_C.py")
    if os.path.exists(target):
        with open(target) as f, open(STANDIN) as g:
            current = f.read()
            if current == g.read() or "IS_STANDIN" not in current:
                return  # up to date, or not ours: leave it alone
    with _io().atomic_write(target) as tmp:  # never a half-written module
        shutil.copyfile(STANDIN, tmp)
    print(f"Added stand-in for the missing compiled extension: {target}")


def _status():
    d2_dir = _detectron2_dir()
    if d2_dir is None:
        return "absent"
    return "compiled" if _has_compiled_ext(d2_dir) else "pure-python"


def _unpacked_root(folder):
    """The folder holding setup.py in an unpacked archive (``git archive`` has none above it)."""
    if os.path.isfile(os.path.join(folder, "setup.py")):
        return folder
    subdirs = [os.path.join(folder, d) for d in os.listdir(folder)]
    found = [d for d in subdirs if os.path.isfile(os.path.join(d, "setup.py"))]
    return found[0] if len(found) == 1 else None


def is_git_source(source):
    """Whether ``source`` is a pip VCS URL (``git+https://...``) rather than a local path."""
    return source.startswith("git+")


def source_problem(source):
    """Why detectron2 cannot be taken from ``source``, in one line, or None when it can.

    A local path must exist; a ``git+`` URL must answer ``git ls-remote`` (no GitHub, no DNS or
    no git gives the reason and how to point the build at a local source instead).

    Args:
        source (str): a source folder, a ``.tar.gz`` archive, or a ``git+https://...`` URL.

    Returns:
        str or None
    """
    hint = "set D2MAIN_SRC= (make) or --source to a detectron2 source folder or .tar.gz archive"
    if not source:
        return f"no detectron2 source given; {hint}"
    if not is_git_source(source):
        if not os.path.exists(source):
            return f"detectron2 source not found: {source} (a source folder or .tar.gz archive)"
        return None
    url = source[len("git+"):].partition("#")[0]
    if "@" in url.rsplit("/", 1)[-1]:  # a ref (git+https://...detectron2.git@v0.6), not a user (ssh://git@host)
        url = url.rsplit("@", 1)[0]
    if shutil.which("git") is None:
        return f"cannot fetch {url}: git is not installed; {hint}"
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # never wait for a password
    try:
        result = subprocess.run(["git", "ls-remote", "--heads", url], capture_output=True, text=True,
                                timeout=GIT_CHECK_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return f"cannot reach {url}: no answer in {GIT_CHECK_TIMEOUT_S} s; {hint}"
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"git ls-remote exited with {result.returncode}"
        return f"cannot reach {url} ({reason}); {hint}"
    return None


def _build_from_source(source):
    problem = source_problem(source)
    if problem:
        sys.exit(f"error: {problem}")
    if importlib.util.find_spec("torch") is None:
        sys.exit("error: install torch first: detectron2's setup.py imports it to build its operators")
    if is_git_source(source):
        _pip_build(source)
        _check_compiled(source)
        return
    with tempfile.TemporaryDirectory() as work:
        if os.path.isdir(source):
            root = source
        else:
            try:
                with tarfile.open(source) as tar:
                    tar.extractall(work, filter="data")
            except (tarfile.TarError, OSError) as e:
                sys.exit(f"error: cannot unpack detectron2 source archive {source}: {e}")
            root = _unpacked_root(work)
        if root is None or not os.path.isfile(os.path.join(root, "detectron2", "layers", "csrc", "vision.cpp")):
            sys.exit(f"error: {source} is not a detectron2 source tree (no setup.py and detectron2/layers/csrc)")
        _pip_build(root)
    _check_compiled(source)


def _pip_build(target):
    # --no-build-isolation: the build must see the installed torch (an isolated build env
    # would have none, or another version whose ABI the operators would not match).
    _run([sys.executable, "-m", "pip", "install", "--no-build-isolation", target])


def _check_compiled(source):
    importlib.invalidate_caches()
    d2_dir = _detectron2_dir()
    if d2_dir is None or not _has_compiled_ext(d2_dir):
        sys.exit(f"error: building detectron2 from {source} left no compiled detectron2._C")
    print(f"Built detectron2 with its compiled operators from {source}: {d2_dir}")


def _install_from_sdist(sdist):
    with tempfile.TemporaryDirectory() as work:
        if sdist is None:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                  "--no-build-isolation", SDIST_REQUIREMENT, "-d", work])
            found = [f for f in os.listdir(work) if f.endswith((".tar.gz", ".zip"))]
            if not found:
                sys.exit(f"error: pip download of {SDIST_REQUIREMENT} produced no source archive")
            sdist = os.path.join(work, found[0])
        if not os.path.isfile(sdist):
            sys.exit(f"error: detectron2 source archive not found: {sdist}")
        src = os.path.join(work, "src")
        with tarfile.open(sdist) as tar:
            tar.extractall(src, filter="data")
        roots = [os.path.join(src, d) for d in os.listdir(src)]
        pkg = [os.path.join(r, "detectron2") for r in roots if os.path.isdir(os.path.join(r, "detectron2"))]
        if not pkg or not os.path.isfile(os.path.join(pkg[0], "model_zoo", "configs", "Base-RCNN-FPN.yaml")):
            sys.exit(f"error: {sdist} does not contain detectron2/ with model_zoo/configs")
        build = os.path.join(work, "build")
        shutil.copytree(pkg[0], os.path.join(build, "detectron2"))
        shutil.copyfile(STANDIN, os.path.join(build, "detectron2", "_C.py"))
        with open(os.path.join(build, "setup.py"), "w") as f:
            f.write(SETUP_PY)
        _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", build])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", help="local pb1-detectron2 0.6 source archive (default: download from PyPI)")
    parser.add_argument("--source", help="build detectron2 with its compiled operators from this source "
                        f"folder, .tar.gz archive or git URL (e.g. {GIT_SOURCE}); skipped when a compiled "
                        "detectron2 is installed")
    parser.add_argument("--check-source", metavar="SOURCE",
                        help="check that SOURCE (as for --source) can be read, change nothing")
    parser.add_argument("--force", action="store_true", help="reinstall even if detectron2 imports")
    parser.add_argument("--status", action="store_true",
                        help="print compiled, pure-python or absent and change nothing")
    args = parser.parse_args(argv)
    if args.sdist and args.source:
        parser.error("--sdist (pure-Python v0.6) and --source (compiled build) exclude each other")

    if args.status:
        print(_status())
        return 0
    if args.check_source is not None:
        problem = source_problem(args.check_source)
        if problem:
            sys.exit(f"install_detectron2.py: error: {problem}")
        return 0
    d2_dir = _detectron2_dir()
    if args.source:
        if d2_dir is not None and _has_compiled_ext(d2_dir) and not args.force:
            print(f"Using the installed detectron2 with its compiled extension: {d2_dir}")
        else:
            _build_from_source(args.source)
        return 0
    if d2_dir is not None and not args.force:
        if _has_compiled_ext(d2_dir):
            print(f"Using the installed detectron2 with its compiled extension: {d2_dir}")
        else:
            print(f"Using the installed pure-Python detectron2: {d2_dir}")
            _add_standin(d2_dir)
        return 0
    _install_from_sdist(args.sdist)
    importlib.invalidate_caches()
    d2_dir = _detectron2_dir()
    if d2_dir is None:
        sys.exit("error: detectron2 still does not import after installation")
    print(f"Installed detectron2 0.6 (pure Python) at {d2_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
