"""wnlb_d2.utils.allocator: glibc's mallopt settings, once per process, in the mapper and prepare's workers."""

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from wnlb_d2.utils import allocator


class FakeLibc:
    """Records mallopt calls; ``glibc`` False drops gnu_get_libc_version (musl, macOS)."""

    calls = []

    def __init__(self, glibc=True, accept=True):
        self.accept = accept
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.99"
        outer = self

        class Mallopt:
            argtypes = restype = None

            def __call__(self, param, value):
                FakeLibc.calls.append((param, value))
                return 1 if outer.accept else 0

        self.mallopt = Mallopt()


@pytest.fixture
def fake_libc(monkeypatch):
    """ctypes.CDLL replaced by a FakeLibc; a fresh per-process state; WNLB_D2_MALLOPT unset."""
    FakeLibc.calls = []
    made = {"kwargs": {}}
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: FakeLibc(**made["kwargs"]))
    monkeypatch.setattr(allocator, "_state", {"pid": None, "applied": False})
    monkeypatch.delenv(allocator.ENV_VAR, raising=False)
    return made


def test_mallopt_gets_the_mmap_then_the_trim_threshold_once_per_process(fake_libc, monkeypatch):
    assert allocator.tune_allocator() is True
    expected = [(-3, 32 * 1024 * 1024), (-1, 128 * 1024 * 1024)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert FakeLibc.calls == expected
    assert allocator.tune_allocator() is True and allocator.tune_allocator() is True
    assert FakeLibc.calls == expected  # once per process
    pid = os.getpid()
    monkeypatch.setattr(allocator.os, "getpid", lambda: pid + 1)  # a forked child
    assert allocator.tune_allocator() is True
    assert FakeLibc.calls == expected + expected


def test_not_glibc_or_turned_off_or_refused_is_a_debug_line(fake_libc, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="wnlb_d2.utils.allocator")
    fake_libc["kwargs"] = {"glibc": False}
    assert allocator.tune_allocator() is False and FakeLibc.calls == []
    assert "not glibc" in caplog.text

    monkeypatch.setattr(allocator, "_state", {"pid": None, "applied": False})
    fake_libc["kwargs"] = {}
    monkeypatch.setenv(allocator.ENV_VAR, "0")
    assert allocator.tune_allocator() is False and FakeLibc.calls == []
    assert "WNLB_D2_MALLOPT=0" in caplog.text

    monkeypatch.setattr(allocator, "_state", {"pid": None, "applied": False})
    monkeypatch.delenv(allocator.ENV_VAR)
    fake_libc["kwargs"] = {"accept": False}
    assert allocator.tune_allocator() is False
    assert len(FakeLibc.calls) == 2 and "refused" in caplog.text


def test_no_c_library_at_all_is_a_no_op(fake_libc, monkeypatch):
    def missing(name):
        raise OSError("no libc")

    monkeypatch.setattr(allocator.ctypes, "CDLL", missing)
    assert allocator.tune_allocator() is False


def test_the_mapper_and_the_preparation_workers_apply_it(fake_libc, tmp_path):
    from PIL import Image

    from wnlb_d2.data import LowLightDatasetMapper
    from wnlb_d2.data.prepare import _init_worker
    from wnlb_d2.data.synthesis import build_pipeline

    Image.fromarray(np.full((8, 10, 3), 100, np.uint8)).save(tmp_path / "a.png")
    mapper = LowLightDatasetMapper(True, pipeline=build_pipeline("lv2021"), augmentations=[], image_format="BGR")
    mapper({"file_name": str(tmp_path / "a.png"), "image_id": 1, "height": 8, "width": 10, "annotations": []})
    assert len(FakeLibc.calls) == 2
    allocator._state["pid"] = None  # as in a new worker process
    _init_worker({"pipeline": "lv2021", "overrides": {}})
    assert len(FakeLibc.calls) == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_on_glibc_freed_image_arrays_stop_costing_page_faults():
    # A fresh process each: mallopt cannot be undone. Three 8 MB arrays allocated and freed per "image".
    code = textwrap.dedent("""
        import resource, numpy as np
        from wnlb_d2.utils.allocator import tune_allocator
        applied = tune_allocator()
        def image():  # three image-sized temporaries alive at once, then all freed
            a = np.ones(2 * 1024 * 1024, np.float32)
            b, c = a + 1, a * 2
            return float(a[0] + b[0] + c[0])
        for _ in range(3):
            image()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            image()
        print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    """)
    runs = {}
    for value in ("1", "0"):
        env = dict(os.environ, **{allocator.ENV_VAR: value})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        applied, faults = out.stdout.split()
        runs[value] = (applied == "True", int(faults))
    assert runs["1"][0] is True and runs["0"][0] is False
    # glibc's defaults: the freed 24 MB go back to the kernel (above its dynamic trim threshold
    # of twice 8 MB) and come back as fresh pages (1.5k per image here); tuned: reused from the heap.
    assert runs["0"][1] > 20 * 500 and runs["1"][1] < 200, runs
