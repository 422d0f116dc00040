"""Retinexformer: the network equals the authors' code, their BasicSR checkpoints load, training and its tool."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import retinexformer_reference as authors
from wnlb_d2.enhance.retinexformer import (RetinexFormer, RetinexFormerEnhancer, RetinexFormerWeightsError,
                                           checkpoint_configuration, load_retinexformer_weights)
from wnlb_d2.enhance.retinexformer_train import dihedral, save_retinexformer_weights, train_retinexformer
from wnlb_d2.enhance.zero_dce import ZeroDCEPP
from wnlb_d2.utils.params import ParameterError
from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread

#: A small configuration of every part (2 heads at level 1, 4 in the bottleneck, 2 pairs per IGAB there).
SMALL = dict(n_feat=8, stage=1, num_blocks=[1, 2, 2])


def _reference(seed=0, **cfg):
    """The authors' network with random weights away from the initialisation.

    The initialisation has LayerNorms at identity, zero biases and rescale 1, where a wrong
    wiring of those parameters would not show.
    """
    torch.manual_seed(seed)
    net = authors.RetinexFormer(in_channels=3, out_channels=3, **cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _dark_image(seed=0, h=48, w=64):
    """A dark, noisy, coloured BGR test image with some structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([20 + 15 * np.sin(xx / 5.0), 30 + 20 * (yy > h // 2), 15 + 10 * np.cos(yy / 4.0)], axis=2)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def _authors_enhance(net, bgr):
    """Enhancement/test_from_dataset.py on one image: RGB /255, pad, forward, crop, clamp, img_as_ubyte."""
    rgb = torch.from_numpy(np.float32(bgr[:, :, ::-1].copy()) / 255.).permute(2, 0, 1)[None]
    out = authors.authors_test_forward(net, rgb)[0].permute(1, 2, 0).numpy()
    return np.rint(out * 255).astype(np.uint8)[:, :, ::-1]  # skimage's img_as_ubyte rounds to nearest


# ---------------------------------------------------------------- the network


@pytest.mark.parametrize("cfg", [SMALL, dict(n_feat=4, stage=2, num_blocks=[2, 1, 1])])
def test_forward_equals_the_authors_code(cfg):
    ref = _reference(**cfg)
    ours = RetinexFormer(**cfg).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())  # the authors' names, in their order
    ours.load_state_dict(ref.state_dict())
    assert checkpoint_configuration(ref.state_dict()) == (cfg["n_feat"], cfg["stage"], cfg["num_blocks"])
    gen = torch.Generator().manual_seed(1)
    for shape in [(2, 3, 16, 24), (1, 3, 36, 20)]:
        x = torch.rand(shape, generator=gen) * 0.4
        with torch.no_grad():
            expected = ref(x)
            torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)
        assert (expected - x).abs().mean() > 0.05  # the network does change the image
    with pytest.raises(ValueError, match=r"multiples of 4, got \(1, 3, 18, 20\)"):
        ours(torch.rand(1, 3, 18, 20))


def test_defaults_are_the_released_lol_v1_network():
    # Options/RetinexFormer_LOL_v1.yml: in_channels 3, out_channels 3, n_feat 40, stage 1, num_blocks [1,2,2].
    theirs = authors.RetinexFormer(in_channels=3, out_channels=3, n_feat=40, stage=1, num_blocks=[1, 2, 2])
    ours = RetinexFormer()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == 1_605_701  # the paper's 1.61 M
    with pytest.raises(ParameterError, match="n_feat.*multiple of 4"):
        RetinexFormer(n_feat=10)
    with pytest.raises(ParameterError, match="num_blocks"):
        RetinexFormer(num_blocks=[1, 2])


def test_dihedral_is_the_authors_data_augmentation():
    x = torch.arange(3 * 4 * 6, dtype=torch.float32).reshape(3, 4, 6)
    for mode in range(8):
        theirs = authors.data_augmentation(x.permute(1, 2, 0).numpy(), mode)
        np.testing.assert_array_equal(dihedral(x, mode).permute(1, 2, 0).numpy(), theirs)


# ---------------------------------------------------------------- the authors' checkpoints


@pytest.fixture(scope="module")
def authors_checkpoint(tmp_path_factory):
    """A file as the authors release them: BasicSR's save_network, {'params': state dict on the CPU}."""
    net = _reference(**SMALL)
    state_dict = net.state_dict()
    for key, param in state_dict.items():
        if key.startswith('module.'):  # remove unnecessary 'module.'
            key = key[7:]
        state_dict[key] = param.cpu()
    path = str(tmp_path_factory.mktemp("retinexformer") / "LOL_v1.pth")
    torch.save({"params": state_dict}, path)
    return net, path


def test_authors_checkpoint_gives_the_authors_output(authors_checkpoint, tmp_path):
    net, path = authors_checkpoint
    enhancer = RetinexFormerEnhancer(weights=path, **SMALL)
    for h, w in [(37, 53), (32, 40)]:  # padded, and a multiple of 4 as it is
        bgr = _dark_image(h=h, w=w)
        out = enhancer(bgr)
        np.testing.assert_array_equal(out, _authors_enhance(net, bgr))
        assert np.abs(out.astype(int) - bgr).mean() > 5
    # DataParallel's "module." prefix (their test script adds it when needed) and an EMA-only file load too.
    state = net.state_dict()
    for name, obj in [("dp.pth", {"params": {f"module.{k}": v for k, v in state.items()}}),
                      ("ema.pth", {"params_ema": state})]:
        torch.save(obj, str(tmp_path / name))
        ours = load_retinexformer_weights(RetinexFormer(**SMALL), str(tmp_path / name))
        assert all(torch.equal(ours.state_dict()[k], v) for k, v in state.items())


def _bad_files(folder, good_path):
    other = os.path.join(folder, "zero_dce_in_basicsr.pth")
    torch.save({"params": ZeroDCEPP(channels=4).state_dict()}, other)
    bare = os.path.join(folder, "bare_state_dict.pth")
    torch.save(RetinexFormer(**SMALL).state_dict(), bare)
    wide = os.path.join(folder, "wider.pth")
    torch.save({"params": RetinexFormer(n_feat=12, num_blocks=[1, 2, 2]).state_dict()}, wide)
    text = os.path.join(folder, "notes.txt")
    with open(text, "w") as f:
        f.write("not a checkpoint\n")
    truncated = os.path.join(folder, "truncated.pth")
    with open(good_path, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[:len(data) // 2])
    return [(other, r"missing \['body\.0\.denoiser.*unexpected \['e_conv1"),
            (bare, r"expected a BasicSR checkpoint \{'params'"),
            (wide, r"\(the file is n_feat=12, stage=1, num_blocks=\[1, 2, 2\]\): .*wrong shapes \['body\.0\."),
            (text, "Cannot read"),
            (truncated, "Cannot read"),
            (os.path.join(folder, "missing.pth"), "not found")]


def test_wrong_files_are_refused_in_one_line_naming_the_file(authors_checkpoint, tmp_path):
    _, good = authors_checkpoint
    for path, why in _bad_files(str(tmp_path), good):
        with pytest.raises(RetinexFormerWeightsError, match=why) as e:
            load_retinexformer_weights(RetinexFormer(**SMALL), path)
        assert path in str(e.value) and "\n" not in str(e.value), str(e.value)
        with pytest.raises(ParameterError, match="weights") as e:
            RetinexFormerEnhancer(weights=path, **SMALL)
        assert path in str(e.value)
    with pytest.raises(ParameterError, match="no RetinexFormer weights given"):
        RetinexFormerEnhancer()


def test_enhancer_keeps_shape_and_channel_order(authors_checkpoint):
    _, path = authors_checkpoint
    enhancer = RetinexFormerEnhancer(weights=path, **SMALL)
    for h, w in [(37, 53), (4, 8), (3, 2), (1, 7)]:  # odd; exact; smaller than the padding (replicated)
        bgr = _dark_image(seed=h, h=h, w=w)
        out = enhancer(bgr)
        assert out.shape == bgr.shape and out.dtype == np.uint8 and out.flags.c_contiguous
        rgb_out = enhancer(np.ascontiguousarray(bgr[:, :, ::-1]), "RGB")
        np.testing.assert_array_equal(rgb_out, out[:, :, ::-1])
    assert "n_feat=8" in repr(enhancer)


# ---------------------------------------------------------------- training


def _pairs(n=8, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.nn.functional.avg_pool2d(torch.rand(n, 3, size, size, generator=gen), 5, 1, 2) * 0.6 + 0.2
    dark = (clean * 0.15 + 0.01 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    return dark, clean


def test_training_lowers_the_loss_and_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = RetinexFormer(**SMALL)
    model, history = train_retinexformer(_pairs(), iters=40, batch_size=4, crop=24, lr=3e-3, seed=0,
                                         progress=False, model=model)
    totals = [h["total"] for h in history]
    assert len(totals) == 40 and all(isinstance(t, float) for t in totals)
    assert np.mean(totals[-5:]) < 0.5 * np.mean(totals[:5]), totals
    path = str(tmp_path / "out" / "retinexformer.pth")
    save_retinexformer_weights(model, path)
    ckpt = torch.load(path, weights_only=True)
    assert list(ckpt) == ["params"]
    theirs = authors.RetinexFormer(in_channels=3, out_channels=3, **SMALL)
    theirs.load_state_dict(ckpt["params"])  # strict, as their test script loads checkpoint['params']
    loaded = load_retinexformer_weights(RetinexFormer(**SMALL), path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with pytest.raises(FloatingPointError, match="loss became nan"):
        dark, clean = _pairs(2, 16)
        dark[0, 0, 0, 0] = float("nan")
        train_retinexformer((dark, clean), iters=1, batch_size=2, crop=0, progress=False, model=model,
                            geometric=False, mixup=False)
    with pytest.raises(ValueError, match=r"crop must be 0 or a multiple of 4 in \[8, 32\]"):
        train_retinexformer(_pairs(), iters=1, crop=30, progress=False, model=model)


def _load_tool():
    return load_script("tools/train_retinexformer.py")


def test_train_tool_writes_weights_the_enhancer_loads(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for s in range(3):
        cv2.imwrite(str(folder / f"{s}.png"), (_dark_image(s, 40, 40).astype(int) * 5).clip(0, 255).astype(np.uint8))
    (folder / "broken.png").write_bytes(b"not an image")
    out = str(tmp_path / "rf" / "retinexformer.pth")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_retinexformer.py"), "--images",
                           str(folder), "--low-light", "lv2021", "--iters", "2", "--size", "32", "--crop", "16",
                           "--batch-size", "2", "--output", out], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "after 2 steps on 3 pair(s)" in proc.stdout
    enhanced = RetinexFormerEnhancer(weights=out)(_dark_image(h=21, w=30))  # the released configuration
    assert enhanced.shape == (21, 30, 3)
    tool = _load_tool()
    with pytest.raises(SystemExit) as e:  # no pipeline: no pairs
        tool.main(["--images", str(folder), "--output", out])
    assert e.value.code == 2
    assert tool.main(["--images", str(folder), "--low-light", "lv2021", "--crop", "18", "--output", out]) == 1
    assert tool.main(["--images", str(tmp_path / "nothing"), "--low-light", "lv2021", "--output", out]) == 1
    assert tool.main(["--images", str(folder), "--low-light", "lv2021", "--init", str(folder / "broken.png"),
                      "--size", "16", "--output", out]) == 1
