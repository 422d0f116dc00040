"""AGLLNet: the network against a numpy transcription of the authors' Keras model, their .h5 layouts,
refused files, the enhancer, the supervised training and its command."""

import importlib.util
import json
import os
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
import torch

from agllnet_reference import KerasAGLLNet, conv2d, conv2d_transpose, write_keras_h5
from wnlb_d2.enhance.agllnet import (CONFIG_ATTRIBUTE, RELEASED_CONFIG, AGLLNet, AGLLNetEnhancer, AGLLNetWeightsError,
                                     TFConv2d, TFConvTranspose2d, build_agllnet_from_weights, convert_agllnet_h5,
                                     keras_layer_map, load_agllnet_weights)
from wnlb_d2.enhance.agllnet_train import (region_loss, save_agllnet_weights, ssim_per_channel, train_agllnet,
                                           ue_attention_map)
from wnlb_d2.enhance.zero_dce import ZeroDCEPP
from wnlb_d2.utils.params import ParameterError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread

#: Small widths and a 3-level Attention-Net (inputs multiples of 8).
SMALL = {"att_widths": (4, 6, 8), "fem_width": 4, "em_width": 3, "dilated_width": 5, "num_dilated": 2, "res_blocks": 1}


def _torch_out(net, x_nhwc):
    with torch.no_grad():
        return net(torch.from_numpy(x_nhwc).float().permute(0, 3, 1, 2)).permute(0, 2, 3, 1).double().numpy()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The reference model with small widths, written as Keras' model.save_weights does."""
    ref = KerasAGLLNet(SMALL, seed=1)
    path = str(tmp_path_factory.mktemp("agll") / "small.h5")
    write_keras_h5(ref, path, layout="save_weights", config_attribute=(CONFIG_ATTRIBUTE, json.dumps(SMALL)))
    return ref.load_h5(path), path  # the reference computes with the file's (float32) arrays


def test_tf_padding_of_the_keras_layers():
    """Stride-2 'same' pads the bottom/right only on even sizes; 'same' transposed convs crop as TF."""
    rng = np.random.default_rng(0)
    x = rng.random((1, 10, 7, 3))
    cases = [(TFConv2d(3, 4, 3, stride=2), "conv", dict(strides=2, padding="same")),
             (TFConv2d(3, 4, 5, dilation=2), "conv", dict(padding="same", dilation_rate=2)),
             (TFConv2d(3, 4, 5, padding="valid"), "conv", dict(padding="valid")),
             (TFConvTranspose2d(3, 4, 3, stride=2), "deconv", dict(strides=2, padding="same")),
             (TFConvTranspose2d(3, 4, 3), "deconv", dict(padding="same")),
             (TFConvTranspose2d(3, 4, 5, padding="valid"), "deconv", dict(padding="valid"))]
    for layer, kind, kw in cases:
        # Keras layouts: Conv2D (kh, kw, in, out), Conv2DTranspose (kh, kw, out, in).
        kernel = layer.weight.detach().double().numpy().transpose(2, 3, 1, 0)
        bias = layer.bias.detach().double().numpy()
        want = (conv2d if kind == "conv" else conv2d_transpose)(x, kernel, bias, **kw)
        got = _torch_out(layer, x)
        assert got.shape == want.shape, (layer, got.shape, want.shape)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=repr(layer))
    assert _torch_out(TFConv2d(3, 4, 3, stride=2), x).shape == (1, 5, 4, 4)  # ceil(10/2), ceil(7/2)


@pytest.mark.parametrize("size", [(24, 32), (40, 24)])
def test_forward_equals_the_keras_reference(small, size):
    ref, path = small
    net = load_agllnet_weights(AGLLNet(**SMALL), path).eval()
    x = np.random.default_rng(size[0]).random((2,) + size + (3,)) * 0.4
    want = ref.predict(x)
    got = _torch_out(net, x)
    assert got.shape == (2,) + size + (10,)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # The output is the authors' concatenation: [fused, attention, reinforced, x / (1.00001 - attention)].
    np.testing.assert_allclose(got[..., 7:10], x / (1.00001 - got[..., 3:4]), rtol=1e-5)
    assert 0 < got[..., 3].min() and got[..., 3].max() < 1


def test_authors_release_layout_loads_and_enhances(tmp_path):
    """A full-size file as the authors publish it (model.save, no configuration) loads, and the
    enhancer does what run_agllnet.py does with it."""
    ref = KerasAGLLNet(seed=2)
    path = str(tmp_path / "AgLLNet.h5")
    write_keras_h5(ref, path, layout="save")
    ref.load_h5(path)
    with h5py.File(path, "r") as f:
        assert "model_weights" in f and "conv2d_104" in f["model_weights"] and "conv2d_transpose_22" in f["model_weights"]
    enhancer = AGLLNetEnhancer(weights=path)
    net = enhancer.net
    assert net.multiple == 128 and net.config["att_widths"] == list(RELEASED_CONFIG["att_widths"])
    assert sum(p.numel() for p in net.parameters()) == 925_578  # the released model's parameters
    rng = np.random.default_rng(5)
    bgr = (rng.random((100, 150, 3)) * 90).astype(np.uint8)
    # run_agllnet.py: RGB / 255, Lanczos to multiples of 128, channels 4:7, Lanczos back, clip, truncate.
    img = cv2.resize(bgr[:, :, ::-1] / 255.0, (256, 128), interpolation=cv2.INTER_LANCZOS4)[None].astype(np.float32)
    want_net = ref.predict(img.astype(np.float64))
    np.testing.assert_allclose(_torch_out(net, img), want_net, atol=2e-5, rtol=1e-4)
    want = (np.clip(cv2.resize(want_net[0, :, :, 4:7].astype(np.float32), (150, 100),
                               interpolation=cv2.INTER_LANCZOS4), 0, 1) * 255.0).astype(np.uint8)[:, :, ::-1]
    out = enhancer(bgr)
    assert out.shape == bgr.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_keras_layouts_and_the_converted_pth_give_one_state_dict(small, tmp_path):
    ref, path = small
    base = load_agllnet_weights(AGLLNet(**SMALL), path).state_dict()
    files = {"save": str(tmp_path / "save.h5"), "nested": str(tmp_path / "nested.h5")}
    write_keras_h5(ref, files["save"], layout="save")
    write_keras_h5(ref, files["nested"], layout="save", nested=True)  # one sub-model layer holding all weights
    for name, f in files.items():
        got = load_agllnet_weights(AGLLNet(**SMALL), f).state_dict()
        assert all(torch.equal(got[k], base[k]) for k in base), name
    # The creation-order map the loader used: Attention-Net first, then FEM layer 1 and its EM.
    names = keras_layer_map(AGLLNet())
    assert names["conv2d_1"] == "attention.down.0" and names["conv2d_14"] == "attention.out"
    assert names["conv2d_15"] == "fem.0" and names["conv2d_16"] == "em.0.conv_in"
    assert names["conv2d_transpose_1"] == "em.1.up1" and names["conv2d_transpose_22"] == "em.9.conv_out"
    # .h5 -> .pth (atomic, no h5py needed to read it), loaded directly or with its architecture inferred.
    pth = convert_agllnet_h5(path, str(tmp_path / "sub" / "agllnet.pth"))
    assert sorted(os.listdir(tmp_path / "sub")) == ["agllnet.pth"]
    for net in (load_agllnet_weights(AGLLNet(**SMALL), pth), build_agllnet_from_weights(pth)):
        assert all(torch.equal(net.state_dict()[k], base[k]) for k in base)
    torch.save({"state_dict": {f"module.{k}": v for k, v in base.items()}}, str(tmp_path / "wrapped.pth"))
    assert build_agllnet_from_weights(str(tmp_path / "wrapped.pth")).config == AGLLNet(**SMALL).config


def test_wrong_files_are_refused_with_their_name(small, tmp_path):
    ref, path = small
    text = tmp_path / "notes.h5"
    text.write_text("not weights\n")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(open(path, "rb").read()[:3000])
    other_pth = str(tmp_path / "zero_dce.pth")
    torch.save(ZeroDCEPP().state_dict(), other_pth)
    other_h5 = str(tmp_path / "mbllen.h5")  # another Keras network: 3 convs
    with h5py.File(other_h5, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv2d_1", b"conv2d_2", b"conv2d_3"])
        for i, (cin, cout) in enumerate([(3, 32), (32, 32), (32, 3)], start=1):
            g = f.create_group(f"conv2d_{i}")
            g.attrs["weight_names"] = np.array([f"conv2d_{i}/kernel:0".encode(), f"conv2d_{i}/bias:0".encode()])
            g.create_dataset(f"conv2d_{i}/kernel:0", data=np.zeros((3, 3, cin, cout), np.float32))
            g.create_dataset(f"conv2d_{i}/bias:0", data=np.zeros(cout, np.float32))
    with_bn = str(tmp_path / "bn.h5")
    write_keras_h5(ref, with_bn, layout="save_weights")
    with h5py.File(with_bn, "a") as f:
        g = f["conv2d_1"]
        g.attrs["weight_names"] = np.array([b"batch_normalization_1/gamma:0"] + list(g.attrs["weight_names"]))
        g.create_dataset("batch_normalization_1/gamma:0", data=np.ones(4, np.float32))
    wider = str(tmp_path / "wider.h5")
    write_keras_h5(KerasAGLLNet(dict(SMALL, fem_width=5)), wider, layout="save_weights")
    no_keras = str(tmp_path / "plain.h5")
    with h5py.File(no_keras, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    cases = [(str(tmp_path / "missing.h5"), "file not found"), (str(text), "Cannot read"),
             (str(truncated), "Cannot read"), (other_pth, r"missing \['attention"),
             (other_h5, "the file has 3 Conv2D and 0 Conv2DTranspose layers, AGLLNet .* has 72 and 22"),
             (with_bn, r"unexpected Keras layers \['batch_normalization_1'\]"),
             (wider, r"layer conv2d_7 \(-> fem.0\) has kernel \(3, 3, 3, 5\)"),
             (no_keras, "without Keras' 'layer_names' attribute")]
    for bad, pattern in cases:
        with pytest.raises(AGLLNetWeightsError, match=pattern) as e:
            load_agllnet_weights(AGLLNet(**SMALL), bad)
        msg = str(e.value)
        assert repr(bad) in msg and "\n" not in msg and "expected the authors' Keras HDF5 weights" in msg, msg
    with pytest.raises(ParameterError, match="weights: no AGLLNet weights"):
        AGLLNetEnhancer()
    with pytest.raises(ParameterError, match="weights: .*mbllen.h5"):
        AGLLNetEnhancer(weights=other_h5)
    with pytest.raises(ValueError, match=r"size 20x32 must be a multiple of 8"):
        AGLLNet(**SMALL)(torch.zeros(1, 3, 20, 32))


def test_enhancer_keeps_shape_for_odd_sizes_and_both_orders(tmp_path):
    torch.manual_seed(0)
    path = save_agllnet_weights(AGLLNet(**SMALL), str(tmp_path / "small.h5"))
    enhancer = AGLLNetEnhancer(weights=path)
    assert enhancer.net.config == AGLLNet(**SMALL).config  # the architecture comes from the file
    rng = np.random.default_rng(1)
    for h, w in ((37, 53), (5, 9)):
        bgr = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        out = enhancer(bgr)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(enhancer(np.ascontiguousarray(bgr[:, :, ::-1]), "RGB"), out[:, :, ::-1])


def test_loss_terms():
    clean = torch.full((1, 3, 16, 16), 0.8)
    dark = clean * 0.25
    np.testing.assert_allclose(ue_attention_map(dark, clean).numpy(), 0.75 * 0.8 / (0.8 + 1e-4), rtol=1e-6)
    img = torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(ssim_per_channel(img, img), torch.ones(3))
    assert (ssim_per_channel(img, img.flip(-1)) < 0.9).all()
    # The darkest 40 % of the prediction's pixels count 4 times: 40 dark pixels of 100 with error 1.
    pred = torch.ones(1, 3, 10, 10)
    pred.view(1, 3, -1)[:, :, :40] = 0.0
    target = pred + 1.0
    assert region_loss(pred, target).item() == pytest.approx((40 * 4 + 60) / 100)


def _pairs(n=8, size=32):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = []
    for i in range(n):
        f = rng.uniform(2, 6, 3)
        clean.append(np.stack([0.5 + 0.4 * np.sin(f[0] * xx + i), 0.5 + 0.4 * np.cos(f[1] * yy),
                               0.5 + 0.3 * np.sin(f[2] * (xx + yy))]))
    clean = torch.tensor(np.array(clean), dtype=torch.float32)
    dark = (clean * 0.15 + torch.from_numpy(rng.normal(0, 0.01, clean.shape)).float()).clamp(0, 1)
    return dark, clean


def test_training_lowers_the_loss_and_saves_the_keras_layout(tmp_path):
    dark, clean = _pairs()
    model, history = train_agllnet((dark, clean), iters=40, batch_size=4, crop=24, lr=3e-3, config=SMALL,
                                   progress=False)
    first = np.mean([h["total"] for h in history[:5]])
    last = np.mean([h["total"] for h in history[-5:]])
    assert last < 0.7 * first, (first, last)
    assert {"attention", "enhance_ssim", "reinforce_region", "total"} <= set(history[0])
    path = save_agllnet_weights(model, str(tmp_path / "trained.h5"))
    loaded = build_agllnet_from_weights(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    # The file is the authors' Keras layout: the reference model reads it by layer name.
    with h5py.File(path, "r") as f:
        assert json.loads(f.attrs[CONFIG_ATTRIBUTE])["em_width"] == 3
        assert f["conv2d_1/conv2d_1/kernel:0"].shape == (3, 3, 3, 4)
    ref = KerasAGLLNet(SMALL).load_h5(path)
    x = dark[:2, :, :24, :32].permute(0, 2, 3, 1).double().numpy()
    np.testing.assert_allclose(_torch_out(model, x), ref.predict(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="crop 20 must be a multiple of 8"):
        train_agllnet((dark, clean), iters=1, crop=20, config=SMALL, progress=False)
    with pytest.raises(FloatingPointError, match="AGLLNet loss became nan"):
        train_agllnet((dark * float("nan"), clean), iters=1, crop=24, config=SMALL, progress=False)


def test_train_command_writes_weights_the_enhancer_loads(tmp_path):
    folder = tmp_path / "normal"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.GaussianBlur((rng.random((72, 80, 3)) * 255).astype(np.uint8), (9, 9), 3))
    out = str(tmp_path / "agllnet.h5")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_agllnet.py"), "--images", str(folder), "--low-light",
           "lv2021", "--size", "64", "--crop", "64", "--iters", "2", "--batch-size", "2", "--output", out]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Wrote" in res.stdout and os.path.isfile(out)
    enhancer = AGLLNetEnhancer(weights=out)
    assert enhancer.net.multiple == 64
    assert enhancer((rng.random((30, 41, 3)) * 40).astype(np.uint8)).shape == (30, 41, 3)
    bad = subprocess.run(cmd[:-2] + ["--crop", "48", "--output", out], capture_output=True, text=True, timeout=300,
                         env=env)
    assert bad.returncode == 1 and "--crop must be 0 or a multiple of 64" in bad.stderr
