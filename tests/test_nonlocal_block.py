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


@pytest.mark.parametrize("fusion, weight_init", [("weighted", 0.5), ("residual", 0.0)])
def test_authors_zero_init_never_lets_the_non_local_path_learn(fusion, weight_init):
    """MODEL.WNLB.ZERO_INIT "conv_and_norm" (the released wnlb.py zeroes W_z's conv and its BN):
    the conv, the norm's weight, theta, phi and g never get a gradient, over any number of steps;
    only the norm's bias (a per-channel constant) moves. Under "norm" (the default) all of them
    learn once the norm's weight has moved off zero (after the first step)."""
    def train(zero_init, steps=4):
        torch.manual_seed(0)
        block = NonLocalBlock2d(8, fusion=fusion, weight_init=weight_init, zero_init=zero_init)
        opt = torch.optim.AdamW(block.parameters(), lr=1e-2)
        x, target = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6)
        grads = []
        for _ in range(steps):
            opt.zero_grad()
            ((block(x) - target) ** 2).mean().backward()
            grads.append({n: p.grad.abs().max().item() for n, p in block.named_parameters() if p.grad is not None})
            opt.step()
        return block, grads

    path = ("w_z.weight", "w_z.norm.weight", "theta.weight", "phi.weight", "g.weight")
    block, grads = train("conv_and_norm")
    for step in grads:
        assert all(step[n] == 0.0 for n in path), step
        assert step["w_z.norm.bias"] > 0
    assert block.w_z.weight.abs().max() == 0 and block.w_z.norm.weight.abs().max() == 0
    assert block.w_z.norm.bias.abs().max() > 0  # the only thing it learns: a constant per channel
    _, grads = train("norm")
    assert grads[0]["w_z.norm.weight"] > 0  # the first step moves the norm's weight ...
    assert all(grads[-1][n] > 0 for n in path), grads[-1]  # ... then the whole path learns
    with pytest.raises(ValueError, match="zero_init"):
        NonLocalBlock2d(8, zero_init="conv")


def test_zero_init_key_reaches_the_detectron2_and_yolo_blocks():
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import build_backbone

    from wnlb_d2.config import add_lowlight_config

    cfg = get_cfg()
    add_lowlight_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_wnlb_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.WNLB.ZERO_INIT = "conv_and_norm"
    blocks = build_backbone(cfg, ShapeSpec(channels=3)).bottom_up.wnlb
    assert blocks and all(b.zero_init == "conv_and_norm" and b.w_z.weight.abs().max() == 0 for b in blocks.values())
    cfg.MODEL.WNLB.ZERO_INIT = "all"
    with pytest.raises(ValueError, match=r"MODEL.WNLB.ZERO_INIT = 'all' is invalid"):
        build_backbone(cfg, ShapeSpec(channels=3))
    pytest.importorskip("ultralytics")
    from wnlb_d2.yolo.modules import YOLONonLocalBlock2d

    yolo_block = YOLONonLocalBlock2d(16, {"zero_init": "conv_and_norm", "weight_init": 0.5})
    assert yolo_block.zero_init == "conv_and_norm" and yolo_block.w_z.weight.abs().max() == 0
