"""read_image: every image kind a dataset may hold, and clear errors for broken files."""

import logging

import cv2
import numpy as np
import pytest
from detectron2.data import detection_utils
from PIL import Image

from wnlb_d2.data import image_io
from wnlb_d2.data.image_io import ImageReadError, read_image

H, W = 64, 96


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    # Conversions warn once per process; each test starts with none warned yet.
    monkeypatch.setattr(image_io, "_warned", set())


def rgb_image(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 90)], axis=-1)
    img[10:30, 20:50] = rng.integers(0, 256, (20, 30, 3))
    return img.astype(np.uint8)


def test_png_round_trip_in_both_channel_orders(tmp_path):
    rgb = rgb_image()
    path = str(tmp_path / "a.png")
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(read_image(path, "RGB"), rgb)
    bgr = read_image(path)
    assert bgr.dtype == np.uint8 and bgr.flags.c_contiguous
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])


def test_jpeg_reads_like_detectron2(tmp_path):
    path = str(tmp_path / "a.jpg")
    Image.fromarray(rgb_image()).save(path, quality=90)
    for fmt in ("BGR", "RGB"):
        np.testing.assert_array_equal(read_image(path, fmt), detection_utils.read_image(path, fmt))


def test_greyscale_becomes_three_equal_channels(tmp_path, caplog):
    grey = rgb_image()[:, :, 0]
    path = str(tmp_path / "g.png")
    Image.fromarray(grey).save(path)
    with caplog.at_level(logging.WARNING, logger=image_io.__name__):
        out = read_image(path)
    assert out.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)
    assert "g.png" in caplog.text and "L image converted to RGB" in caplog.text


def test_sixteen_bit_greyscale_is_scaled_with_a_warning(tmp_path, caplog):
    grey16 = (np.arange(H * W).reshape(H, W) * 10).astype(np.uint16)
    grey16[0, 0], grey16[0, 1] = 65535, 257
    path = str(tmp_path / "g16.png")
    assert cv2.imwrite(path, grey16)
    with caplog.at_level(logging.WARNING, logger=image_io.__name__):
        out = read_image(path)
    np.testing.assert_array_equal(out[:, :, 1], np.rint(grey16 / 257.0).astype(np.uint8))
    assert out[0, 0, 0] == 255 and out[0, 1, 2] == 1
    assert "16-bit greyscale" in caplog.text and "g16.png" in caplog.text


def test_sixteen_bit_colour_is_reduced_with_a_warning(tmp_path, caplog):
    rgb16 = rgb_image().astype(np.uint16) * 257 + 100
    path = str(tmp_path / "c16.png")
    assert cv2.imwrite(path, np.ascontiguousarray(rgb16[:, :, ::-1]))
    with caplog.at_level(logging.WARNING, logger=image_io.__name__):
        out = read_image(path, "RGB")
    np.testing.assert_array_equal(out, (rgb16 >> 8).astype(np.uint8))
    assert "16-bit colour" in caplog.text and "c16.png" in caplog.text


def test_alpha_is_dropped_keeping_the_stored_colours(tmp_path, caplog):
    rgb = rgb_image()
    alpha = np.zeros((H, W), np.uint8)  # fully transparent: colours must still be kept
    path = str(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(path)
    with caplog.at_level(logging.WARNING, logger=image_io.__name__):
        np.testing.assert_array_equal(read_image(path, "RGB"), rgb)
    assert "alpha channel of a RGBA image dropped" in caplog.text


def test_palette_with_transparency(tmp_path):
    img = Image.fromarray(rgb_image()).quantize(16)
    img.info["transparency"] = 0
    path = str(tmp_path / "p.png")
    img.save(path, transparency=0)
    out = read_image(path, "RGB")
    np.testing.assert_array_equal(out, np.asarray(Image.open(path).convert("RGBA"))[:, :, :3])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    rgb = rgb_image()
    path = str(tmp_path / "cmyk.jpg")
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = read_image(path, "RGB")
    assert out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - rgb).mean() < 4  # JPEG loss only


def test_exif_orientation_is_applied(tmp_path):
    rgb = rgb_image()
    path = str(tmp_path / "rot.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    stored = np.asarray(Image.open(path).convert("RGB"))  # decoded pixels, orientation ignored
    out = read_image(path, "RGB")
    assert out.shape == (W, H, 3)
    np.testing.assert_array_equal(out, np.rot90(stored, k=-1))
    np.testing.assert_array_equal(out, detection_utils.read_image(path, "RGB"))


@pytest.mark.parametrize("ext,keep", [(".jpg", 0.5), (".png", 0.6)])
def test_truncated_file_raises_naming_it(tmp_path, ext, keep):
    full = str(tmp_path / f"full{ext}")
    Image.fromarray(rgb_image()).save(full)
    data = open(full, "rb").read()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageReadError, match=f"cut\\{ext}.*(truncated|broken|EOF)"):
        read_image(str(cut))


def test_missing_empty_and_non_image_files_raise_naming_them(tmp_path):
    with pytest.raises(ImageReadError, match="nothere.jpg"):
        read_image(str(tmp_path / "nothere.jpg"))
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg.*empty"):
        read_image(str(tmp_path / "empty.jpg"))
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.jpg.*UnidentifiedImageError"):
        read_image(str(tmp_path / "notes.jpg"))


def test_float_images_are_refused_naming_the_mode(tmp_path):
    path = str(tmp_path / "f.tif")
    Image.fromarray(np.ones((H, W), np.float32)).save(path)
    with pytest.raises(ImageReadError, match="f.tif.*mode F"):
        read_image(path)


def test_image_read_error_is_a_value_error_and_bad_format_is_refused(tmp_path):
    assert issubclass(ImageReadError, ValueError)
    with pytest.raises(ValueError, match="format.*'YUV-BT.601'"):
        read_image(str(tmp_path / "x.png"), "YUV-BT.601")
