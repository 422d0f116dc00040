"""Low-light pipelines: shapes, determinism, channel order, parameter ranges, statistics, errors."""

import json

import numpy as np
import pytest
from detectron2.config import get_cfg

import wnlb_d2
from wnlb_d2.data.synthesis import (PIPELINES, Lv2021Pipeline, UnprocessPipeline, build_pipeline,
                                    build_pipeline_from_config, eval_rng, pipeline_arguments)
from wnlb_d2.data.synthesis.camera import (TabulatedResponse, demosaic_bilinear_rggb,
                                           load_dorf_curves, mosaic_rggb)
from wnlb_d2.data.synthesis.unprocess import (add_shot_read_noise, inverse_tone_map, process_raw,
                                              rgb2cam_matrix, unprocess_to_raw)

H, W = 64, 96


def scene(seed=0, h=H, w=W):
    """A uint8 RGB test image: colour gradients, a few flat shapes and fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, 1 - xx / w], axis=-1) * 180 + 30
    img[h // 4: h // 2, w // 5: w // 2] = (200, 40, 40)
    img[h // 2:, w // 2:] = (40, 160, 60)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def flat(level, h=H, w=W):
    return np.full((h, w, 3), level, dtype=np.uint8)


def cfg_with_low_light():
    cfg = get_cfg()
    wnlb_d2.add_wnlb_config(cfg)
    return cfg


# ---------------------------------------------------------------- common behaviour

@pytest.mark.parametrize("name", PIPELINES)
def test_output_is_uint8_same_shape_with_json_params(name):
    out, params = build_pipeline(name)(scene(), np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    assert params["pipeline"] == name
    assert all(type(v) in (int, float, str) for v in params.values()), params
    assert json.loads(json.dumps(params)) == params


@pytest.mark.parametrize("name", PIPELINES)
def test_same_seed_gives_byte_identical_output(name):
    pipe = build_pipeline(name)
    a, pa = pipe(scene(), np.random.default_rng(7))
    b, pb = build_pipeline(name)(scene(), np.random.default_rng(7))
    c, pc = pipe(scene(), np.random.default_rng(8))
    assert a.tobytes() == b.tobytes() and pa == pb
    assert a.tobytes() != c.tobytes() and pa != pc


@pytest.mark.parametrize("name", PIPELINES)
def test_bgr_and_rgb_inputs_give_the_same_degradation(name):
    pipe, rgb = build_pipeline(name), scene()
    out_rgb, _ = pipe(rgb, np.random.default_rng(3), input_format="RGB")
    out_bgr, _ = pipe(np.ascontiguousarray(rgb[:, :, ::-1]), np.random.default_rng(3), input_format="BGR")
    assert out_bgr.tobytes() == np.ascontiguousarray(out_rgb[:, :, ::-1]).tobytes()
    # The pipelines are not symmetric in R and B, so ignoring the format would be caught above.
    wrong, _ = pipe(np.ascontiguousarray(rgb[:, :, ::-1]), np.random.default_rng(3), input_format="RGB")
    assert wrong.tobytes() != np.ascontiguousarray(out_rgb[:, :, ::-1]).tobytes()
    # A strided view (reversed channels, a crop) degrades as its contiguous copy does.
    for fmt, view in (("BGR", rgb[:, :, ::-1]), ("RGB", rgb[3:-2, ::-1])):
        got, _ = pipe(view, np.random.default_rng(3), input_format=fmt)
        want, _ = pipe(np.ascontiguousarray(view), np.random.default_rng(3), input_format=fmt)
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("name", PIPELINES)
def test_bad_inputs_raise(name):
    pipe = build_pipeline(name)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="uint8"):
        pipe(scene().astype(np.float32), rng)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        pipe(scene()[:, :, :1], rng)
    with pytest.raises(ValueError, match="input_format"):
        pipe(scene(), rng, input_format="YUV")
    with pytest.raises(TypeError, match="Generator"):
        pipe(scene(), np.random.RandomState(0))


# ---------------------------------------------------------------- eval_rng

def test_eval_rng_is_a_pure_function_of_seed_and_key():
    draw = lambda seed, key: eval_rng(seed, key).integers(0, 2**32, size=4).tolist()  # noqa: E731
    assert draw(0, "img.jpg") == draw(0, "img.jpg")
    assert draw(0, 5) == draw(0, "5")
    assert len({str(draw(0, "a.jpg")), str(draw(1, "a.jpg")), str(draw(0, "b.jpg")), str(draw(0, 6))}) == 4
    # Golden value (SHA-256 + SeedSequence + PCG64): the same in every process, rank and run;
    # Python's salted hash() would change it between runs of this test.
    assert eval_rng(0, 139).integers(0, 2**32) == 3393624317


@pytest.mark.parametrize("seed,key", [(-1, 3), (1.5, 3), (True, 3), (0, 2.5), (0, None)])
def test_eval_rng_rejects_bad_seed_or_key(seed, key):
    with pytest.raises(ValueError, match="seed|image_key"):
        eval_rng(seed, key)


# ---------------------------------------------------------------- lv2021

def test_flat_colour_survives_mosaic_and_demosaic():
    for h, w in [(2, 2), (3, 5), (H, W)]:
        rgb = np.ones((h, w, 3), np.float32) * np.array([0.2, 0.5, 0.9], np.float32)
        np.testing.assert_array_equal(demosaic_bilinear_rggb(mosaic_rggb(rgb)), rgb)


def test_mosaic_is_rggb():
    rgb = np.stack([np.full((4, 4), v, np.float32) for v in (1.0, 2.0, 3.0)], axis=-1)
    np.testing.assert_array_equal(mosaic_rggb(rgb)[:2, :2], [[1.0, 2.0], [2.0, 3.0]])


def test_lv2021_without_noise_is_exactly_the_darkening_curve():
    # Zero noise: ICRF -> mosaic -> demosaic -> CRF is the identity on flat patches, so the
    # output is beta * (alpha * I) ** gamma computed in float and rounded once.
    pipe = Lv2021Pipeline(sigma_s=(0, 0), sigma_c=(0, 0))
    rng = np.random.default_rng(0)
    for level in (40, 128, 230):
        out, p = pipe(flat(level), rng)
        expected = p["beta"] * (p["alpha"] * level / 255) ** p["gamma"] * 255
        assert np.abs(out.astype(np.float64) - expected).max() <= 0.51, (level, p)


def test_lv2021_darkens_mid_grey_over_the_default_ranges():
    pipe, rng, level = build_pipeline("lv2021"), np.random.default_rng(1), 128
    ratios = []
    for _ in range(40):
        out, p = pipe(flat(level, 16, 16), rng)
        ratios.append(out.mean() / level)
    # Noise-free bounds: 0.5 * (0.9 * 0.5) ** 5 / 0.5 ~ 0.02 up to 0.5 ** 1.5 / 0.5 ~ 0.71.
    # Noise clipped at 0 lifts the darkest draws a little, never above the input.
    assert max(ratios) < 0.8 and min(ratios) < 0.25 and np.mean(ratios) < 0.5


def test_lv2021_noise_variance_is_sigma_s2_times_signal_plus_sigma_c2():
    # Identity darkening and a linear CRF leave only the noise: at the red sites of the
    # mosaic the red output is the noisy raw value itself (no interpolation).
    s, c = 0.1, 0.02
    pipe = Lv2021Pipeline(alpha=(1, 1), beta=(1, 1), gamma=(1, 1), crf_gamma=(1, 1),
                          sigma_s=(s, s), sigma_c=(c, c))
    rng, stds = np.random.default_rng(2), []
    for level in (26, 77, 153):
        out, _ = pipe(flat(level, 128, 128), rng, input_format="RGB")
        red = out[0::2, 0::2, 0] / 255.0
        L = level / 255.0
        expected_var = s**2 * L + c**2 + 1 / (12 * 255**2)
        assert abs(red.mean() - L) < 0.01
        assert red.var() == pytest.approx(expected_var, rel=0.15), level
        stds.append(red.std())
    assert stds[0] < stds[1] < stds[2]


def write_fake_dorf(path, gammas=(1.5, 2.2, 3.0), n=1024, flat_tail=False):
    """A file in the DoRF format: name, 'graph', 'I =', 1024 floats, 'B =', 1024 floats."""
    irr = np.linspace(0, 1, n)
    lines = []
    for g in gammas:
        b = irr ** (1 / g)
        if flat_tail:
            b = np.minimum(b, 0.9) / 0.9  # a clipped highlight: a flat run at 1.0
        lines += [f"curve gamma {g}", "graph 0", "I ="]
        # Split the numbers over two lines: the parser must not depend on line lengths.
        lines += [" ".join(f"{v:.6e}" for v in irr[: n // 2]), " ".join(f"{v:.6e}" for v in irr[n // 2:])]
        lines += ["B =", " ".join(f"{v:.6e}" for v in b)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_lv2021_with_a_dorf_file_draws_its_curves(tmp_path):
    path = write_fake_dorf(tmp_path / "dorfCurves.txt")
    curves = load_dorf_curves(path)
    assert [c.name for c in curves] == ["curve gamma 1.5", "curve gamma 2.2", "curve gamma 3.0"]
    pipe = build_pipeline("lv2021", crf_file=path, sigma_s=(0, 0), sigma_c=(0, 0))
    rng, seen = np.random.default_rng(0), set()
    for _ in range(20):
        out, p = pipe(flat(150, 8, 8), rng)
        assert p["crf_name"] == curves[p["crf_index"]].name and "crf_gamma" not in p
        expected = p["beta"] * (p["alpha"] * 150 / 255) ** p["gamma"] * 255
        assert np.abs(out - expected).max() <= 1.0  # table interpolation + one rounding
        seen.add(p["crf_index"])
    assert seen == {0, 1, 2}


def test_tabulated_response_inverts_curves_with_flat_runs(tmp_path):
    curve = load_dorf_curves(write_fake_dorf(tmp_path / "d.txt", gammas=(2.2,), flat_tail=True))[0]
    x = np.linspace(0, 0.7, 50)  # below the clipped part, the curve is invertible
    np.testing.assert_allclose(curve.inverse(curve.forward(x)), x, atol=2e-3)
    assert isinstance(curve, TabulatedResponse) and np.all(np.diff(curve.inverse(np.linspace(0, 1, 50))) >= 0)


def test_bad_dorf_file_raises_naming_the_file(tmp_path):
    bad = tmp_path / "short.txt"
    bad.write_text("cam\ngraph 0\nI =\n" + " ".join(["0.5"] * 999) + "\nB =\n" + " ".join(["0.5"] * 1024))
    with pytest.raises(ValueError, match=r"crf_file: .*short\.txt.*line 5: expected 1024 numbers, found 999"):
        build_pipeline("lv2021", crf_file=str(bad))
    with pytest.raises(ValueError, match=r"crf_file: .*not found.*missing\.txt"):
        build_pipeline("lv2021", crf_file=str(tmp_path / "missing.txt"))
    outside = tmp_path / "outside.txt"
    write_fake_dorf(outside, gammas=(2.0,))
    outside.write_text(outside.read_text().replace("B =\n0.000000e+00", "B =\n-5.000000e-01"))
    with pytest.raises(ValueError, match=r"outside\.txt, curve 'curve gamma 2.0': B must lie in \[0, 1\]"):
        load_dorf_curves(str(outside))
    no_graph = tmp_path / "no_graph.txt"
    no_graph.write_text("cam\nI =\n")
    with pytest.raises(ValueError, match=r"no_graph\.txt, line 2: expected a line starting with 'graph'"):
        load_dorf_curves(str(no_graph))


def test_dorf_numbers_on_the_equals_line_and_wiggles(tmp_path, caplog):
    irr = np.linspace(0, 1, 1024)
    b = irr ** 0.5
    b[500] = b[499] - 1e-4  # a measured wiggle
    path = tmp_path / "inline.txt"
    path.write_text("camRed\ngraph 1\nI = " + " ".join(map(str, irr)) + "\nB = " + " ".join(map(str, b)) + "\n")
    with caplog.at_level("WARNING"):
        (curve,) = load_dorf_curves(str(path))
    assert "running maximum" in caplog.text and np.all(np.diff(curve.brightness) >= 0)
    np.testing.assert_allclose(curve.forward(np.array([0.25])), [0.5], atol=1e-3)


# ---------------------------------------------------------------- unprocess

def test_unprocess_round_trip_undoes_gains_matrix_and_gamma():
    # Without darkening and noise, unprocess + process is the inverse tone map alone: the
    # global gain g, white balance, colour matrix and gamma all cancel (MAET never undoes g).
    # (atol covers the float32 floor of 1e-8 before the gamma; a wrong g is off by ~20%.)
    rgb = np.random.default_rng(0).uniform(0, 0.85, (H, W, 3)).astype(np.float32)
    pipe = UnprocessPipeline(ccm_mode="pick")
    rng = np.random.default_rng(1)
    for _ in range(5):
        p = pipe.sample_params(rng)
        np.testing.assert_allclose(process_raw(unprocess_to_raw(rgb, p), p), inverse_tone_map(rgb), atol=1e-3)


def test_rgb2cam_rows_sum_to_one():
    np.testing.assert_allclose(rgb2cam_matrix([0.1, 0.2, 0.3, 0.4]).sum(axis=1), 1.0, atol=1e-12)


def test_shot_read_noise_variance_is_x_s_plus_r():
    s, r = 0.01, 1e-4
    rng = np.random.default_rng(0)
    for level in (0.02, 0.1, 0.4):
        x = np.full((200, 200), level, np.float32)
        noisy = add_shot_read_noise(x, s, r, rng)
        assert noisy.mean() == pytest.approx(level, abs=1e-3)
        assert noisy.var() == pytest.approx(level * s + r, rel=0.05)


def test_unprocess_output_noise_is_x_s_plus_r_in_the_raw_domain():
    # Invert the forward ISP of the output with the returned parameters: the raw-domain
    # variance must be x * s + r plus the two 8-bit quantisations.
    s, r = 1e-3, 1e-5
    pipe = UnprocessPipeline(gamma=(2.2, 2.2), darkness_mean=1.0, darkness_std=0.0, shot_noise=(s, s),
                             read_noise_slope=0.0, read_noise_intercept=float(np.log(r)), read_noise_std=0.0)
    img = flat(128, 128, 128)
    out, p = pipe(img, np.random.default_rng(0), input_format="RGB")
    assert p["read_noise"] == pytest.approx(r) and p["shot_noise"] == pytest.approx(s)
    clean = unprocess_to_raw(img[:1, :1].astype(np.float32) / 255, p).reshape(3)
    rgb2cam = rgb2cam_matrix([p[f"ccm_weight_{i}"] for i in range(4)])
    wb = np.array([p["red_gain"], 1.0, p["blue_gain"]]) / p["rgb_gain"]
    raw = ((out / 255.0) ** p["gamma"]) @ rgb2cam.T / wb
    for ch in range(3):
        assert raw[..., ch].mean() == pytest.approx(clean[ch], rel=0.03)
        expected = clean[ch] * s + r + 1 / (12 * 255**2)
        assert raw[..., ch].var() == pytest.approx(expected, rel=0.2), ch


def test_unprocess_darkens_by_about_darkness_to_the_one_over_gamma():
    img = scene()
    ref = inverse_tone_map(img / 255.0).mean() * 255
    pipe = UnprocessPipeline(shot_noise=(1e-12, 1e-12), read_noise_std=0.0, darkness_range=(0.05, 1.0))
    rng = np.random.default_rng(4)
    for _ in range(10):
        out, p = pipe(img, rng)
        # Brightness ~ (d * linear) ** (1 / gamma); the 8-bit raw quantisation of very dark
        # pixels pulls it a little lower.
        assert out.mean() / ref == pytest.approx(p["darkness"] ** (1 / p["gamma"]), rel=0.15), p


def test_unprocess_default_output_is_dark():
    rng = np.random.default_rng(5)
    pipe = build_pipeline("unprocess")
    means = [pipe(scene(), rng)[0].mean() for _ in range(20)]
    assert np.median(means) < 0.7 * scene().mean()


# ---------------------------------------------------------------- parameter ranges

def in_range(value, bounds):
    return bounds[0] <= value <= bounds[1]


@pytest.mark.parametrize("overrides", [{}, {"alpha": (0.5, 0.6), "gamma": (2.0, 2.5), "sigma_s": (0.01, 0.02),
                                           "sigma_c": (0.03, 0.04), "crf_gamma": (1.0, 1.2)}])
def test_lv2021_draws_stay_inside_the_configured_ranges(overrides):
    pipe = build_pipeline("lv2021", **overrides)
    rng, img = np.random.default_rng(0), flat(100, 4, 4)
    draws = [pipe(img, rng)[1] for _ in range(300)]
    for key in ("alpha", "beta", "gamma", "sigma_s", "sigma_c", "crf_gamma"):
        bounds = getattr(pipe, key)
        values = [d[key] for d in draws]
        assert all(in_range(v, bounds) for v in values), key
        # Uniform draws fill the range: a frozen or wrong-range draw would not.
        span = bounds[1] - bounds[0]
        assert min(values) < bounds[0] + 0.05 * span and max(values) > bounds[1] - 0.05 * span, key


def test_unprocess_draws_stay_inside_the_configured_ranges():
    pipe = build_pipeline("unprocess", gamma=(2.5, 3.0), red_gain=(2.0, 2.1), darkness_mean=0.2,
                          darkness_range=(0.1, 0.3), shot_noise=(1e-3, 1e-2))
    rng = np.random.default_rng(0)
    draws = [pipe.sample_params(rng) for _ in range(500)]
    for key, bounds in (("gamma", (2.5, 3.0)), ("red_gain", (2.0, 2.1)), ("blue_gain", (1.5, 1.9)),
                        ("darkness", (0.1, 0.3)), ("rgb_gain", (0.5, 1.1)), ("shot_noise", (1e-3, 1e-2))):
        assert all(in_range(d[key], bounds) for d in draws), key
    weights = np.array([[d[f"ccm_weight_{i}"] for i in range(4)] for d in draws])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert np.mean([d["rgb_gain"] for d in draws]) == pytest.approx(0.8, abs=0.02)
    assert np.std([d["rgb_gain"] for d in draws]) == pytest.approx(0.1, rel=0.15)
    # ln s is uniform: its mean is the middle of [ln 1e-3, ln 1e-2].
    assert np.mean(np.log([d["shot_noise"] for d in draws])) == pytest.approx(np.log(10**-2.5), abs=0.1)
    resid = [np.log(d["read_noise"]) - 2.18 * np.log(d["shot_noise"]) - 1.20 for d in draws]
    assert np.mean(resid) == pytest.approx(0.0, abs=0.04) and np.std(resid) == pytest.approx(0.26, rel=0.15)


def test_unprocess_default_darkness_is_the_truncated_normal():
    rng = np.random.default_rng(1)
    d = np.array([build_pipeline("unprocess").sample_params(rng)["darkness"] for _ in range(2000)])
    assert d.min() >= 0.01 and d.max() <= 1.0
    # Mean of N(0.1, 0.08) truncated to [0.01, 1]: 0.1 + 0.08 * phi(-1.125) / (1 - Phi(-1.125)).
    assert d.mean() == pytest.approx(0.1 + 0.08 * 0.2119 / 0.8697, abs=0.005)


def test_truncated_normal_draws_are_bit_identical_to_the_80_halvings():
    """The bisection stops once (lo, hi) stops changing: every draw equals the full 80 halvings."""
    from synthesis_reference import _truncated_normal

    from wnlb_d2.data.synthesis.common import truncated_normal

    cases = np.random.default_rng(5)
    for _ in range(3000):
        mean, std = cases.normal(0.0, 3.0), cases.choice([1e-3, 0.08, 1.0, 30.0])
        low = mean + cases.uniform(-4.0, 2.0) * std
        high = low + cases.choice([1e-9, 1e-3, 0.5, 5.0]) * std
        seed = int(cases.integers(1 << 31))
        got = truncated_normal(np.random.default_rng(seed), mean, std, low, high)
        assert got == _truncated_normal(np.random.default_rng(seed), mean, std, low, high)


def test_pick_mode_uses_one_camera_matrix():
    rng = np.random.default_rng(0)
    p = build_pipeline("unprocess", ccm_mode="pick").sample_params(rng)
    assert sorted(p[f"ccm_weight_{i}"] for i in range(4)) == [0.0, 0.0, 0.0, 1.0]


# ---------------------------------------------------------------- construction and errors

@pytest.mark.parametrize("name,key,value", [
    ("lv2021", "gamma", (3.0, 2.0)),
    ("lv2021", "alpha", (0.0, 1.0)),
    ("lv2021", "beta", (0.5, 1.5)),
    ("lv2021", "sigma_s", (-0.1, 0.1)),
    ("lv2021", "sigma_c", (0.1,)),
    ("lv2021", "crf_gamma", ("a", 2)),
    ("unprocess", "gamma", (0.0, 2.0)),
    ("unprocess", "ccm_mode", "all"),
    ("unprocess", "red_gain", (2.0, float("inf"))),
    ("unprocess", "darkness_range", (0.1, 2.0)),
    ("unprocess", "darkness_std", -0.1),
    ("unprocess", "rgb_gain_range", (0.0, 1.0)),
    ("unprocess", "rgb_gain_range", (5.0, 6.0)),
    ("unprocess", "shot_noise", (0.0, 0.01)),
])
def test_bad_values_raise_naming_the_key(name, key, value):
    with pytest.raises(ValueError, match=f"^{key}: "):
        build_pipeline(name, **{key: value})


def test_unknown_pipeline_or_parameter_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'nope'.*lv2021.*unprocess"):
        build_pipeline("nope")
    with pytest.raises(ValueError, match=r"\['sigma'\].*sigma_s"):
        build_pipeline("lv2021", sigma=(0, 1))


def test_config_node_matches_the_pipeline_arguments():
    cfg = cfg_with_low_light()
    node = cfg.INPUT.LOW_LIGHT
    assert node.ENABLED is False and node.PIPELINE == "lv2021" and node.SEED == 0
    for name in PIPELINES:
        assert sorted(node[name.upper()]) == sorted(a.upper() for a in pipeline_arguments(name))
        # Config defaults equal the constructor defaults.
        assert build_pipeline_from_config(_with(cfg, PIPELINE=name)).config() == build_pipeline(name).config()


def _with(cfg, **kv):
    cfg = cfg.clone()
    for k, v in kv.items():
        cfg.INPUT.LOW_LIGHT[k] = v
    return cfg


def test_config_values_reach_the_pipeline_and_yaml_lists_are_accepted():
    cfg = cfg_with_low_light()
    cfg.merge_from_list(["INPUT.LOW_LIGHT.PIPELINE", "unprocess", "INPUT.LOW_LIGHT.UNPROCESS.GAMMA", "[2.2, 2.4]"])
    pipe = build_pipeline_from_config(cfg)
    assert isinstance(pipe, UnprocessPipeline) and pipe.gamma == (2.2, 2.4)


@pytest.mark.parametrize("section,key,value", [
    ("LV2021", "GAMMA", (5.0, 1.0)),
    ("LV2021", "SIGMA_S", (0.0, 2.0)),
    ("UNPROCESS", "DARKNESS_STD", -1.0),
    ("UNPROCESS", "RGB_GAIN_RANGE", (0.0, 1.0)),
    ("UNPROCESS", "CCM_MODE", "both"),
])
def test_bad_config_values_raise_naming_the_config_key(section, key, value):
    cfg = _with(cfg_with_low_light(), PIPELINE=section.lower())
    cfg.INPUT.LOW_LIGHT[section][key] = value
    with pytest.raises(ValueError, match=f"^INPUT.LOW_LIGHT.{section}.{key}: "):
        build_pipeline_from_config(cfg)


def test_bad_pipeline_name_in_config_names_the_key():
    with pytest.raises(ValueError, match="INPUT.LOW_LIGHT.PIPELINE.*'dark'"):
        build_pipeline_from_config(_with(cfg_with_low_light(), PIPELINE="dark"))
