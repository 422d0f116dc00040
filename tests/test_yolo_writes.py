"""The YOLO integration writes its files through wnlb_d2.utils.io: a full disk leaves the previous
file whole and no temporary behind (data YAML, export index, the font placed for Ultralytics)."""

import builtins
import errno
import importlib.util
import os

import pytest

# find_spec, not importorskip: importing ultralytics before wnlb_d2.yolo would skip the
# package's environment defaults (offline, config folder outside the home folder).
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the optional YOLO extra (ultralytics) is not installed", allow_module_level=True)

import wnlb_d2  # noqa: E402,F401
from wnlb_d2.data.datasets import register_demo  # noqa: E402
from wnlb_d2.data.demo_dataset import DemoSpec  # noqa: E402
from wnlb_d2.yolo import LowLightSpec, env, export_yolo_dataset, write_data_yaml  # noqa: E402
from wnlb_d2.yolo.convert import read_index  # noqa: E402

SPEC = DemoSpec(image_size=64, num_train=2, num_val=2, seed=4)


@pytest.fixture
def full_disk(monkeypatch):
    """Files opened for writing whose path contains one of the strings appended to the returned
    list take half of the first write, then fail with ENOSPC (as a full disk does)."""
    real_open = builtins.open
    parts = []

    class HalfWriter:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax") and any(p in os.path.abspath(str(file)) for p in parts):
            return HalfWriter(f)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    return parts


def test_data_yaml_on_a_full_disk_keeps_the_previous_one(tmp_path, full_disk):
    path = tmp_path / "data.yaml"
    write_data_yaml(str(path), str(tmp_path / "export"), {0: "circle"}, low_light=LowLightSpec("lv2021", seed=1))
    before = path.read_bytes()
    full_disk.append(str(tmp_path))
    with pytest.raises(OSError, match="No space left"):
        write_data_yaml(str(path), str(tmp_path / "export"), {0: "square"}, low_light=LowLightSpec("lv2021"))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["data.yaml"]  # no temporary left


def test_export_index_on_a_full_disk_keeps_the_previous_one(tmp_path, full_disk):
    register_demo(prefix="yolowrites_demo", root=str(tmp_path / "demo"), spec=SPEC)
    root = tmp_path / "export"
    export_yolo_dataset("yolowrites_demo_val", str(root), "val")
    before = read_index(str(root), "val")
    full_disk.append("val.wnlb.json")  # the index is written last, once every label is there
    with pytest.raises(OSError, match="No space left"):
        export_yolo_dataset("yolowrites_demo_val", str(root), "val")
    full_disk.clear()
    assert read_index(str(root), "val") == before
    assert sorted(os.listdir(root)) == ["images", "labels", "val.wnlb.json"]  # no temporary left


def test_font_for_ultralytics_never_half_placed(tmp_path, monkeypatch):
    def full_disk_copy(source, target):
        with open(target, "wb") as f:
            f.write(b"\x00\x01")
        raise OSError(errno.ENOSPC, "No space left on device", target)

    monkeypatch.setattr(env.shutil, "copyfile", full_disk_copy)
    env._provide_font(str(tmp_path))  # a warning, nothing else depends on the font
    assert os.listdir(tmp_path / "Ultralytics") == []
    monkeypatch.undo()
    env._provide_font(str(tmp_path))
    assert os.listdir(tmp_path / "Ultralytics") == ["Arial.ttf"]
    assert os.path.getsize(tmp_path / "Ultralytics" / "Arial.ttf") > 100_000
