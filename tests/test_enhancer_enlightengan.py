"""EnlightenGAN: the generator against the authors' code, their released file format, the enhancer,
the unpaired training and its command."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms as transforms
from PIL import Image
from torch import nn

import enlightengan_reference as ref
from wnlb_d2.enhance.enlightengan import (EnlightenGANEnhancer, EnlightenGANWeightsError, UnetResizeConv,
                                          attention_map, load_enlightengan_weights)
from wnlb_d2.enhance.enlightengan_train import (NoNormDiscriminator, crop_patches, discriminator_losses,
                                                generator_adversarial_loss, save_enlightengan_weights,
                                                train_enlightengan)
from wnlb_d2.enhance.zero_dce import ZeroDCEPP
from wnlb_d2.utils.params import ParameterError
from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


def _randomise_norms(net, seed):
    """BatchNorm statistics and affine parameters far from the identity, so a misplaced norm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net


def _authors_generator(seed=0, **opt):
    """The authors' Unet_resize_conv (released options unless overridden), eval mode."""
    torch.manual_seed(seed)
    net = ref.Unet_resize_conv(ref.Opt(**opt), True)
    return _randomise_norms(net, seed).eval()


def _ours_like(net, **kw):
    ours = UnetResizeConv(**kw)
    ours.load_state_dict(net.state_dict())
    return ours.eval()


def _dark_image(seed=0, h=48, w=64):
    """A dark, noisy, coloured BGR test image with some structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([20 + 15 * np.sin(xx / 5.0), 30 + 20 * (yy > h // 2), 15 + 10 * np.cos(yy / 4.0)], axis=2)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def _authors_pipeline(net, bgr):
    """The authors' predict path: PIL RGB -> ToTensor/Normalize -> attention map -> G -> tensor2im."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    a_img = transform(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])))
    gray = ref.attention_map(a_img)
    with torch.no_grad():
        fake_b, _ = net(a_img[None], gray[None])
    return ref.tensor2im(fake_b)[:, :, ::-1]  # back to BGR


# ---------------------------------------------------------------- the generator

@pytest.mark.parametrize("opt", [{}, {"self_attention": False, "use_norm": 0}, {"times_residual": False, "skip": 0.8}],
                         ids=["released", "no-attention-no-norm", "no-times-residual-skip-0.8"])
def test_forward_equals_authors(opt):
    """Same keys in the same order, and the same output at two sizes (one needing padding), in
    eval and train mode; the options map as in the authors' code."""
    net = _authors_generator(1, **opt)
    kw = {"self_attention": opt.get("self_attention", True), "use_norm": bool(opt.get("use_norm", 1)),
          "times_residual": opt.get("times_residual", True), "skip": opt.get("skip", 1.0)}
    ours = _ours_like(net, **kw)
    assert list(ours.state_dict()) == list(net.state_dict())
    torch.manual_seed(2)
    for h, w in [(48, 64), (37, 53)]:
        x = torch.rand(2, 3, h, w) * 1.4 - 1  # dark-ish images in [-1, 1]
        gray = torch.stack([ref.attention_map(xi) for xi in x])
        torch.testing.assert_close(attention_map(x), gray, rtol=0, atol=0)
        with torch.no_grad():
            (o1, l1), (o2, l2) = net(x, gray), ours(x)
        assert o2.shape == (2, 3, h, w)
        torch.testing.assert_close(o2, o1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(l2, l1, rtol=1e-5, atol=1e-5)
        assert (o1 - x).abs().mean() > 0.05  # the residual is not negligible: a wrong wiring would show
    net.train()
    ours.train()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    torch.testing.assert_close(ours(x)[0], net(x, torch.stack([ref.attention_map(xi) for xi in x]))[0],
                               rtol=1e-5, atol=1e-5)


def test_wide_images_are_halved_as_the_authors_do():
    """Above 2200 px the authors average down 2x and upsample the output back."""
    net = _authors_generator(3)
    ours = _ours_like(net)
    x = torch.rand(1, 3, 18, 2210) * 2 - 1
    with torch.no_grad():
        o1, _ = net(x, ref.attention_map(x[0])[None])
        o2, _ = ours(x)
    assert o2.shape == x.shape
    torch.testing.assert_close(o2, o1, rtol=1e-5, atol=1e-5)


def test_small_widths_and_tiny_images():
    ours = UnetResizeConv(channels=4).eval()
    assert ours.conv5_2.weight.shape == (64, 64, 3, 3) and ours.conv10.weight.shape == (3, 4, 1, 1)
    with torch.no_grad():
        out, latent = ours(torch.zeros(1, 3, 5, 7))  # too small to reflect-pad: replicated
    assert out.shape == latent.shape == (1, 3, 5, 7)
    with pytest.raises(ValueError, match=r"expects RGB images of shape \(B, 3, H, W\), got \(1, 1, 8, 8\)"):
        ours(torch.zeros(1, 1, 8, 8))


# ---------------------------------------------------------------- the released file format

def _save_as_released(net, path):
    """As the authors' save_network wrote 200_net_G_A.pth under PyTorch 0.3.1: torch.save of the
    DataParallel-wrapped generator's state_dict ('module.' keys), no num_batches_tracked, legacy
    (non-zip) serialisation."""
    state = nn.DataParallel(net).cpu().state_dict()
    state = type(state)((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert all(k.startswith("module.") for k in state)
    torch.save(state, path, _use_new_zipfile_serialization=False)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    net = _authors_generator(4)
    path = str(tmp_path_factory.mktemp("egan") / "200_net_G_A.pth")
    _save_as_released(net, path)
    return net, path


def test_released_file_loads_and_matches_the_authors_pipeline(released, tmp_path):
    net, path = released
    enhancer = EnlightenGANEnhancer(weights=path)
    assert enhancer.net.channels == 32 and repr(enhancer).startswith("EnlightenGANEnhancer(weights=")
    for h, w in [(48, 64), (37, 53)]:
        bgr = _dark_image(h, h, w)
        out = enhancer(bgr)
        expected = _authors_pipeline(net, bgr)
        # Same float computation up to summation order: equal but for a rare 1-level truncation flip.
        diff = np.abs(out.astype(int) - expected.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
        assert np.abs(out.astype(int) - bgr.astype(int)).mean() > 5  # it did change the image
    # The modern layout (no prefix, num_batches_tracked, zip) of the same weights loads too.
    modern = str(tmp_path / "modern.pth")
    torch.save(net.state_dict(), modern)
    ours = load_enlightengan_weights(UnetResizeConv(), modern)
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in net.state_dict().items())


def test_our_file_has_the_released_layout_and_loads_into_the_authors_code(tmp_path):
    ours = _randomise_norms(UnetResizeConv(), 5).eval()
    path = str(tmp_path / "ours.pth")
    save_enlightengan_weights(ours, path)
    state = torch.load(path, weights_only=True)
    assert list(state) == ["module." + k for k in ours.state_dict() if not k.endswith("num_batches_tracked")]
    authors = nn.DataParallel(ref.Unet_resize_conv(ref.Opt(), True))
    authors.load_state_dict(state)  # strict, as their load_network
    authors.eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], authors.module(x, attention_map(x))[0], rtol=1e-5, atol=1e-5)


def test_wrong_files_are_refused_naming_the_file(released, tmp_path):
    _, good = released
    cases = {}
    d_a = str(tmp_path / "200_net_D_A.pth")
    torch.save(nn.DataParallel(ref.NoNormDiscriminator(3, 8, 5)).state_dict(), d_a)
    cases[d_a] = r"looks like a discriminator.*missing \['bn1_1.bias'.*unexpected \['model.0.bias'"
    zdce = str(tmp_path / "Epoch99.pth")
    torch.save(ZeroDCEPP().state_dict(), zdce)
    cases[zdce] = r"missing \['bn1_1.bias'.*unexpected \['e_conv1"
    truncated = str(tmp_path / "truncated.pth")
    with open(good, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[:len(data) // 2])
    cases[truncated] = "Cannot read EnlightenGAN weights"
    text = str(tmp_path / "notes.pth")
    with open(text, "w") as f:
        f.write("not a checkpoint\n")
    cases[text] = "Cannot read EnlightenGAN weights"
    wrapped = str(tmp_path / "wrapped.pth")
    torch.save({"epoch": torch.tensor(3), "net": {"conv1_1.weight": torch.zeros(1)}}, wrapped)
    cases[wrapped] = "not a state dict of tensors"
    cases[str(tmp_path / "missing.pth")] = "not found"
    for path, why in cases.items():
        with pytest.raises(EnlightenGANWeightsError, match=why) as e:
            load_enlightengan_weights(UnetResizeConv(), path)
        msg = str(e.value)
        assert repr(path) in msg and "200_net_G_A.pth" in msg and "\n" not in msg, msg
        with pytest.raises(ParameterError, match=r"^weights: .*" + os.path.basename(path)):
            EnlightenGANEnhancer(weights=path)
    # A generator of another width, when the width is given: the shapes are named.
    with pytest.raises(ParameterError, match=r"channels=32.*wrong shapes \['bn1_1.bias: file \(32,\) vs model \(8,\)"):
        EnlightenGANEnhancer(weights=good, channels=8)
    with pytest.raises(ParameterError, match="^weights: no EnlightenGAN weights given"):
        EnlightenGANEnhancer()


# ---------------------------------------------------------------- the enhancer

@pytest.fixture(scope="module")
def narrow_weights(tmp_path_factory):
    torch.manual_seed(6)
    path = str(tmp_path_factory.mktemp("egan_narrow") / "narrow.pth")
    save_enlightengan_weights(_randomise_norms(UnetResizeConv(channels=8), 6), path)
    return path


def test_enhancer_keeps_shape_dtype_and_channel_order(narrow_weights):
    enhancer = EnlightenGANEnhancer(weights=narrow_weights)  # the width is read from the file
    assert enhancer.net.channels == 8
    for h, w in [(37, 53), (16, 16), (5, 9)]:
        bgr = _dark_image(1, h, w)
        out = enhancer(bgr)
        assert out.shape == bgr.shape and out.dtype == np.uint8 and out.flags.c_contiguous
        out_rgb = enhancer(np.ascontiguousarray(bgr[:, :, ::-1]), "RGB")
        np.testing.assert_array_equal(out_rgb, out[:, :, ::-1])
    # The network sees RGB: swapping the input's channels (not the order flag) changes the result.
    bgr = _dark_image(2, 37, 53)
    assert not np.array_equal(enhancer(np.ascontiguousarray(bgr[:, :, ::-1]))[:, :, ::-1], enhancer(bgr))


# ---------------------------------------------------------------- training

def test_losses_equal_the_authors():
    """Our batched global + patch losses equal the authors' SingleModel losses (use_ragan,
    hybrid_loss, patchD, patchD_3 = 5) with the same discriminators and patches."""
    torch.manual_seed(7)
    net_d, net_p = NoNormDiscriminator(3, 8, 5), NoNormDiscriminator(3, 8, 4)
    ref_d, ref_p = ref.NoNormDiscriminator(3, 8, 5), ref.NoNormDiscriminator(3, 8, 4)
    assert list(net_d.state_dict()) == list(ref_d.state_dict())
    ref_d.load_state_dict(net_d.state_dict())
    ref_p.load_state_dict(net_p.state_dict())
    real_b, fake_b = torch.rand(3, 3, 48, 48) * 2 - 1, torch.rand(3, 3, 48, 48) - 1
    offsets = [(0, 0), (5, 31), (31, 2), (7, 7), (20, 11), (31, 31)]
    authors = ref.SingleModelLosses()
    authors.opt = ref.Opt(use_ragan=True, hybrid_loss=True, patchD=True, patchD_3=5, use_wgan=0, D_P_times2=False)
    authors.criterionGAN = ref.GANLoss(use_lsgan=True)
    authors.netD_A, authors.netD_P, authors.real_B, authors.fake_B = ref_d, ref_p, real_b, fake_b
    patches = [(b[:, :, y:y + 16, x:x + 16]) for y, x in offsets for b in (real_b, fake_b)]
    authors.real_patch, authors.fake_patch = patches[0], patches[1]
    authors.real_patch_1, authors.fake_patch_1 = patches[2::2], patches[3::2]
    g_global, g_local = generator_adversarial_loss(net_d, net_p, real_b, fake_b, offsets, 16)
    loss_d, loss_p = discriminator_losses(net_d, net_p, real_b, fake_b, offsets, 16)
    torch.testing.assert_close(g_global + g_local, authors.backward_G(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_d, authors.backward_D_A(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_p, authors.backward_D_P(), rtol=1e-5, atol=1e-6)
    assert crop_patches(real_b, offsets, 16).shape == (18, 3, 16, 16)


def _tiny_sets():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")

    def images(n, scale, offset):
        out = []
        for i in range(n):
            f = torch.rand(3, generator=g) * 0.3 + 0.1
            base = torch.stack([0.5 + 0.4 * torch.sin(xx * f[0] + i + offset), 0.5 + 0.4 * torch.cos(yy * f[1]),
                                0.5 + 0.3 * torch.sin((xx + yy) * f[2])])
            out.append((base * scale + 0.02 * torch.randn(3, 48, 48, generator=g)).clamp(0, 1))
        return torch.stack(out)

    return images(8, 0.15, 0), images(8, 1.0, 3)  # dark (mean ~0.07) and unrelated normal (~0.5) scenes


def test_training_learns_and_round_trips(tmp_path):
    """GAN losses do not fall as a whole (the generator's rises while its discriminators learn),
    so this checks the two things that show the adversarial training works: the discriminators'
    loss (D_A + D_P) falls from its start (0.5 + 0.5 at the initialisation) over 40 steps, and the
    generator's output brightens from the dark inputs toward the normal-light set's mean."""
    dark, normal = _tiny_sets()
    model, history = train_enlightengan(dark, normal, iters=40, batch_size=4, crop=32, patch_size=16, channels=8,
                                        ndf=16, lr=1e-3, seed=0, progress=False)
    assert len(history) == 40 and all(np.isfinite(h["total"]) for h in history)
    assert set(history[0]) >= {"total", "G_global", "G_local", "D_A", "D_P", "fake_mean", "normal_mean"}

    def mean(key, part):
        return float(np.mean([h[key] for h in part]))

    first, last = history[:8], history[-8:]
    assert mean("D_A", last) + mean("D_P", last) < 0.8 * (mean("D_A", first) + mean("D_P", first))
    assert mean("fake_mean", last) > mean("fake_mean", first) + 0.1
    assert abs(mean("fake_mean", last) - mean("normal_mean", history)) < \
        abs(mean("fake_mean", first) - mean("normal_mean", history))
    assert not model.training
    # Same seed, same run.
    _, again = train_enlightengan(dark, normal, iters=2, batch_size=4, crop=32, patch_size=16, channels=8, ndf=16,
                                  lr=1e-3, seed=0, progress=False)
    assert again == history[:2]
    # Save -> load is bit-identical (num_batches_tracked is not in the released format).
    path = str(tmp_path / "G.pth")
    save_enlightengan_weights(model, path)
    loaded = load_enlightengan_weights(UnetResizeConv(channels=8), path)
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[k], v), k
    bgr = _dark_image(3, 40, 56)
    enhanced = EnlightenGANEnhancer(weights=path)(bgr)
    assert enhanced.mean() > bgr.mean() + 10


def test_training_errors_are_clear():
    dark, normal = _tiny_sets()
    with pytest.raises(ValueError, match=r"crop must be 0 or in \[patch_size=16, 48\] for dark"):
        train_enlightengan(dark, normal, iters=1, crop=64, patch_size=16, progress=False)
    with pytest.raises(ValueError, match=r"no normal images \(N = 0\)"):
        train_enlightengan(dark, normal[:0], iters=1, crop=32, progress=False)
    with pytest.raises(ValueError, match=r"normal must be a \(N, 3, S, S\) tensor"):
        train_enlightengan(dark, normal[:, :1], iters=1, crop=32, progress=False)
    bad = dark.clone()
    bad[:, :, :2] = float("nan")
    with pytest.raises(FloatingPointError, match="EnlightenGAN generator loss became nan at step 0; lower --lr"):
        train_enlightengan(bad, normal, iters=1, batch_size=2, crop=0, patch_size=16, channels=4, ndf=4,
                           progress=False)


def test_train_tool_subprocess(tmp_path):
    dark_dir, normal_dir = tmp_path / "dark", tmp_path / "normal"
    dark_dir.mkdir()
    normal_dir.mkdir()
    for s in range(3):
        cv2.imwrite(str(dark_dir / f"{s}.png"), _dark_image(s, 40, 40))
        cv2.imwrite(str(normal_dir / f"n{s}.png"), np.clip(_dark_image(s + 5, 40, 40).astype(int) * 4, 0, 255)
                    .astype(np.uint8))
    (dark_dir / "broken.png").write_bytes(b"not an image")
    out = str(tmp_path / "out" / "G.pth")
    tool = os.path.join(ROOT, "tools", "train_enlightengan.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, tool, "--images", str(dark_dir), "--normal-images", str(normal_dir),
                          "--iters", "3", "--size", "32", "--crop", "32", "--patch-size", "16", "--channels", "4",
                          "--ndf", "4", "--batch-size", "2", "--output", out], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Wrote" in run.stdout and "discriminator loss" in run.stdout
    assert list(torch.load(out, weights_only=True))[0] == "module.conv1_1.weight"
    enhancer = EnlightenGANEnhancer(weights=out)
    assert enhancer.net.channels == 4 and enhancer(_dark_image(0, 21, 30)).shape == (21, 30, 3)
    # Degrading normal-light images, continuing from the file (its width wins), and the errors.
    mod = load_script("tools/train_enlightengan.py")
    out2 = str(tmp_path / "G2.pth")
    assert mod.main(["--images", str(normal_dir), "--low-light", "lv2021", "--normal-images", str(normal_dir),
                     "--init", out, "--iters", "1", "--size", "32", "--crop", "16", "--patch-size", "16",
                     "--ndf", "4", "--batch-size", "2", "--output", out2]) == 0
    assert EnlightenGANEnhancer(weights=out2).net.channels == 4
    assert mod.main(["--images", str(dark_dir), "--normal-images", str(tmp_path / "nothing"), "--output", out2]) == 1
    assert mod.main(["--images", str(dark_dir), "--normal-images", str(normal_dir), "--init",
                     str(dark_dir / "broken.png"), "--output", out2]) == 1
    with pytest.raises(SystemExit) as e:
        mod.main(["--images", str(dark_dir), "--output", out2])  # no normal-light images: argparse's usage error
    assert e.value.code == 2
