"""NonLocalBlock2d: identity at initialisation, efficient == reference, fusion, errors."""

import itertools

import pytest
import torch

from wnlb_d2.layers import NONLOCAL_FUSIONS, NONLOCAL_MODES, NONLOCAL_NORMS, NonLocalBlock2d, nonlocal_ops


def _randomise(block, seed=0):
    """Give every parameter and BN statistic a non-trivial value (so W_z(y) != 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in itertools.chain(block.parameters(), block.buffers()):
            if p.dtype.is_floating_point:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) * 0.5 + 0.25)
    return block


def _assert_equal_in_float64(eff, ref, shape):
    """Outputs, input gradients and parameter gradients of two float64 blocks on the same input."""
    x1 = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    z1, z2 = eff(x1), ref(x2)
    torch.testing.assert_close(z1, z2, rtol=1e-10, atol=1e-10)
    z1.sin().sum().backward()
    z2.sin().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-10)
    for (name, p1), p2 in zip(eff.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-9, atol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("mode", NONLOCAL_MODES)
@pytest.mark.parametrize("norm", NONLOCAL_NORMS)
@pytest.mark.parametrize("fusion", NONLOCAL_FUSIONS)
def test_identity_at_initialisation(mode, norm, fusion):
    torch.manual_seed(0)
    block = NonLocalBlock2d(64, mode=mode, norm=norm, fusion=fusion)
    x = torch.randn(2, 64, 5, 7)
    for training in (True, False):
        block.train(training)
        assert torch.equal(block(x), x), f"not the identity in {'train' if training else 'eval'} mode"


@pytest.mark.parametrize("norm", ["BN", "GN", "FrozenBN", "none"])
def test_gradients_flow_out_of_the_identity(norm):
    # Zeroing both the conv and the norm of W_z would leave every W_z gradient at zero forever.
    torch.manual_seed(0)
    block = NonLocalBlock2d(32, norm=norm, weight_init=0.5)
    x = torch.randn(2, 32, 6, 6)
    block(x).square().sum().backward()
    w_z_grads = [p.grad.abs().sum().item() for p in block.w_z.parameters()]
    assert max(w_z_grads) > 0
    assert block.fusion_weight.grad is not None and block.fusion_weight.grad != 0


@pytest.mark.parametrize("mode", NONLOCAL_MODES)
@pytest.mark.parametrize("shape, sub_sample", [
    ((2, 16, 7, 9), False),
    ((1, 32, 5, 5), True),
    ((3, 8, 9, 4), True),
    ((2, 16, 1, 13), False),
])
def test_efficient_block_equals_reference_block(mode, shape, sub_sample):
    torch.manual_seed(1)
    norm = "GN" if shape[1] % 32 == 0 else "BN"
    eff = NonLocalBlock2d(shape[1], mode=mode, impl="efficient", sub_sample=sub_sample, norm=norm)
    _randomise(eff).double().eval()
    ref = NonLocalBlock2d(shape[1], mode=mode, impl="reference", sub_sample=sub_sample, norm=norm)
    ref.double().eval().load_state_dict(eff.state_dict())
    x1 = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    z1, z2 = eff(x1), ref(x2)
    assert not torch.allclose(z1, x1), "the block must do something for this test to mean anything"
    torch.testing.assert_close(z1, z2, rtol=1e-10, atol=1e-10)
    (z1.sin().sum()).backward()
    (z2.sin().sum()).backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-10)
    for (name, p1), p2 in zip(eff.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-9, atol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("mode", ["embedded", "gaussian"])
@pytest.mark.parametrize("kernel", ["tiled", "fused", "symmetric", "auto"])
@pytest.mark.parametrize("shape, sub_sample", [((2, 16, 7, 9), False), ((3, 8, 9, 5), True)])
def test_each_softmax_kernel_in_the_block_equals_the_reference_block(mode, kernel, shape, sub_sample, monkeypatch):
    # Batch > 1, odd sizes, sub-sampling: the kernels see (B, N, C) views of the map's layout.
    # The symmetric kernel applies to the Gaussian without sub-sampling (elsewhere it falls
    # back to the tiled one); 16-row tiles give it ragged pairs of tiles on these small maps.
    monkeypatch.setattr(nonlocal_ops, "SYMMETRIC_TILE_ROWS", 16)
    torch.manual_seed(2)
    norm = "GN" if shape[1] % 32 == 0 else "BN"
    eff = NonLocalBlock2d(shape[1], mode=mode, sub_sample=sub_sample, softmax_kernel=kernel, norm=norm)
    _randomise(eff).double().eval()
    ref = NonLocalBlock2d(shape[1], mode=mode, impl="reference", sub_sample=sub_sample, norm=norm)
    ref.double().eval().load_state_dict(eff.state_dict())
    _assert_equal_in_float64(eff, ref, shape)


@pytest.mark.parametrize("mode", NONLOCAL_MODES)
@pytest.mark.parametrize("fusion", NONLOCAL_FUSIONS)
def test_block_runs_under_bfloat16_autocast_close_to_float32(mode, fusion):
    # Under autocast the convs give bfloat16 while x stays float32; the fusion promotes.
    torch.manual_seed(3)
    block = _randomise(NonLocalBlock2d(32, mode=mode, fusion=fusion, norm="GN")).eval()
    x = torch.randn(2, 32, 6, 7) * 0.3
    z = block(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_low = block(x)
    assert z_low.dtype == torch.float32 and z_low.shape == z.shape
    err = ((z_low - z).abs().max() / z.abs().max()).item()
    assert 0 < err < 5e-2, err  # bfloat16 did run (err > 0), and stays within its precision


def test_weighted_and_residual_fusion_formulas():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 4, 4)
    weighted = _randomise(NonLocalBlock2d(8, fusion="weighted", norm="none")).eval()
    with torch.no_grad():
        weighted.fusion_weight.fill_(0.3)
        w_z_y = weighted(x) - 0.7 * x  # = 0.3 * W_z(y)
        residual = NonLocalBlock2d(8, fusion="residual", norm="none").eval()
        residual.load_state_dict(weighted.state_dict(), strict=False)
        torch.testing.assert_close(residual(x), x + w_z_y / 0.3, rtol=1e-5, atol=1e-5)


def test_weight_learnable_or_frozen():
    learn = NonLocalBlock2d(8, weight_init=0.25)
    frozen = NonLocalBlock2d(8, weight_init=0.25, learnable_weight=False)
    assert isinstance(learn.fusion_weight, torch.nn.Parameter)
    assert "fusion_weight" in dict(frozen.named_buffers())
    assert "fusion_weight" not in dict(frozen.named_parameters())
    assert frozen.fusion_weight.item() == 0.25 and "fusion_weight" in frozen.state_dict()


@pytest.mark.parametrize("mode", ["embedded", "dot", "concatenate"])
@pytest.mark.parametrize("stack", [True, False])
@pytest.mark.parametrize("sub_sample", [True, False])
def test_stacked_and_separate_embedding_convs_equal_the_reference(mode, stack, sub_sample, monkeypatch):
    # Stacked by default where 3 Ci <= B H W (here 3 * 16 > 2 * 3 * 5: separate, as at res5).
    shape = (2, 32, 3, 5)
    assert not NonLocalBlock2d._stack_convs(torch.zeros(shape), 3 * 16)
    assert NonLocalBlock2d._stack_convs(torch.zeros(2, 32, 4, 6), 3 * 16)
    monkeypatch.setattr(NonLocalBlock2d, "_stack_convs", staticmethod(lambda x, channels: stack))
    torch.manual_seed(3)
    eff = _randomise(NonLocalBlock2d(32, mode=mode, sub_sample=sub_sample, norm="GN")).double().eval()
    ref = NonLocalBlock2d(32, mode=mode, impl="reference", sub_sample=sub_sample, norm="GN").double().eval()
    ref.load_state_dict(eff.state_dict())
    _assert_equal_in_float64(eff, ref, shape)


@pytest.mark.parametrize("sub_sample, stack, channels", [
    (False, True, [16 + 2]), (False, False, [1, 1, 16]), (True, True, [1 + 2 * 16]), (True, False, [1, 16, 16]),
])
def test_concatenation_folds_its_projection_into_the_convs(sub_sample, stack, channels, monkeypatch):
    # theta (and phi without sub-sampling) enter f only through a.theta and b.phi: the
    # efficient block computes those one-channel maps directly instead of Ci-channel ones.
    from wnlb_d2.layers import non_local

    monkeypatch.setattr(NonLocalBlock2d, "_stack_convs", staticmethod(lambda x, c: stack))
    seen = []
    conv2d = non_local.F.conv2d
    monkeypatch.setattr(non_local.F, "conv2d", lambda x, w, *a, **k: seen.append(w.shape[0]) or conv2d(x, w, *a, **k))
    block = NonLocalBlock2d(32, mode="concatenate", sub_sample=sub_sample, norm="none")
    block(torch.randn(1, 32, 6, 6))
    assert seen[:len(channels)] == channels  # then W_z: 16 -> 32
    assert seen[len(channels):] == [32]


def test_sub_sampling_changes_the_key_count_only():
    block = NonLocalBlock2d(8, sub_sample=True, impl="reference")
    full = NonLocalBlock2d(8, sub_sample=False, impl="reference")
    assert block.state_dict().keys() == full.state_dict().keys()
    _randomise(block)(torch.randn(1, 8, 7, 5))  # odd sizes: the pooled grid is 3 x 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="gauss"), r"mode 'gauss'.*'embedded', 'gaussian', 'dot', 'concatenate'"),
    (dict(fusion="sum"), r"fusion 'sum'.*'weighted', 'residual'"),
    (dict(norm="LN"), r"norm 'LN'.*'BN', 'SyncBN', 'GN', 'FrozenBN', 'none'"),
    (dict(impl="fast"), r"impl 'fast'.*'efficient', 'reference'"),
    (dict(softmax_kernel="flash"), r"softmax_kernel 'flash'.*'auto', 'fused', 'tiled'"),
    (dict(inter_channels=0), r"inter_channels must be a positive int, got 0"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NonLocalBlock2d(16, **kwargs)


def test_wrong_channels_at_run_time():
    block = NonLocalBlock2d(16)
    with pytest.raises(ValueError, match=r"\(B, 16, H, W\), got \(2, 8, 4, 4\)"):
        block(torch.zeros(2, 8, 4, 4))
