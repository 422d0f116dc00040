"""One writer: files and folders get their final names only in wnlb_d2/utils/io.py (atomic_write,
publish_folder), and the demo dataset's folder is published through it."""

import os
import re

import pytest

from wnlb_d2.data import demo_dataset
from wnlb_d2.data.demo_dataset import DemoSpec, ensure_demo_dataset
from wnlb_d2.utils.io import publish_folder, temporary_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITER = os.path.join("wnlb_d2", "utils", "io.py")
# os.replace / os.rename, `from os import rename`, pathlib's Path.rename.
RENAME = re.compile(r"\bos\.(replace|rename)\b|from\s+os\s+import\s+.*\b(replace|rename)\b|\.rename\(")


def _python_files():
    for top in ("wnlb_d2", "tools", "datasets"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.relpath(os.path.join(folder, name), ROOT)
    yield "train_net.py"


def test_only_the_io_module_renames_files():
    found = []
    for rel in _python_files():
        with open(os.path.join(ROOT, rel)) as f:
            for number, line in enumerate(f, 1):
                if RENAME.search(line) and rel != WRITER:
                    found.append(f"{rel}:{number}: {line.strip()}")
    assert found == [], "write through wnlb_d2.utils.io (atomic_write, publish_folder):\n" + "\n".join(found)


def test_publish_folder_renames_once_and_reports_a_folder_published_first(tmp_path):
    tmp = temporary_folder(str(tmp_path), "set")
    (tmp_path / os.path.basename(tmp) / "a.txt").write_text("mine")
    final = str(tmp_path / "set")
    assert publish_folder(tmp, final) is True
    assert os.listdir(tmp_path) == ["set"] and (tmp_path / "set" / "a.txt").read_text() == "mine"
    second = temporary_folder(str(tmp_path), "set")
    (tmp_path / os.path.basename(second) / "b.txt").write_text("theirs")
    assert publish_folder(second, final) is False  # the first one stays; ours is the caller's to drop
    assert os.listdir(final) == ["a.txt"] and os.path.isdir(second)
    with pytest.raises(FileNotFoundError):
        publish_folder(str(tmp_path / "missing"), str(tmp_path / "other"))


@pytest.mark.parametrize("theirs_complete", [True, False])
def test_demo_dataset_published_by_another_process_first(tmp_path, monkeypatch, theirs_complete):
    spec = DemoSpec(image_size=64, num_train=2, num_val=2, seed=5)
    root = str(tmp_path)
    final = os.path.join(root, spec.key)
    real_generate = demo_dataset.generate_demo_dataset

    def raced(folder, *args, **kwargs):
        real_generate(folder, *args, **kwargs)
        # Another process publishes its copy (complete, or junk) while ours is still unpublished.
        other = temporary_folder(root, "other")
        if theirs_complete:
            real_generate(other, *args, **kwargs)
        else:
            with open(os.path.join(other, "partial.png"), "wb") as f:
                f.write(b"")
        assert publish_folder(other, final)

    monkeypatch.setattr(demo_dataset, "generate_demo_dataset", raced)
    if theirs_complete:
        assert ensure_demo_dataset(root, spec, progress=False, workers=1) == final
        assert os.path.isfile(os.path.join(final, "info.json"))
    else:
        with pytest.raises(RuntimeError, match="appeared while the demo dataset was generated"):
            ensure_demo_dataset(root, spec, progress=False, workers=1)
    assert os.listdir(root) == [spec.key]  # our temporary copy is gone either way
