"""The pipelines rewritten for speed give today's outputs: against the frozen copies in synthesis_reference.py.

lv2021: bit for bit (same draws, same uint8 image) for every seed, size, channel order and
response curve tried. unprocess: the same draws, and every value within one 8-bit level, at most
UNPROCESS_OFF_FRACTION of them one level off (2e-5 measured on photos: the second colour matrix
is summed by OpenCV in another order than NumPy's).
"""

import cv2
import matplotlib.cbook
import numpy as np
import pytest

import synthesis_reference as reference
from wnlb_d2.data.synthesis import build_pipeline

SIZES = [(2, 2), (3, 5), (5, 2), (37, 51), (64, 96), (97, 130)]

#: The largest share of an unprocess image's values that may be one level off the reference.
UNPROCESS_OFF_FRACTION = 1e-4


def photo(h, w, seed=0):
    """A crop of a real photo (matplotlib's grace_hopper.jpg), uint8 BGR, at an offset set by the seed."""
    img = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    y, x = (seed * 41) % (img.shape[0] - h + 1), (seed * 67) % (img.shape[1] - w + 1)
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def noise_image(h, w, seed=0):
    """Every 8-bit value in every channel (for images of >= 256 pixels)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def assert_same(pipe, ref, image, seed, fmt):
    out, params = pipe(image, np.random.default_rng(seed), input_format=fmt)
    rng = np.random.default_rng(seed)
    expected, expected_params = ref(pipe, image, rng, fmt)
    assert params == expected_params
    assert out.dtype == np.uint8 and out.shape == image.shape and out.flags.c_contiguous
    assert out.tobytes() == expected.tobytes(), (seed, image.shape, fmt, int((out != expected).sum()))
    return out


def write_fake_dorf(path, gammas=(1.5, 2.2, 3.0), n=1024):
    irr = np.linspace(0, 1, n)
    with open(path, "w") as f:
        for i, g in enumerate(gammas):
            b = irr ** (1 / g)
            b[-40:] = 1.0  # a flat run: the inverse keeps the first sample of it
            f.write(f"curve{i}\ngraph {i}\nI =\n" + " ".join(f"{v:.6f}" for v in irr) + "\nB =\n"
                    + " ".join(f"{v:.6f}" for v in b) + "\n")


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_lv2021_is_bit_identical_to_the_float_pipeline(h, w, fmt):
    pipe = build_pipeline("lv2021")
    for seed in range(4):
        image = photo(h, w, seed) if seed % 2 else noise_image(h, w, seed)
        assert_same(pipe, reference.lv2021, image, seed, fmt)


def test_lv2021_is_bit_identical_on_a_whole_photo_and_a_strided_view():
    pipe = build_pipeline("lv2021")
    image = photo(600, 512, 1)  # all of grace_hopper.jpg
    for seed in (11, 12):
        assert_same(pipe, reference.lv2021, image, seed, "BGR")
    view = noise_image(200, 300, 5)[::2, 1::2]  # not contiguous: the mosaic reads it in place
    assert_same(pipe, reference.lv2021, view, 13, "BGR")
    assert_same(pipe, reference.lv2021, view, 13, "RGB")


@pytest.mark.parametrize("overrides", [
    {"sigma_s": (0, 0), "sigma_c": (0, 0)},
    {"alpha": (1, 1), "beta": (1, 1), "gamma": (1, 1), "crf_gamma": (1, 1)},
    {"gamma": (9.5, 10.0), "sigma_s": (0.9, 1.0), "sigma_c": (0.9, 1.0)},  # clipping on both sides
    {"gamma": (0.1, 0.2), "crf_gamma": (0.2, 0.3)},
])
def test_lv2021_is_bit_identical_at_the_edges_of_the_ranges(overrides):
    pipe = build_pipeline("lv2021", **overrides)
    for seed in range(3):
        assert_same(pipe, reference.lv2021, noise_image(33, 47, seed), seed, "BGR")


def test_lv2021_is_bit_identical_with_dorf_curves(tmp_path):
    path = tmp_path / "dorfCurves.txt"
    write_fake_dorf(path)
    pipe = build_pipeline("lv2021", crf_file=str(path))
    names = set()
    for seed in range(6):
        assert_same(pipe, reference.lv2021, noise_image(40, 58, seed), seed, "BGR" if seed % 2 else "RGB")
        names.add(pipe(noise_image(4, 4), np.random.default_rng(seed))[1]["crf_name"])
    assert len(names) > 1  # more than one curve was exercised


def test_lv2021_leaves_the_input_untouched_and_the_generator_where_the_reference_does():
    pipe, image = build_pipeline("lv2021"), noise_image(31, 45, 2)
    before = image.copy()
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    pipe(image, rng_a)
    reference.lv2021(pipe, image, rng_b)
    assert image.tobytes() == before.tobytes()
    assert rng_a.integers(0, 2**62) == rng_b.integers(0, 2**62)  # same number of draws consumed


def unprocess_difference(pipe, image, seed, fmt):
    """(largest difference in levels, number of values that differ) against the reference."""
    out, params = pipe(image, np.random.default_rng(seed), input_format=fmt)
    expected, expected_params = reference.unprocess(pipe, image, np.random.default_rng(seed), fmt)
    assert params == expected_params
    assert out.dtype == np.uint8 and out.shape == image.shape and out.flags.c_contiguous
    diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
    return int(diff.max()), int((diff > 0).sum())


@pytest.mark.parametrize("ccm_mode", ["mix", "pick"])
def test_unprocess_is_within_one_level_of_the_float_pipeline(ccm_mode):
    pipe = build_pipeline("unprocess", ccm_mode=ccm_mode)
    worst, off, total = 0, 0, 0
    for seed in range(6):
        for (h, w), fmt in zip(SIZES, ["BGR", "RGB"] * 3):
            image = photo(h, w, seed) if (seed + h) % 2 else noise_image(h, w, seed)
            d, n = unprocess_difference(pipe, image, seed, fmt)
            worst, off, total = max(worst, d), off + n, total + image.size
        d, n = unprocess_difference(pipe, photo(600, 512, seed), seed, "BGR" if seed % 2 else "RGB")
        worst, off, total = max(worst, d), off + n, total + 600 * 512 * 3
    assert worst <= 1 and off <= UNPROCESS_OFF_FRACTION * total, (worst, off, total)


def test_unprocess_highlights_and_bright_settings_stay_within_one_level():
    # Saturated pixels pass safe_inverse_gains' inflection point (only those are recomputed);
    # a bright exposure keeps most of the range in play.
    image = noise_image(64, 96, 1)
    image[:20, :30] = 255
    image[20:40, :30] = (250, 245, 240)
    pipe = build_pipeline("unprocess", darkness_mean=0.9, darkness_std=0.05, darkness_range=(0.8, 1.0))
    for seed in range(4):
        for fmt in ("BGR", "RGB"):
            d, n = unprocess_difference(pipe, image, seed, fmt)
            assert d <= 1 and n <= max(1, UNPROCESS_OFF_FRACTION * image.size), (seed, fmt, d, n)


def test_unprocess_highlights_are_protected_as_before():
    # Without noise and at full exposure, the protected highlights give the reference's output:
    # applying the plain gains to them instead would tint them (a different output).
    pipe = build_pipeline("unprocess", darkness_mean=1.0, darkness_std=0.0, darkness_range=(0.5, 1.0),
                          shot_noise=(1e-9, 1e-9), read_noise_intercept=-60.0, read_noise_std=0.0)
    image = np.full((8, 10, 3), 255, np.uint8)
    image[:, 5:] = (252, 250, 248)
    for seed in range(3):
        out, _ = pipe(image, np.random.default_rng(seed))
        expected, _ = reference.unprocess(pipe, image, np.random.default_rng(seed))
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
        assert out.max() >= 250  # white stays white, not tinted
