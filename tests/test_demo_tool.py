"""wnlb-demo (tools/demo.py): images, folders, globs, a video, degradation, failures and the exit status."""

import contextlib
import errno
import logging
import os
import resource
import signal

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from wnlb_d2.engine.predictor import LowLightPredictor, backbone_opts_for_checkpoint, expand_inputs
from wnlb_d2.engine.setup import setup_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "Base-Demo-R18-FPN.yaml")
# Tiny inputs; no dataset names, so nothing has to be registered or generated.
SMALL = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
         "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


@pytest.fixture(scope="module")
def demo():
    # The command's module (wnlb-demo; tools/demo.py runs it), itself: what a test patches on it
    # is what main calls.
    from wnlb_d2.cli import demo as module

    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A randomly initialised wNLB R18-FPN saved as a detectron2 .pth (blocks with w != 0)."""
    folder = tmp_path_factory.mktemp("ckpt")
    cfg = setup_cfg(DEMO_CONFIG, SMALL + ["MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone",
                                          "OUTPUT_DIR", str(folder)])
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for block in model.backbone.bottom_up.wnlb.values():
            block.fusion_weight.fill_(0.3)
    path = str(folder / "model_final.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


def _opts(checkpoint, *extra):
    return ["--opts", "MODEL.WEIGHTS", checkpoint, "MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone",
            *SMALL, *extra]


def _images(folder, n=2, size=(48, 64)):
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        cv2.circle(img, (20, 20), 12, (0, 200, 40), -1)
        p = str(folder / f"img{i}.png")
        cv2.imwrite(p, img)
        paths.append(p)
    return paths


def test_help_exits_zero(demo):
    with pytest.raises(SystemExit) as e:
        demo.main(["--help"])
    assert e.value.code == 0


def test_expand_inputs(tmp_path):
    paths = _images(tmp_path / "a")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    files, problems = expand_inputs([str(tmp_path / "a"), str(tmp_path / "a" / "*.png"), str(tmp_path / "nope.png"),
                                     str(tmp_path / "empty"), str(tmp_path / "*.jpg")])
    assert files == paths  # folder and glob give the same files once, text files skipped
    assert [p for p, _ in problems] == [str(tmp_path / "nope.png"), str(tmp_path / "empty"), str(tmp_path / "*.jpg")]


def test_images_with_failures(demo, checkpoint, tmp_path, capsys):
    paths = _images(tmp_path / "in")
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    rc = demo.main(["--config-file", DEMO_CONFIG, "--input", str(tmp_path / "in"), str(tmp_path / "missing.jpg"),
                    "--output", str(out), "--low-light", "lv2021", "--side-by-side", "--confidence-threshold", "0"]
                   + _opts(checkpoint))
    assert rc == 1
    err = capsys.readouterr().err
    assert "2 of 4 input(s) failed" in err and "broken.png" in err and "missing.jpg: no such file" in err
    written = sorted(os.listdir(out))
    assert written == ["img0.png", "img1.png"]
    pic = cv2.imread(str(out / "img0.png"))
    # Three labelled panels (input, low-light, predictions) of 64 px with two 4 px gaps.
    assert pic.shape[1] == 3 * 64 + 2 * 4 and pic.shape[0] > 48
    body = pic[-48:]
    inp, low, pred = body[:, :64].astype(int), body[:, 68:132].astype(int), body[:, 136:].astype(int)
    assert low.mean() < inp.mean() - 20  # degraded before the model saw it
    assert np.abs(pred - low).mean() > 1.0  # something was drawn on it
    # Deterministic degradation: a second run writes the same pictures.
    out2 = tmp_path / "out2"
    assert demo.main(["--config-file", DEMO_CONFIG, "--input", paths[0], "--output", str(out2) + os.sep,
                      "--low-light", "lv2021", "--side-by-side", "--confidence-threshold", "0"]
                     + _opts(checkpoint)) == 0
    np.testing.assert_array_equal(cv2.imread(str(out2 / "img0.png")), pic)


def test_single_image_to_file_with_enhancer(demo, checkpoint, tmp_path):
    (path,) = _images(tmp_path / "in", n=1)
    target = str(tmp_path / "result.jpg")
    # The config names the stock backbone; the blocks are read from the checkpoint.
    assert demo.main(["--config-file", DEMO_CONFIG, "--input", path, "--output", target, "--opts", "MODEL.WEIGHTS",
                      checkpoint, *SMALL, "INPUT.ENHANCER.NAME", "clahe"]) == 0
    assert cv2.imread(target).shape == (48, 64, 3)


def test_backbone_read_from_checkpoint(checkpoint, tmp_path):
    cfg = setup_cfg(DEMO_CONFIG, SMALL + ["OUTPUT_DIR", str(tmp_path)])
    assert backbone_opts_for_checkpoint(cfg, checkpoint) == [
        "MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone", "MODEL.WNLB.STAGES", "['res2', 'res3', 'res4', 'res5']"]
    stock = str(tmp_path / "stock.pth")
    torch.save({"model": build_model(cfg).state_dict()}, stock)
    assert backbone_opts_for_checkpoint(cfg, stock) == []
    cfg = setup_cfg(DEMO_CONFIG, SMALL + ["OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", checkpoint]
                    + backbone_opts_for_checkpoint(cfg, checkpoint))
    pred = LowLightPredictor(cfg)
    assert float(pred.model.backbone.bottom_up.wnlb["res3"].fusion_weight) == pytest.approx(0.3)


def test_predictor_stages(checkpoint, tmp_path):
    cfg = setup_cfg(DEMO_CONFIG, SMALL + ["MODEL.WEIGHTS", checkpoint, "OUTPUT_DIR", str(tmp_path),
                                          "MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone",
                                          "INPUT.ENHANCER.NAME", "gamma"])
    pred = LowLightPredictor(cfg, low_light="unprocess", seed=5)
    img = cv2.imread(_images(tmp_path / "in", n=1)[0])
    stages, out = pred.run(img, "img0.png")
    assert list(stages) == ["input", "low-light", "enhanced (gamma)"]
    assert out["instances"].image_size == (48, 64)
    np.testing.assert_array_equal(pred.prepare(img, "img0.png")["low-light"], stages["low-light"])
    assert not np.array_equal(pred.prepare(img, "other.png")["low-light"], stages["low-light"])
    # Called as detectron2's DefaultPredictor: image in, outputs out, the key optional (then the
    # image's bytes key the degradation, the same in every call).
    outputs = pred(img)
    assert set(outputs) == {"instances"} and outputs["instances"].image_size == (48, 64)
    keyed = pred.prepare(img)["low-light"]
    np.testing.assert_array_equal(pred.prepare(img.copy())["low-light"], keyed)
    assert not np.array_equal(pred.prepare(img[::-1].copy())["low-light"], keyed[::-1])
    assert torch.equal(pred(img, "img0.png")["instances"].pred_boxes.tensor, out["instances"].pred_boxes.tensor)


def test_video(demo, checkpoint, tmp_path):
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    assert writer.isOpened()
    for i in range(4):
        frame = np.full((48, 64, 3), 40 * i + 30, np.uint8)
        cv2.rectangle(frame, (8 + 4 * i, 8), (30 + 4 * i, 30), (250, 250, 250), -1)
        writer.write(frame)
    writer.release()
    out = str(tmp_path / "pred.avi")
    assert demo.main(["--config-file", DEMO_CONFIG, "--video-input", video, "--output", out, "--low-light", "lv2021"]
                     + _opts(checkpoint)) == 0
    cap = cv2.VideoCapture(out)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 4 and frames[0].shape == (48, 64, 3)
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]  # no temporary left
    # A folder output keeps the video's name; a missing or undecodable video fails with status 1.
    assert demo.main(["--config-file", DEMO_CONFIG, "--video-input", video, "--output", str(tmp_path / "vids") + os.sep]
                     + _opts(checkpoint)) == 0
    assert os.path.isfile(tmp_path / "vids" / "clip.avi")
    assert demo.main(["--config-file", DEMO_CONFIG, "--video-input", str(tmp_path / "none.avi")] + _opts(checkpoint)) == 1
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"0" * 100)
    assert demo.main(["--config-file", DEMO_CONFIG, "--video-input", str(junk)] + _opts(checkpoint)) == 1


def test_checkpoint_of_another_model_is_an_error(demo, tmp_path):
    (path,) = _images(tmp_path / "in", n=1)
    other = str(tmp_path / "other.pth")
    torch.save({"model": {"head.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(SystemExit) as e:
        demo.main(["--config-file", DEMO_CONFIG, "--input", path, "--opts", "MODEL.WEIGHTS", other, *SMALL])
    assert "demo.py: error: CheckpointMismatchError" in str(e.value.code)


def _write_video(path, n=6):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_an_output_that_would_overwrite_an_input_is_refused(demo, checkpoint, tmp_path, capsys):
    paths = _images(tmp_path / "in")
    before = {p: open(p, "rb").read() for p in paths}
    video = _write_video(str(tmp_path / "clip.avi"), n=2)
    video_bytes = open(video, "rb").read()
    cases = [
        ["--input", paths[0], "--output", paths[0]],  # the same file
        ["--input", paths[0], "--output", os.path.join(str(tmp_path), "in", "..", "in", "img0.png")],  # unresolved
        ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "in")],  # the folder itself
        ["--input", paths[1], "--output", str(tmp_path / "in") + os.sep],  # a folder holding that input
        ["--video-input", video, "--output", video],
        ["--video-input", video, "--output", str(tmp_path) + os.sep],  # folder output keeps the name
    ]
    for case in cases:
        capsys.readouterr()
        assert demo.main(["--config-file", DEMO_CONFIG, *case] + _opts(checkpoint)) == 2, case
        err = capsys.readouterr().err.strip()
        assert err.startswith("demo.py: error: --output would overwrite the input") and "\n" not in err, case
    assert {p: open(p, "rb").read() for p in paths} == before
    assert open(video, "rb").read() == video_bytes
    assert sorted(os.listdir(tmp_path / "in")) == ["img0.png", "img1.png"]
    # Another folder, even one inside the input folder, overwrites nothing: allowed.
    assert demo.main(["--config-file", DEMO_CONFIG, "--input", str(tmp_path / "in"), "--output",
                      str(tmp_path / "in" / "pred")] + _opts(checkpoint)) == 0
    assert sorted(os.listdir(tmp_path / "in" / "pred")) == ["img0.png", "img1.png"]


def test_a_truncated_video_warns_and_fails(demo, checkpoint, tmp_path, capsys, caplog):
    full = _write_video(str(tmp_path / "full.avi"), n=6)
    data = open(full, "rb").read()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])  # the header still announces 6 frames
    out = str(tmp_path / "pred.avi")
    assert demo.main(["--config-file", DEMO_CONFIG, "--video-input", str(cut), "--output", out]
                     + _opts(checkpoint)) == 1
    err = capsys.readouterr().err
    assert "1 of 1 input(s) failed" in err and "of the 6 frames its header announces" in err
    assert "truncated or damaged video" in caplog.text
    cap = cv2.VideoCapture(out)  # the frames that were decoded are still written
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert 0 < n < 6


SOLOV2_CONFIG = os.path.join(ROOT, "configs", "demo", "SOLOv2-Demo-R18-FPN.yaml")


def test_solov2_checkpoint_with_blocks(demo, tmp_path):
    """A wNLB SOLOv2 checkpoint: blocks read from it, its own score filter set, masks drawn."""
    cfg = setup_cfg(SOLOV2_CONFIG, SMALL + ["OUTPUT_DIR", str(tmp_path)] + demo.score_threshold_opts(0.25))
    assert cfg.MODEL.SOLOV2.SCORE_THRESH_TEST == 0.25 and cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.25
    cfg = setup_cfg(SOLOV2_CONFIG, SMALL + ["OUTPUT_DIR", str(tmp_path), "MODEL.BACKBONE.NAME",
                                            "build_resnet_wnlb_fpn_backbone"])
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for block in model.backbone.bottom_up.wnlb.values():
            block.fusion_weight.fill_(0.3)
        # Random heads score about 0.01 everywhere: one class made certain, so something is drawn.
        model.instance_head.cate_pred.bias[0] = 8.0
    ckpt = str(tmp_path / "solo.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    (path,) = _images(tmp_path / "in", n=1)
    out = tmp_path / "out.png"
    # The config names the stock backbone; the blocks come from the checkpoint.
    assert demo.main(["--config-file", SOLOV2_CONFIG, "--input", path, "--output", str(out), "--confidence-threshold",
                      "0.5", "--opts", "MODEL.WEIGHTS", ckpt, *SMALL]) == 0
    drawn = cv2.imread(str(out)).astype(int)
    original = cv2.imread(path).astype(int)
    assert drawn.shape == original.shape
    assert np.abs(drawn - original).mean() > 1.0  # masks were drawn
    cfg = setup_cfg(SOLOV2_CONFIG, SMALL + ["OUTPUT_DIR", str(tmp_path)])
    assert backbone_opts_for_checkpoint(cfg, ckpt)[:2] == ["MODEL.BACKBONE.NAME", "build_resnet_wnlb_fpn_backbone"]


@contextlib.contextmanager
def _disk_with_room_for(n_bytes):
    """Writes beyond ``n_bytes`` in any file fail at the system level (EFBIG, as a full disk's ENOSPC).

    RLIMIT_FSIZE makes the kernel refuse them; SIGXFSZ, which would kill the process, is
    ignored meanwhile. Only for short windows around one write: every file of the process is limited.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _temporaries(folder):
    return [n for n in os.listdir(folder) if ".tmp." in n]


def _count_frames(path):
    cap = cv2.VideoCapture(path)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_a_video_truncated_by_a_full_disk_fails_and_keeps_the_previous_output(demo, checkpoint, tmp_path, capsys,
                                                                              monkeypatch):
    video = _write_video(str(tmp_path / "night.avi"), n=6)
    out = tmp_path / "out" / "night.avi"
    out.parent.mkdir()
    out.write_bytes(b"a previous good output")
    real_writer = cv2.VideoWriter

    class FullDiskWriter:
        """OpenCV's own writer, with 20 kB left on the disk while it writes (it reports no error)."""

        def __init__(self, *args):
            self.writer = real_writer(*args)

        def isOpened(self):  # noqa: N802  (OpenCV's name)
            return self.writer.isOpened()

        def write(self, frame):
            with _disk_with_room_for(20_000):
                self.writer.write(frame)

        def release(self):
            with _disk_with_room_for(20_000):
                self.writer.release()

    monkeypatch.setattr(cv2, "VideoWriter", FullDiskWriter)
    rc = demo.main(["--config-file", DEMO_CONFIG, "--video-input", video, "--output", str(out)] + _opts(checkpoint))
    captured = capsys.readouterr()
    assert rc == 1 and "Wrote" not in captured.out
    assert "1 of 1 input(s) failed" in captured.err
    (line,) = [line for line in captured.err.splitlines() if line.startswith(f"  {video}")]
    assert line.startswith(f"  {video}: could not write the video {out}: the file has ")
    assert "the output was not replaced" in line
    assert out.read_bytes() == b"a previous good output"  # not replaced by the truncated file
    assert _temporaries(out.parent) == []
    # With room on the disk, the same command replaces it with every frame.
    monkeypatch.setattr(cv2, "VideoWriter", real_writer)
    assert demo.main(["--config-file", DEMO_CONFIG, "--video-input", video, "--output", str(out)]
                     + _opts(checkpoint)) == 0
    assert _count_frames(str(out)) == 6


def test_a_failed_image_or_frame_does_not_end_the_batch(demo, checkpoint, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    _images(folder)
    cv2.imwrite(str(folder / "dot.png"), np.full((1, 1, 3), 128, np.uint8))  # too small for lv2021
    out = tmp_path / "out"
    rc = demo.main(["--config-file", DEMO_CONFIG, "--input", str(folder), "--output", str(out), "--low-light",
                    "lv2021"] + _opts(checkpoint))
    err = capsys.readouterr().err
    assert rc == 1
    assert sorted(os.listdir(out)) == ["img0.png", "img1.png"]  # the batch went on after dot.png
    assert "1 of 3 input(s) failed" in err
    assert f"{folder / 'dot.png'}: ValueError: lv2021: image must be at least 2x2 pixels" in err
    # A video: frames 1 and 3 fail in the model; the others are still drawn and written.
    video = _write_video(str(tmp_path / "clip.avi"), n=5)
    from wnlb_d2.engine.predictor import LowLightPredictor

    real_predict = LowLightPredictor.predict
    calls = []

    def failing_predict(self, image):
        calls.append(len(calls))
        if calls[-1] in (1, 3):
            raise RuntimeError("simulated model failure")
        return real_predict(self, image)

    monkeypatch.setattr(LowLightPredictor, "predict", failing_predict)
    target = str(tmp_path / "clip_pred.avi")
    rc = demo.main(["--config-file", DEMO_CONFIG, "--video-input", video, "--output", target] + _opts(checkpoint))
    err = capsys.readouterr().err
    assert rc == 1 and _count_frames(target) == 3
    assert "1 of 1 input(s) failed" in err
    assert [line.strip() for line in err.splitlines() if line.startswith(f"  {video}:")] == [
        f"{video}: frame 1: RuntimeError: simulated model failure",
        f"{video}: frame 3: RuntimeError: simulated model failure"]


def test_huge_images_are_drawn_at_a_bounded_size(demo, checkpoint, tmp_path, caplog):
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.random.default_rng(0).integers(0, 255, (200, 6000, 3), dtype=np.uint8))
    base = ["--config-file", DEMO_CONFIG, "--input", str(wide), "--low-light", "lv2021", "--side-by-side"]
    # Three panels of 6000 px would make an 18008 px picture: the default bound shrinks them.
    assert demo.main(base + ["--output", str(tmp_path / "default.png")] + _opts(checkpoint)) == 0
    assert max(cv2.imread(str(tmp_path / "default.png")).shape[:2]) <= 4096  # the documented default
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wnlb_d2.demo"):
        assert demo.main(base + ["--max-picture-side", "1000", "--output", str(tmp_path / "small.png")]
                         + _opts(checkpoint)) == 0
    pic = cv2.imread(str(tmp_path / "small.png"))
    # 3 panels of (1000 - 2 gaps of 4) // 3 = 330 px; 200 px scaled by 330 / 6000 = 11 px, plus the title bar.
    assert pic.shape[1] == 3 * 330 + 2 * 4 and pic.shape[0] <= 1000
    assert "drawn at scale 0.055 instead of 1" in caplog.text and "--max-picture-side" in caplog.text
    with pytest.raises(SystemExit, match="--max-picture-side must be at least 256"):
        demo.main(base + ["--max-picture-side", "10"] + _opts(checkpoint))


def test_drawing_shrunk_keeps_the_predictions_in_place():
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from wnlb_d2.visualization import draw_predictions

    inst = Instances((200, 6000))
    inst.pred_boxes = Boxes(torch.tensor([[100.0, 20.0, 1100.0, 180.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([0])
    masks = torch.zeros((1, 200, 6000), dtype=torch.bool)
    masks[0, 20:180, 100:1100] = True
    inst.pred_masks = masks
    black = np.zeros((200, 6000, 3), np.uint8)
    drawn = draw_predictions(black, {"instances": inst}, MetadataCatalog.get("__unused"), 0.5, scale=0.1)
    assert drawn.shape == (20, 600, 3)
    coloured = np.nonzero(drawn.max(axis=(0, 2)) > 40)[0]
    # The mask's and box's 10..110 px (and the label's text, a little further right); nothing near
    # where the unscaled box (100..1100 px) would be.
    assert coloured.min() >= 8 and coloured.max() < 200
    assert set(range(12, 108)) <= set(coloured.tolist())


def test_a_full_disk_or_a_refused_write_is_reported_as_such(demo, checkpoint, tmp_path, capsys, monkeypatch):
    paths = _images(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "img0.png").write_bytes(b"a previous picture")
    real_write_image = demo._write_image

    def write_on_a_full_disk(path, image):
        with _disk_with_room_for(1000):  # the PNGs of these noise images are about 9 kB
            return real_write_image(path, image)

    monkeypatch.setattr(demo, "_write_image", write_on_a_full_disk)
    assert demo.main(["--config-file", DEMO_CONFIG, "--input", *paths, "--output", str(out)] + _opts(checkpoint)) == 1
    err = capsys.readouterr().err
    assert "unsupported extension" not in err
    for name in ("img0.png", "img1.png"):  # both attempted: the first failure did not end the batch
        assert f"could not write {out / name}: {os.strerror(errno.EFBIG)}" in err
    assert os.listdir(out) == ["img0.png"] and (out / "img0.png").read_bytes() == b"a previous picture"
    monkeypatch.setattr(demo, "_write_image", real_write_image)

    # ENOSPC and EACCES from the system, as the file is opened or written.
    import wnlb_d2.utils.io as io_module

    for code in (errno.ENOSPC, errno.EACCES):
        def refusing_open(path, mode="r", *args, code=code, **kwargs):
            if "w" in mode and os.path.dirname(path) == str(out):
                raise OSError(code, os.strerror(code), path)
            return open(path, mode, *args, **kwargs)

        monkeypatch.setattr(io_module, "open", refusing_open, raising=False)
        assert demo.main(["--config-file", DEMO_CONFIG, "--input", paths[0], "--output", str(out) + os.sep]
                         + _opts(checkpoint)) == 1
        err = capsys.readouterr().err
        assert f"  {paths[0]}: could not write {out / 'img0.png'}: {os.strerror(code)}" in err.splitlines()
        assert (out / "img0.png").read_bytes() == b"a previous picture"
    monkeypatch.undo()

    # An output folder that cannot be made (its parent is a file): named, with the system's reason.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    video = _write_video(str(tmp_path / "clip.avi"), n=2)
    for case in (["--input", paths[0], "--output", str(blocker / "pics") + os.sep],
                 ["--video-input", video, "--output", str(blocker / "vid" / "clip.avi")]):
        assert demo.main(["--config-file", DEMO_CONFIG, *case] + _opts(checkpoint)) == 1, case
        err = capsys.readouterr().err
        assert f"could not create the folder {blocker / case[-1].split(os.sep)[-2]}: {os.strerror(errno.ENOTDIR)}" in err
