"""The efficient pairwise aggregation equals the plain O(N^2) reference, values and gradients."""

import pytest
import torch

from wnlb_d2.layers import NONLOCAL_MODES, nonlocal_aggregate

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
