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


def test_power_zero_safe_equals_numpy_power_bit_for_bit_with_zeros():
    from wnlb_d2.data.synthesis.camera import power_zero_safe

    rng = np.random.default_rng(4)
    x = np.clip(rng.standard_normal((37, 53), dtype=np.float32) * 0.3 + 0.1, 0.0, 1.0)
    x[0, :5] = [0.0, 1.0, 1e-38, 1e-45, 0.5]  # zero, one, a normal and a subnormal tiny value
    assert (x == 0).mean() > 0.1
    for e in (np.float32(1 / 2.2), np.float32(0.38), np.float32(1.0)):
        expect = np.power(x, e)
        got = power_zero_safe(x, e)
        assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expect.view(np.uint32))
        inplace = x.copy()
        assert power_zero_safe(inplace, e, out=inplace) is inplace
        assert np.array_equal(inplace.view(np.uint32), expect.view(np.uint32))


def test_torch_noise_source_is_seeded_by_one_draw_and_standard_normal():
    from wnlb_d2.data.synthesis.common import standard_normal

    rng = np.random.default_rng(0)
    assert np.array_equal(standard_normal(rng, (3, 4)), np.random.default_rng(0).standard_normal((3, 4), dtype=np.float32))
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    x = standard_normal(a, (400, 500), "torch")
    assert x.dtype == np.float32 and x.flags.writeable
    assert np.array_equal(x, standard_normal(b, (400, 500), "torch"))  # reproducible from the generator
    b2 = np.random.default_rng(1)
    b2.integers(0, 2**63 - 1)
    assert a.uniform() == b2.uniform()  # it consumed exactly one integer
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1.0) < 0.01
    with pytest.raises(ValueError, match="source must be one of"):
        standard_normal(a, (2,), "cuda")


@pytest.mark.parametrize("name", ["lv2021", "unprocess"])
def test_torch_noise_keeps_the_parameters_and_the_image_statistics(name):
    from wnlb_d2.data.synthesis import build_pipeline as build

    img = cv2.resize(cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), (160, 120))
    pipe = build(name)
    fast = pipe.with_noise_source("torch")
    assert pipe.noise_source == "numpy" and fast.noise_source == "torch" and "noise_source='torch'" in repr(fast)
    for seed in range(3):
        (a, pa), (b, pb) = pipe(img, np.random.default_rng(seed), "BGR"), fast(img, np.random.default_rng(seed), "BGR")
        assert pa == pb
        assert abs(float(a.mean()) - float(b.mean())) < 0.5
        # The noise's spread: the difference to a 3x3 blur, alike within a few percent.
        spread = [float(np.abs(x.astype(np.float32) - cv2.blur(x, (3, 3)).astype(np.float32)).mean()) for x in (a, b)]
        assert abs(spread[0] - spread[1]) <= 0.05 * max(spread) + 0.05
