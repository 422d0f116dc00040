"""Offline low-light preparation (datasets/prepare_lowlight_coco.py): end to end on a tiny COCO
folder, byte-identical output whatever the worker count or interruptions, and bad input."""

import filecmp
import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from wnlb_d2.data.prepare import default_output_annotations, prepare_lowlight
from helpers import load_script


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "datasets", "prepare_lowlight_coco.py")


def _load_cli():
    return load_script("datasets/prepare_lowlight_coco.py")


main = _load_cli().main


def _scene(seed, h=24, w=32):
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 256, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (5, 5), 0)


def _write_coco(root, extra_images=()):
    """A tiny COCO split: PNG, JPEG, a sub-folder, grayscale, 16-bit and RGBA inputs."""
    images_dir = os.path.join(root, "images")
    os.makedirs(os.path.join(images_dir, "sub"))
    names = ["a.png", "b.jpg", "sub/c.png", "d.JPEG", "gray.png", "deep16.png", "rgba.png"]
    cv2.imwrite(os.path.join(images_dir, "a.png"), _scene(1))
    cv2.imwrite(os.path.join(images_dir, "b.jpg"), _scene(2))
    cv2.imwrite(os.path.join(images_dir, "sub/c.png"), _scene(3))
    cv2.imwrite(os.path.join(images_dir, "d.JPEG"), _scene(4))
    Image.fromarray(_scene(5)[:, :, 0]).save(os.path.join(images_dir, "gray.png"))
    # A uint16 array gives a 16-bit image by itself; Pillow >= 10 rejects mode="I;16" here.
    deep16 = Image.fromarray(_scene(6)[:, :, 1].astype(np.uint16) * 257)
    assert deep16.mode == "I;16"
    deep16.save(os.path.join(images_dir, "deep16.png"))
    rgba = np.dstack([_scene(7)[:, :, ::-1], np.full((24, 32), 200, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(os.path.join(images_dir, "rgba.png"))
    names += list(extra_images)
    coco = {
        "images": [{"id": i + 1, "file_name": n, "height": 24, "width": 32} for i, n in enumerate(names)],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "area": 64,
                         "iscrowd": 0, "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    os.makedirs(os.path.join(root, "annotations"))
    json_file = os.path.join(root, "annotations", "instances_tiny.json")
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return images_dir, json_file, names


def _tree(folder):
    """Relative path -> bytes of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _manifest(path):
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    return lines[0], lines[1:]


@pytest.fixture
def tiny(tmp_path):
    return _write_coco(str(tmp_path / "src"))


def test_end_to_end_cli(tiny, tmp_path):
    images_dir, json_file, names = tiny
    out = str(tmp_path / "low" / "tiny")
    code = main(["--images", images_dir, "--annotations", json_file, "--output", out,
                 "--pipeline", "lv2021", "--seed", "3", "--workers", "1", "--no-progress"])
    assert code == 0
    for name in names:
        src = cv2.imread(os.path.join(images_dir, name), cv2.IMREAD_COLOR)
        dst_path = os.path.join(out, name)
        assert os.path.isfile(dst_path), name
        dark = cv2.imread(dst_path, cv2.IMREAD_UNCHANGED)
        # Same size, always 8-bit 3-channel, darker than the source.
        assert dark.shape == (24, 32, 3) and dark.dtype == np.uint8, name
        assert dark.mean() < 0.8 * src.mean(), name
    # Same format as the source: PNG stays PNG, JPEG stays JPEG.
    with open(os.path.join(out, "a.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "d.JPEG"), "rb") as f:
        assert f.read(2) == b"\xff\xd8"
    header, records = _manifest(os.path.join(out, "manifest.jsonl"))
    assert header["pipeline"] == "lv2021" and header["seed"] == 3
    assert [r["file_name"] for r in records] == names
    assert all(r["status"] == "ok" and r["params"]["pipeline"] == "lv2021" for r in records)
    # Sampled parameters differ per image (per-file generators), within the lv2021 ranges.
    gammas = [r["params"]["gamma"] for r in records]
    assert len(set(gammas)) == len(gammas) and all(1.5 <= g <= 5 for g in gammas)
    # The annotation JSON is reused byte for byte, beside the output (COCO layout).
    copy = default_output_annotations(out, json_file)
    assert copy == str(tmp_path / "low" / "annotations" / "instances_tiny.json")
    assert filecmp.cmp(copy, json_file, shallow=False)


def test_workers_and_interruptions_give_byte_identical_files(tiny, tmp_path):
    images_dir, json_file, names = tiny

    def run(out, **kw):
        return prepare_lowlight(images_dir, json_file, out, pipeline="unprocess", seed=7,
                                output_annotations=out + "_annotations.json", progress=False, **kw)

    ref = str(tmp_path / "ref")
    assert run(ref, workers=1).complete
    out = str(tmp_path / "resumed")
    partial = run(out, workers=2, limit=4)
    assert partial.rendered == 4 and not partial.complete
    assert not os.path.exists(out + "_annotations.json")  # written only when complete
    # What a killed run can leave: a stale temporary file, a finished image whose manifest
    # line was never written (here: its file replaced by garbage), a partial manifest line,
    # and an image deleted by hand.
    stale = os.path.join(out, "sub", ".c.png.tmp.99999")
    with open(stale, "wb") as f:
        f.write(b"half an image")
    with open(os.path.join(out, names[5]), "wb") as f:
        f.write(b"not rendered by this seed")
    with open(os.path.join(out, "manifest.jsonl"), "a") as f:
        f.write('{"file_name": "gray.png", "sta')
    os.remove(os.path.join(out, names[1]))
    resumed = run(out, workers=2)
    assert resumed.complete and resumed.skipped == 3 and resumed.rendered == len(names) - 3
    assert not os.path.exists(stale)
    assert _tree(out) == _tree(ref)
    assert filecmp.cmp(out + "_annotations.json", ref + "_annotations.json", shallow=False)
    # A third run has nothing left to do and changes nothing.
    again = run(out, workers=2)
    assert again.rendered == 0 and again.skipped == len(names)
    assert _tree(out) == _tree(ref)


def test_bad_images_are_counted_logged_and_listed(tmp_path, caplog):
    bad = ["truncated.png", "empty.jpg", "text.png", "movie.gif", "missing.png"]
    images_dir, json_file, names = _write_coco(str(tmp_path / "src"), extra_images=bad)
    ok_png = cv2.imencode(".png", _scene(9))[1].tobytes()
    with open(os.path.join(images_dir, "truncated.png"), "wb") as f:
        f.write(ok_png[: len(ok_png) // 2])
    open(os.path.join(images_dir, "empty.jpg"), "wb").close()
    with open(os.path.join(images_dir, "text.png"), "w") as f:
        f.write("this is not an image")
    Image.fromarray(_scene(8)).save(os.path.join(images_dir, "movie.gif"))
    out = str(tmp_path / "low" / "out")
    with caplog.at_level(logging.WARNING, logger="wnlb_d2.data.prepare"):
        code = main(["--images", images_dir, "--annotations", json_file, "--output", out,
                     "--workers", "2", "--no-progress"])
    assert code == 1
    _, records = _manifest(os.path.join(out, "manifest.jsonl"))
    status = {r["file_name"]: r for r in records}
    assert {n for n, r in status.items() if r["status"] == "failed"} == set(bad)
    for name in bad:
        assert name in status[name]["error"], status[name]["error"]
        assert not os.path.exists(os.path.join(out, name))
    assert all(os.path.isfile(os.path.join(out, n)) for n in names if n not in bad)
    assert "5 of 12 images could not be rendered" in caplog.text
    # The dataset is incomplete: no annotation copy that would point at missing images.
    assert not os.path.exists(default_output_annotations(out, json_file))


def _run_main(args, caplog):
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="wnlb_d2.data.prepare"):
        code = main(args + ["--no-progress", "--workers", "1"])
    return code, caplog.text


def test_bad_input_gives_clear_errors(tiny, tmp_path, caplog):
    images_dir, json_file, _ = tiny
    out = str(tmp_path / "out")
    code, text = _run_main(["--images", str(tmp_path / "nope"), "--annotations", json_file,
                            "--output", out], caplog)
    assert code == 2 and str(tmp_path / "nope") in text
    code, text = _run_main(["--images", images_dir, "--annotations", str(tmp_path / "no.json"),
                            "--output", out], caplog)
    assert code == 2 and "no.json" in text and "not found" in text
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"images": [')
    code, text = _run_main(["--images", images_dir, "--annotations", str(corrupt), "--output", out], caplog)
    assert code == 2 and "corrupt.json is not valid JSON" in text
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    code, text = _run_main(["--images", images_dir, "--annotations", str(empty), "--output", out], caplog)
    assert code == 2 and "empty.json lists no images (empty dataset)" in text
    escaping = tmp_path / "escaping.json"
    escaping.write_text(json.dumps({"images": [{"id": 1, "file_name": "../x.png"}], "annotations": [],
                                    "categories": []}))
    code, text = _run_main(["--images", images_dir, "--annotations", str(escaping),
                            "--output", out], caplog)
    assert code == 2 and "'../x.png'" in text
    code, text = _run_main(["--images", images_dir, "--annotations", json_file,
                            "--output", images_dir], caplog)
    assert code == 2 and "would overwrite the originals" in text
    code, text = _run_main(["--images", images_dir, "--annotations", json_file, "--output", out,
                            "--override", "gamma=[-1, 2]"], caplog)
    assert code == 2 and "gamma" in text
    # Resuming with another seed would mix two renderings: refused, unless --overwrite.
    assert _run_main(["--images", images_dir, "--annotations", json_file, "--output", out,
                      "--limit", "2"], caplog)[0] == 0
    code, text = _run_main(["--images", images_dir, "--annotations", json_file, "--output", out,
                            "--seed", "1"], caplog)
    assert code == 2 and "'seed': 0" in text and "'seed': 1" in text
    assert _run_main(["--images", images_dir, "--annotations", json_file, "--output", out,
                      "--seed", "1", "--overwrite"], caplog)[0] == 0


def test_script_help_documents_every_option():
    proc = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for option in ("--images", "--annotations", "--output", "--pipeline", "--seed", "--workers",
                   "--output-annotations", "--manifest", "--override", "--jpeg-quality",
                   "--png-compression", "--limit", "--overwrite", "--no-progress"):
        assert option in proc.stdout
    assert "{lv2021,unprocess}" in proc.stdout and "Exit status" in proc.stdout


def test_output_that_is_a_file_is_one_line_exit_2(tiny, tmp_path, caplog):
    images_dir, json_file, _ = tiny
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("keep me")
    code, text = _run_main(["--images", images_dir, "--annotations", json_file, "--output", str(a_file)], caplog)
    assert code == 2 and "a_file.txt is a file" in text and "Traceback" not in text
    assert a_file.read_text() == "keep me"


def test_resume_renders_again_a_file_truncated_or_changed_after_the_run(tiny, tmp_path, caplog):
    images_dir, json_file, names = tiny
    out = str(tmp_path / "out")
    assert prepare_lowlight(images_dir, json_file, out, progress=False).complete
    records = {r["file_name"]: r for r in _manifest(os.path.join(out, "manifest.jsonl"))[1]}
    assert records["a.png"]["size"] == os.path.getsize(os.path.join(out, "a.png"))
    assert len(records["a.png"]["blake2b"]) == 32
    good = {n: open(os.path.join(out, n), "rb").read() for n in ("a.png", "sub/c.png")}
    with open(os.path.join(out, "a.png"), "r+b") as f:  # truncated after the run
        f.truncate(40)
    changed = bytearray(good["sub/c.png"])
    changed[-20] ^= 0xFF  # same size, other bytes
    with open(os.path.join(out, "sub/c.png"), "wb") as f:
        f.write(changed)
    with caplog.at_level(logging.WARNING, logger="wnlb_d2.data.prepare"):
        result = prepare_lowlight(images_dir, json_file, out, progress=False)
    assert result.rendered == 2 and result.skipped == len(names) - 2
    assert "a.png again: it has 40 bytes" in caplog.text and "c.png again: its BLAKE2b hash differs" in caplog.text
    for n, data in good.items():
        assert open(os.path.join(out, n), "rb").read() == data


def test_offline_copy_equals_the_on_the_fly_evaluation_degradation(tiny, tmp_path):
    """One test set: prepared offline or degraded by the mapper, wherever it is registered."""
    from helpers import make_cfg

    from wnlb_d2.data import LowLightDatasetMapper
    from wnlb_d2.data.datasets.coco_instances import load_coco_instances

    images_dir, json_file, names = tiny
    out = str(tmp_path / "lowlight" / "images")
    assert prepare_lowlight(images_dir, json_file, out, seed=5, progress=False).complete
    cfg = make_cfg()
    cfg.INPUT.LOW_LIGHT.ENABLED, cfg.INPUT.LOW_LIGHT.TEST, cfg.INPUT.LOW_LIGHT.SEED = True, True, 5
    on_the_fly = LowLightDatasetMapper(cfg, is_train=False)
    cfg.INPUT.LOW_LIGHT.ENABLED = False
    plain = LowLightDatasetMapper(cfg, is_train=False)
    normal = load_coco_instances(json_file, images_dir)
    offline = load_coco_instances(json_file, out)
    compared = 0
    for a, b in zip(normal, offline):
        if not a["file_name"].endswith(".png"):  # JPEG outputs are re-compressed: close, not equal
            continue
        assert a["image_id"] == b["image_id"]
        assert on_the_fly(a)["image"].numpy().tobytes() == plain(b)["image"].numpy().tobytes(), a["file_name"]
        compared += 1
    assert compared >= 3


def test_an_image_id_that_cannot_seed_is_refused(tiny, tmp_path, caplog):
    images_dir, _, _ = tiny
    bad = tmp_path / "float_id.json"
    bad.write_text(json.dumps({"images": [{"id": 1.5, "file_name": "a.png"}], "annotations": [],
                               "categories": []}))
    code, text = _run_main(["--images", images_dir, "--annotations", str(bad), "--output", str(tmp_path / "o")],
                           caplog)
    assert code == 2 and "has id 1.5; expected an int or a str" in text


# --- issue 20: another file at the annotation copy's destination, failed writes -----------------

def test_another_file_at_the_annotation_destination_is_refused_before_anything_is_written(tiny, tmp_path, caplog):
    images_dir, json_file, names = tiny
    out = str(tmp_path / "low" / "tiny")
    dest = default_output_annotations(out, json_file)
    os.makedirs(os.path.dirname(dest))
    with open(dest, "w") as f:  # e.g. the unfiltered dataset's JSON of the same name
        f.write('{"images": [], "note": "not the copy"}')
    args = ["--images", images_dir, "--annotations", json_file, "--output", out]
    code, text = _run_main(args, caplog)
    assert code == 2 and f"{dest} exists and differs from {json_file}: not replacing it" in text, text
    assert "\n" not in text.strip() and "Traceback" not in text
    assert open(dest).read() == '{"images": [], "note": "not the copy"}'
    assert not os.path.exists(out), "nothing is rendered when the run is refused"
    # An explicit --output-annotations is protected the same way.
    other = tmp_path / "mine.json"
    other.write_text("{}")
    code, text = _run_main(args + ["--output-annotations", str(other)], caplog)
    assert code == 2 and f"{other} exists and differs" in text and other.read_text() == "{}"
    # A byte-identical copy (an earlier run of the same command, a resume) is fine.
    os.remove(dest)
    assert _run_main(args + ["--limit", "3"], caplog)[0] == 0 and not os.path.exists(dest)
    assert _run_main(args, caplog)[0] == 0 and filecmp.cmp(dest, json_file, shallow=False)
    assert _run_main(args, caplog)[0] == 0 and filecmp.cmp(dest, json_file, shallow=False)


def _full_disk_at(target, monkeypatch):
    """Make the atomic write of ``target`` (a path suffix) fail as a full disk does: part of the
    data reaches the temporary, then the flush raises ENOSPC without a file name."""
    import errno

    from wnlb_d2.data import prepare
    from wnlb_d2.utils.io import atomic_write

    real = prepare.atomic_write_bytes

    def writer(path, data, durable=False):
        if not path.endswith(target):
            return real(path, data, durable=durable)
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(prepare, "atomic_write_bytes", writer)


@pytest.mark.parametrize("what", ["image", "manifest", "annotation copy"])
def test_a_failed_write_is_one_line_naming_the_file_and_a_rerun_resumes(tiny, tmp_path, caplog, monkeypatch, what):
    from wnlb_d2.data import prepare
    from wnlb_d2.utils.io import is_temporary

    images_dir, json_file, names = tiny
    out = str(tmp_path / "low" / "tiny")
    dest = default_output_annotations(out, json_file)
    if what == "image":
        failed = os.path.join(out, "sub/c.png")
        _full_disk_at("sub/c.png", monkeypatch)
    elif what == "annotation copy":
        failed = dest
        _full_disk_at(os.path.basename(dest), monkeypatch)
    else:  # the appended manifest lines go to a real full device
        failed = os.path.join(out, "manifest.jsonl")
        start = prepare._Manifest.start

        def start_on_a_full_disk(self, fresh):
            start(self, fresh)
            self._file.close()
            self._file = open("/dev/full", "a")

        monkeypatch.setattr(prepare._Manifest, "start", start_on_a_full_disk)
    args = ["--images", images_dir, "--annotations", json_file, "--output", out]
    code, text = _run_main(args, caplog)
    assert code == 1, text
    assert f"{failed}: No space left on device (what was rendered is kept" in text, text
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
    leftovers = [os.path.join(d, n) for d, _, files in os.walk(os.path.dirname(out)) for n in files if is_temporary(n)]
    assert leftovers == [] and not os.path.exists(dest)
    if what == "image":
        assert not os.path.exists(failed)
    monkeypatch.undo()
    assert _run_main(args, caplog)[0] == 0
    assert filecmp.cmp(dest, json_file, shallow=False)
    ref = str(tmp_path / "ref" / "tiny")
    assert prepare_lowlight(images_dir, json_file, ref, progress=False).complete
    assert _tree(out) == _tree(ref)
