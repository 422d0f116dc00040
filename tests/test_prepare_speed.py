"""How prepare_lowlight writes (issue 24): each image durable before its rename, written while the
next one renders; the output does not depend on the batching."""

import os
import threading

import pytest

from wnlb_d2.data import prepare
from wnlb_d2.data.prepare import prepare_lowlight

from test_prepare_lowlight import _tree, _write_coco


@pytest.fixture
def tiny(tmp_path):
    return _write_coco(str(tmp_path / "src"))


def test_each_image_is_written_durably_while_the_next_one_renders(tiny, tmp_path, monkeypatch):
    images_dir, json_file, names = tiny
    out = str(tmp_path / "out")
    started = {n: threading.Event() for n in names}  # set when the image's rendering begins
    following = dict(zip(names, names[1:] + [None]))
    overlapped, durable_flags, threads = [], [], set()
    real_read, real_write = prepare.read_image, prepare.atomic_write_bytes

    def read(path, format="BGR"):
        started[os.path.relpath(path, images_dir)].set()
        return real_read(path, format=format)

    def write(path, data, durable=False):
        name = os.path.relpath(path, out)
        if name not in following:  # the manifest
            return real_write(path, data, durable=durable)
        later = following[name]
        # Code that writes an image before reading the next one would wait here in vain.
        overlapped.append(later is None or started[later].wait(timeout=20))
        durable_flags.append(durable)
        threads.add(threading.current_thread().name)
        return real_write(path, data, durable=durable)

    monkeypatch.setattr(prepare, "read_image", read)
    monkeypatch.setattr(prepare, "atomic_write_bytes", write)
    monkeypatch.setattr(prepare, "BATCH_SIZE", len(names))
    result = prepare_lowlight(images_dir, json_file, out, workers=1, progress=False)
    assert result.complete and result.rendered == len(names)
    assert overlapped == [True] * len(names)
    assert durable_flags == [True] * len(names)  # fsync before every rename, as before
    assert threading.main_thread().name not in threads


def test_batching_and_workers_do_not_change_the_files(tiny, tmp_path, monkeypatch):
    images_dir, json_file, names = tiny
    outs = []
    for batch, workers in ((1, 1), (3, 2), (8, 1)):
        monkeypatch.setattr(prepare, "BATCH_SIZE", batch)
        out = str(tmp_path / f"out_{batch}_{workers}")
        assert prepare_lowlight(images_dir, json_file, out, pipeline="lv2021", seed=4, workers=workers,
                                progress=False).complete
        outs.append(_tree(out))
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) == len(names) + 1  # and the manifest
