"""The efficient pairwise aggregation equals the plain O(N^2) reference, values and gradients;
the tiled softmax kernel's memory stays O(N)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from wnlb_d2.layers import NONLOCAL_MODES, nonlocal_aggregate
from wnlb_d2.layers import nonlocal_ops
from wnlb_d2.layers.nonlocal_ops import TILE_BYTES, _softmax_reference, softmax_attention, softmax_tile_rows

SHAPES = [  # (B, N, M, Cq, Cv): batch > 1, odd sizes, N != M, Cq != Cv both ways
    (2, 37, 19, 5, 7),
    (1, 50, 50, 8, 3),
    (3, 11, 29, 4, 4),
    (2, 63, 63, 16, 16),
]


def _inputs(b, n, m, cq, cv, seed):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    return mk(b, n, cq), mk(b, m, cq), mk(b, m, cv), mk(2 * cq)


def _forward_backward(impl, mode, tensors):
    theta, phi, g, w = tensors
    y = nonlocal_aggregate(theta, phi, g, mode=mode, impl=impl, concat_weight=w)
    # A non-linear loss so that every gradient path carries a different weight.
    loss = (y * torch.cos(y)).sum()
    grads = torch.autograd.grad(loss, [theta, phi, g, w], allow_unused=True)
    return y, grads


@pytest.mark.parametrize("mode", NONLOCAL_MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_efficient_equals_reference_float64(mode, shape):
    tensors = _inputs(*shape, seed=sum(shape) + NONLOCAL_MODES.index(mode))
    y_eff, g_eff = _forward_backward("efficient", mode, tensors)
    y_ref, g_ref = _forward_backward("reference", mode, tensors)
    assert y_eff.shape == (shape[0], shape[1], shape[4])
    torch.testing.assert_close(y_eff, y_ref, rtol=1e-10, atol=1e-10)
    for name, a, b in zip(["theta", "phi", "g", "concat_weight"], g_eff, g_ref):
        if b is None:  # only "concatenate" uses concat_weight
            assert a is None, name
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("mode", NONLOCAL_MODES)
def test_efficient_equals_reference_float32_large(mode):
    # Closer to real feature maps: N = 24 * 31, float32.
    torch.manual_seed(0)
    theta, phi, g = torch.randn(2, 744, 32) * 0.2, torch.randn(2, 744, 32) * 0.2, torch.randn(2, 744, 16)
    w = torch.randn(64) * 0.1
    y_eff = nonlocal_aggregate(theta, phi, g, mode=mode, impl="efficient", concat_weight=w)
    y_ref = nonlocal_aggregate(theta, phi, g, mode=mode, impl="reference", concat_weight=w)
    torch.testing.assert_close(y_eff, y_ref, rtol=1e-4, atol=1e-5)


def test_concatenate_handles_ties_and_all_negative_scores():
    # t_j == -s_i exactly (ReLU at 0) and rows where no pair is positive.
    theta = torch.tensor([[[1.0], [-5.0], [0.0]]], dtype=torch.float64)
    phi = torch.tensor([[[-1.0], [2.0], [0.5], [-1.0]]], dtype=torch.float64)
    g = torch.arange(8, dtype=torch.float64).reshape(1, 4, 2)
    w = torch.tensor([1.0, 1.0], dtype=torch.float64)
    y_eff = nonlocal_aggregate(theta, phi, g, mode="concatenate", impl="efficient", concat_weight=w)
    y_ref = nonlocal_aggregate(theta, phi, g, mode="concatenate", impl="reference", concat_weight=w)
    torch.testing.assert_close(y_eff, y_ref, rtol=0, atol=1e-12)
    assert torch.all(y_ref[0, 1] == 0)  # s = -5: every pair is clipped by the ReLU


def test_softmax_modes_do_not_use_the_dot_normalisation():
    # Guards against mixing up the modes: softmax rows sum to 1, dot divides by M.
    theta = torch.zeros(1, 3, 2)
    phi = torch.zeros(1, 4, 2)
    g = torch.ones(1, 4, 1)
    assert torch.allclose(nonlocal_aggregate(theta, phi, g, mode="embedded"), torch.ones(1, 3, 1))
    assert torch.allclose(nonlocal_aggregate(theta, phi, g, mode="dot"), torch.zeros(1, 3, 1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="softmax"), "mode 'softmax'.*embedded"),
    (dict(mode="dot", impl="fast"), "impl 'fast'.*efficient"),
    (dict(mode="concatenate"), "concat_weight"),
])
def test_bad_arguments_are_named(kwargs, match):
    t = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match=match):
        nonlocal_aggregate(t, t, t, **kwargs)


# --- the two exact softmax kernels (softmax_attention) -----------------------------------------

TILED_CASES = [  # (B, N, M, Cq, Cv, tile_rows): ragged last tiles, one-row tiles, one tile
    (2, 37, 19, 5, 7, 4),
    (1, 50, 50, 8, 3, 7),  # Cq > Cv, the Gaussian's case
    (3, 11, 29, 4, 4, 100),
    (2, 63, 63, 16, 16, 1),
]


def _keep_budgets(b, m, tile):
    one_tile = b * tile * m * 8  # float64 bytes of one probability tile
    return {"recompute": 0, "keep 2 tiles": 2 * one_tile, "keep all": 2**40}


@pytest.mark.parametrize("case", TILED_CASES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("keep", ["recompute", "keep 2 tiles", "keep all"])
def test_tiled_kernel_equals_reference_float64(case, keep):
    b, n, m, cq, cv, tile = case
    theta, phi, g, _ = _inputs(b, n, m, cq, cv, seed=n + m + tile)
    y = softmax_attention(theta, phi, g, kernel="tiled", tile_rows=tile, keep_bytes=_keep_budgets(b, m, tile)[keep])
    y_ref = _softmax_reference(theta, phi, g)
    # The tiled kernel writes a (B, Cv, N) map and returns its transposed view.
    assert y.shape == (b, n, cv) and y.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    weight = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad((y * weight).sin().sum(), [theta, phi, g])
    grads_ref = torch.autograd.grad((y_ref * weight).sin().sum(), [theta, phi, g])
    for name, a, r in zip(["theta", "phi", "g"], grads, grads_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12, msg=f"gradient of {name}")


@pytest.mark.parametrize("needs", [(False, False, True), (True, False, False), (False, True, True)])
def test_tiled_kernel_computes_only_the_gradients_asked_for(needs):
    theta, phi, g, _ = _inputs(2, 13, 9, 3, 5, seed=7)
    for t, need in zip((theta, phi, g), needs):
        t.requires_grad_(need)
    wanted = [t for t in (theta, phi, g) if t.requires_grad]
    y = softmax_attention(theta, phi, g, kernel="tiled", tile_rows=4, keep_bytes=0)
    y_ref = _softmax_reference(theta, phi, g)
    for a, r in zip(torch.autograd.grad(y.square().sum(), wanted), torch.autograd.grad(y_ref.square().sum(), wanted)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_tiled_kernel_is_stable_for_large_scores():
    # Scores of +-1000: exp() overflows without the per-row shift, for both kernels alike.
    theta, phi, g, _ = _inputs(1, 20, 30, 4, 6, seed=11)
    with torch.no_grad():
        theta.mul_(30)
        phi.mul_(30)
    y = softmax_attention(theta, phi, g, kernel="tiled", tile_rows=3, keep_bytes=0)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, _softmax_reference(theta, phi, g), rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(y.sum(), [theta, phi, g])
    assert all(torch.isfinite(t).all() for t in grads)


def test_auto_never_pads_and_keeps_small_maps_whole():
    # Unequal widths: the tiled kernel (its output is a transposed (B, Cv, N) map).
    theta, phi, g = torch.randn(1, 300, 16), torch.randn(1, 300, 16), torch.randn(1, 300, 8)
    assert softmax_attention(theta, phi, g).transpose(1, 2).is_contiguous()
    # Equal widths, probabilities within keep_bytes: tiled as well (the reference's arithmetic).
    assert softmax_attention(theta, phi, theta).transpose(1, 2).is_contiguous()
    # Equal widths, probabilities larger than keep_bytes: the fused kernel ((B, N, Cv) contiguous).
    y = softmax_attention(theta, phi, theta, keep_bytes=1000)
    assert y.is_contiguous() and not y.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(y, _softmax_reference(theta, phi, theta), rtol=1e-4, atol=1e-5)
    # "fused" with unequal widths falls back to the tiled kernel instead of padding.
    assert softmax_attention(theta, phi, g, kernel="fused").transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_tiled_kernel_computes_half_precision_in_float32(dtype):
    theta, phi, g = (torch.randn(2, 40, c) for c in (8, 8, 4))
    low = [t.to(dtype).requires_grad_() for t in (theta, phi, g)]
    y = softmax_attention(*low, kernel="tiled", tile_rows=7, keep_bytes=0)
    assert y.dtype == dtype
    # Against float32 on the same rounded inputs: only the output's own rounding differs.
    exact = _softmax_reference(*(t.detach().float() for t in low))
    torch.testing.assert_close(y.float(), exact, rtol=1e-2, atol=1e-2)
    grads = torch.autograd.grad(y.float().sum(), low)
    assert [t.dtype for t in grads] == [dtype] * 3


def test_tile_rows_follow_the_byte_budget():
    assert softmax_tile_rows(1, 16800, 4) == TILE_BYTES // (16800 * 4)
    assert softmax_tile_rows(2, 1000, 8, budget=8 * 2000 * 10) == 10
    assert softmax_tile_rows(4, 10**9, 4) == 1  # never zero rows
    with pytest.raises(ValueError, match="tile_rows must be a positive int, got 0"):
        softmax_attention(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), tile_rows=0)
    with pytest.raises(ValueError, match="softmax kernel 'flash'"):
        softmax_attention(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), kernel="flash")


# --- the symmetric kernel: keys are the queries (the Gaussian without sub-sampling) ------------

SYMMETRIC_CASES = [  # (B, N, C, Cv, tile_rows): ragged last tiles, one-row tiles, one tile, C > Cv
    (2, 37, 5, 7, 4),
    (1, 50, 8, 3, 7),  # C > Cv, the Gaussian's case (C = 2 Cv in the block)
    (3, 11, 4, 4, 100),
    (2, 63, 16, 8, 1),
    (1, 64, 6, 3, 16),  # tiles that divide N
]


def _symmetric_inputs(b, n, c, cv, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(b, n, c, generator=gen, dtype=torch.float64) * scale).requires_grad_()
    return x, torch.randn(b, n, cv, generator=gen, dtype=torch.float64).requires_grad_()


def _check_symmetric_against_reference(x, g, tile, rtol=1e-10, atol=1e-12):
    y = softmax_attention(x, x, g, kernel="symmetric", tile_rows=tile)
    y_ref = _softmax_reference(x, x, g)
    assert y.shape == y_ref.shape and y.transpose(1, 2).is_contiguous()  # a (B, Cv, N) map's layout
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol)
    weight = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(3))
    wanted = [t for t in (x, g) if t.requires_grad]
    grads = torch.autograd.grad((y * weight).sin().sum(), wanted)
    grads_ref = torch.autograd.grad((y_ref * weight).sin().sum(), wanted)
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r, rtol=rtol, atol=atol)
    return y, grads


@pytest.mark.parametrize("case", SYMMETRIC_CASES, ids=lambda s: "x".join(map(str, s)))
def test_symmetric_kernel_equals_reference_float64(case):
    b, n, c, cv, tile = case
    x, g = _symmetric_inputs(b, n, c, cv, seed=n + tile)
    _check_symmetric_against_reference(x, g, tile)


@pytest.mark.parametrize("needs", [(True, False), (False, True)], ids=["x only", "g only"])
def test_symmetric_kernel_computes_only_the_gradients_asked_for(needs):
    x, g = _symmetric_inputs(2, 23, 6, 3, seed=5)
    x.requires_grad_(needs[0])
    g.requires_grad_(needs[1])
    _check_symmetric_against_reference(x, g, tile=5)


def test_symmetric_kernel_is_stable_for_large_scores():
    # Scores up to ~1e4: every tile's running maximum grows several times (online softmax).
    x, g = _symmetric_inputs(1, 41, 4, 6, seed=11, scale=30.0)
    y, grads = _check_symmetric_against_reference(x, g, tile=6)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in grads)


def test_symmetric_kernel_on_feature_map_views():
    # The block's layout: x and g are (B, N, C) views of (B, C, N) maps; gradients keep it.
    gen = torch.Generator().manual_seed(2)
    xm = torch.randn(2, 6, 29, dtype=torch.float64, generator=gen).requires_grad_()
    gm = torch.randn(2, 3, 29, dtype=torch.float64, generator=gen).requires_grad_()
    x, g = xm.transpose(1, 2), gm.transpose(1, 2)
    y = softmax_attention(x, x, g, tile_rows=8)  # "auto"
    y_ref = _softmax_reference(x, x, g)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(y.square().sum(), [xm, gm])
    grads_ref = torch.autograd.grad(y_ref.square().sum(), [xm, gm])
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_auto_takes_the_symmetric_kernel_only_for_keys_that_are_the_queries(monkeypatch):
    calls = []
    apply = nonlocal_ops._SymmetricSoftmaxAttention.apply
    monkeypatch.setattr(nonlocal_ops._SymmetricSoftmaxAttention, "apply",
                        lambda *a: calls.append(a[-1]) or apply(*a))
    x, g = torch.randn(2, 30, 8), torch.randn(2, 30, 4)
    softmax_attention(x, x, g)
    assert calls == [nonlocal_ops.SYMMETRIC_TILE_ROWS]
    # Equal values but another tensor (e.g. sub-sampled keys): the general kernels.
    softmax_attention(x, x.clone(), g)
    softmax_attention(x, x, g, kernel="tiled")
    softmax_attention(x, x[:, ::2], g[:, ::2], kernel="symmetric")  # falls back to "tiled"
    assert len(calls) == 1
    with pytest.raises(ValueError, match="tile_rows must be a positive int, got 0"):
        softmax_attention(x, x, g, tile_rows=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_symmetric_kernel_computes_half_precision_in_float32(dtype):
    x = torch.randn(2, 40, 8).to(dtype).requires_grad_()
    g = torch.randn(2, 40, 4).to(dtype).requires_grad_()
    y = softmax_attention(x, x, g, tile_rows=7)
    assert y.dtype == dtype
    exact = _softmax_reference(*(t.detach().float() for t in (x, x, g)))
    torch.testing.assert_close(y.float(), exact, rtol=1e-2, atol=1e-2)
    grads = torch.autograd.grad(y.float().sum(), [x, g])
    assert [t.dtype for t in grads] == [dtype] * 2


_MEMORY_PROBE = """
import json, torch
from wnlb_d2.layers.nonlocal_ops import softmax_attention
from wnlb_d2.utils.measure import time_and_peak
torch.set_num_threads(1)
n, c = {n}, 8
gen = torch.Generator().manual_seed(0)
theta, phi, g = (torch.randn(1, n, c, generator=gen).requires_grad_() for _ in range(3))
if "{kernel}" == "symmetric":
    phi = theta  # the Gaussian's keys
def step():
    y = softmax_attention(theta, phi, g, kernel="{kernel}", tile_rows={tile}, keep_bytes=0)
    y.sum().backward()
    for t in (theta, phi, g):
        t.grad = None
step()
_, peaks = time_and_peak(step, repeats=1, cuda=False)
print(json.dumps({{"peak": peaks[0]}}))
"""


@pytest.mark.parametrize("kernel, tile", [("tiled", 100), ("symmetric", 512)])
def test_softmax_kernel_memory_is_linear_in_n(kernel, tile):
    # N = M = 8,000: one N x M float32 matrix is 244 MiB; tiled: two 100-row tiles of 3.1 MiB;
    # symmetric: three 512 x 512 blocks of 1 MiB. The peak rise of the resident set must stay
    # far below a single N x M matrix.
    n = 8000
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # freed blocks leave the resident set
    run = subprocess.run([sys.executable, "-c", _MEMORY_PROBE.format(n=n, tile=tile, kernel=kernel)], capture_output=True,
                         text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    peak = json.loads(run.stdout.strip().splitlines()[-1])["peak"]
    n_by_n = n * n * 4
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # the tiles + O(N C) tensors
    assert peak < n_by_n / 6
