# MIT License
#
# Copyright (c) 2021 Yu Li
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.
"""Test-only reference: the released AgLLNet Keras model (github.com/yu-li/AGLLNet, model/AgLLNet.h5)
written as Keras functional code over a tiny numpy implementation of the Keras 2 layers.

The authors publish the model file and ``run_agllnet.py`` but no model-building code; this is a
transcription of the layer graph inside AgLLNet.h5 (read from its published ONNX conversion), in
the style of the first author's Keras code for MBLLEN (github.com/Lvfeifan/MBLLEN,
main/Network.py: FEM conv, then its EM, repeated). It is independent of ``wnlb_d2``: NHWC float64
arrays, Keras weight layouts as stored in the .h5 (Conv2D kernel (kh, kw, in, out),
Conv2DTranspose kernel (kh, kw, out, in)), TensorFlow's 'same' padding computed from TF's rule
for convolutions and, for transposed ones, from the forward convolution they are the gradient of.
Layers get Keras 2.2's auto-names (``conv2d_1``, ``conv2d_transpose_1`` ...) in the order this
code creates them, and the .h5 files are written with h5py in Keras' two layouts.
"""

import json
from collections import OrderedDict

import numpy as np

RELEASED = {"att_widths": (8, 16, 32, 64, 64, 64, 64), "fem_width": 8, "em_width": 8, "dilated_width": 24,
            "num_dilated": 6, "res_blocks": 4}


# ------------------------------------------------------------------ numpy Keras layers

def tf_same_padding(size, kernel, stride, dilation=1):
    """TensorFlow's SAME padding (before, after) for a convolution over one axis of ``size``."""
    eff = (kernel - 1) * dilation + 1
    out_size = (size + stride - 1) // stride
    needed = max(0, (out_size - 1) * stride + eff - size)
    return needed // 2, needed - needed // 2


def conv2d(x, kernel, bias, strides=1, padding="same", dilation_rate=1):
    """``tf.nn.conv2d`` (cross-correlation) + bias; x (N, H, W, Cin), kernel (kh, kw, Cin, Cout)."""
    kh, kw = kernel.shape[:2]
    if padding == "same":
        pt, pb = tf_same_padding(x.shape[1], kh, strides, dilation_rate)
        pl, pr = tf_same_padding(x.shape[2], kw, strides, dilation_rate)
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    n, h, w, _ = x.shape
    ho = (h - ((kh - 1) * dilation_rate + 1)) // strides + 1
    wo = (w - ((kw - 1) * dilation_rate + 1)) // strides + 1
    out = np.zeros((n, ho, wo, kernel.shape[3]))
    for a in range(kh):
        for b in range(kw):
            r, c = a * dilation_rate, b * dilation_rate
            patch = x[:, r:r + (ho - 1) * strides + 1:strides, c:c + (wo - 1) * strides + 1:strides, :]
            out += patch @ kernel[a, b]
    return out + bias


def conv2d_transpose(x, kernel, bias, strides=1, padding="same"):
    """``tf.nn.conv2d_transpose`` (the input-gradient of conv2d) + bias; kernel (kh, kw, Cout, Cin).

    Keras' output size: ``H * s`` ('same') or ``H * s + max(k - s, 0)`` ('valid'). Output row p gets
    ``x[i] K[a]`` for every ``i * s + a - pad_top == p``, pad_top being the SAME padding of the
    forward convolution from the output size to H (0 for 'valid').
    """
    n, h, w, _ = x.shape
    kh, kw = kernel.shape[:2]
    if padding == "same":
        oh, ow = h * strides, w * strides
        pt, pl = tf_same_padding(oh, kh, strides)[0], tf_same_padding(ow, kw, strides)[0]
    else:
        oh, ow = h * strides + max(kh - strides, 0), w * strides + max(kw - strides, 0)
        pt = pl = 0
    # Scatter every input pixel through every tap into the uncropped output, then keep the rows
    # from pad_top on.
    full = np.zeros((n, (h - 1) * strides + kh + pt, (w - 1) * strides + kw + pl, kernel.shape[2]))
    for a in range(kh):
        for b in range(kw):
            full[:, a:a + (h - 1) * strides + 1:strides, b:b + (w - 1) * strides + 1:strides, :] += x @ kernel[a, b].T
    return full[:, pt:pt + oh, pl:pl + ow, :] + bias


def relu(x):
    return np.maximum(x, 0.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_ACTIVATIONS = {None: lambda x: x, "linear": lambda x: x, "relu": relu, "sigmoid": sigmoid}


class Keras:
    """The handful of Keras layers the model uses; auto-names like Keras 2.2 (per class, from 1)."""

    def __init__(self, rng=None, weight_scale=1.0):
        self.rng = rng
        self.weight_scale = weight_scale
        self.counts = {}
        self.layers = OrderedDict()   # every layer, creation order
        self.weights = {}             # name -> {"kernel": ..., "bias": ...}

    def _name(self, prefix):
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        name = f"{prefix}_{self.counts[prefix]}"
        self.layers[name] = prefix
        return name

    def _weights(self, name, kshape, n_out):
        if name not in self.weights:  # built at the first call, as Keras does
            fan_in = int(np.prod(kshape[:2])) * (kshape[2] if len(kshape) == 4 else 1)
            limit = self.weight_scale * np.sqrt(6.0 / (fan_in + int(np.prod(kshape[:2])) * kshape[3]))
            self.weights[name] = {"kernel": self.rng.uniform(-limit, limit, kshape),
                                  "bias": self.rng.uniform(-0.05, 0.1, (n_out,))}
        return self.weights[name]["kernel"], self.weights[name]["bias"]

    def Conv2D(self, filters, kernel_size, strides=1, padding="same", dilation_rate=1, activation=None):
        name = self._name("conv2d")

        def call(x):
            k, b = self._weights(name, (kernel_size, kernel_size, x.shape[-1], filters), filters)
            return _ACTIVATIONS[activation](conv2d(x, k, b, strides, padding, dilation_rate))
        return call

    def Conv2DTranspose(self, filters, kernel_size, strides=1, padding="same", activation=None):
        name = self._name("conv2d_transpose")

        def call(x):
            k, b = self._weights(name, (kernel_size, kernel_size, filters, x.shape[-1]), filters)
            return _ACTIVATIONS[activation](conv2d_transpose(x, k, b, strides, padding))
        return call

    def UpSampling2D(self):
        self._name("up_sampling2d")
        return lambda x: x.repeat(2, axis=1).repeat(2, axis=2)

    def Concatenate(self, axis=-1):
        self._name("concatenate")
        return lambda xs: np.concatenate(xs, axis=axis)

    def Add(self):
        self._name("add")
        return lambda xs: sum(xs)

    def Activation(self, activation):
        self._name("activation")
        return _ACTIVATIONS[activation]

    def Lambda(self, fn):
        self._name("lambda")
        return fn


# ------------------------------------------------------------------ the model (authors' order)

def build_agllnet(K, inputs, cfg):
    """The AgLLNet graph on ``inputs`` (N, H, W, 3); returns the (N, H, W, 10) model output."""
    aw, f, c, d = list(cfg["att_widths"]), cfg["fem_width"], cfg["em_width"], cfg["dilated_width"]

    # ---- Attention-Net (U-Net): stride-2 encoder, nearest up-sampling decoder, sigmoid map.
    x = inputs
    enc = []
    for width in aw:
        x = K.Conv2D(width, 3, strides=2, padding="same", activation="relu")(x)
        enc.append(x)
    for k in range(1, len(aw)):
        x = K.UpSampling2D()(x)
        x = K.Conv2D(aw[len(aw) - 1 - k], 3, padding="same", activation="relu")(x)
        x = K.Concatenate(axis=3)([x, enc[len(aw) - 1 - k]])
    x = K.UpSampling2D()(x)
    att = K.Conv2D(1, 3, padding="same", activation="sigmoid")(x)

    # ---- attention-guided input: I / (1.00001 - A)
    guided = K.Lambda(lambda t: t[..., 1:4] / (1.00001 - t[..., 0:1]))(K.Concatenate(axis=3)([att, inputs]))

    def em_dilated(t):
        t = K.Conv2D(d, 3, padding="same", activation="relu")(t)
        for i in range(cfg["num_dilated"]):
            t = K.Conv2D(d, 3, padding="same", dilation_rate=2 ** (i + 1), activation="relu")(t)
        t = K.Conv2D(d, 3, padding="same", activation="relu")(t)
        return K.Conv2D(3, 1, padding="same")(t)

    def em_unet(t):
        t = K.Conv2D(c, 3, padding="same", activation="relu")(t)
        wide = K.Conv2D(2 * c, 5, padding="same", dilation_rate=2, activation="relu")(t)
        t = K.Conv2D(4 * c, 3, strides=2, padding="same", activation="relu")(wide)
        m1 = K.Conv2D(4 * c, 3, padding="same", dilation_rate=2, activation="relu")(t)
        t = K.Conv2D(4 * c, 3, strides=2, padding="same", activation="relu")(m1)
        t = K.Conv2D(4 * c, 3, padding="same", activation="relu")(t)
        t = K.Conv2DTranspose(4 * c, 3, strides=2, padding="same", activation="relu")(t)
        t = K.Concatenate(axis=3)([t, m1])
        t = K.Conv2DTranspose(2 * c, 3, strides=2, padding="same", activation="relu")(t)
        t = K.Concatenate(axis=3)([t, wide])
        return K.Conv2D(3, 3, padding="same", activation="relu")(t)

    def em_encdec(t, ks, skips):
        t = K.Conv2D(c, 3, padding="same", activation="relu")(t)
        e1 = K.Conv2D(c, ks, padding="valid", activation="relu")(t)
        e2 = K.Conv2D(2 * c, ks, padding="valid", activation="relu")(e1)
        t = K.Conv2D(2 * c, ks, padding="valid", activation="relu")(e2)
        t = K.Conv2DTranspose(2 * c, ks, padding="valid", activation="relu")(t)
        if skips:
            t = K.Concatenate(axis=3)([t, e2])
        t = K.Conv2DTranspose(c, ks, padding="valid", activation="relu")(t)
        if skips:
            t = K.Concatenate(axis=3)([t, e1])
        return K.Conv2DTranspose(3, ks, padding="valid", activation="relu")(t)

    def em_residual(t):
        t = K.Conv2D(c, 3, padding="same", activation="relu")(t)
        t = K.Conv2D(2 * c, 3, strides=2, padding="same", activation="relu")(t)
        t = K.Conv2D(4 * c, 3, strides=2, padding="same", activation="relu")(t)
        for _ in range(cfg["res_blocks"]):
            r = K.Conv2D(4 * c, 3, padding="same")(t)
            r = K.Conv2D(4 * c, 3, padding="same")(r)
            t = K.Activation("relu")(K.Add()([t, r]))
        t = K.Conv2DTranspose(4 * c, 3, strides=2, padding="same", activation="relu")(t)
        t = K.Conv2DTranspose(2 * c, 3, strides=2, padding="same", activation="relu")(t)
        return K.Conv2DTranspose(3, 3, padding="same", activation="relu")(t)

    ems = [em_dilated, em_unet, lambda t: em_encdec(t, 7, False), lambda t: em_encdec(t, 5, True), em_residual]

    # ---- Enhancement-Net: FEM layer k, then its EM (the second five see [A, feature]); fusion.
    fem = guided
    branches = []
    for k in range(10):
        fem = K.Conv2D(f, 3, padding="same", activation="relu")(fem)
        branches.append(ems[k % 5](fem if k < 5 else K.Concatenate(axis=3)([att, fem])))
    fused = K.Conv2D(3, 1, padding="same")(K.Concatenate(axis=3)([att] + branches))

    # ---- Reinforce-Net, and the model's output.
    reinforced = em_dilated(fused)
    return K.Concatenate(axis=3)([fused, att, reinforced, guided])


class KerasAGLLNet:
    """The model with Keras-named weights in numpy; ``predict`` on NHWC float arrays."""

    def __init__(self, config=None, seed=0, weight_scale=1.0):
        self.config = dict(RELEASED, **(config or {}))
        self.K = Keras(np.random.default_rng(seed), weight_scale)
        m = 2 ** len(self.config["att_widths"])
        side = -(-max(m, 19) // m) * m  # a valid input size (the 7x7 'valid' EM needs >= 19)
        build_agllnet(self.K, np.zeros((1, side, side, 3)), self.config)  # builds every layer's weights

    def predict(self, x):
        k = Keras()
        k.weights = self.K.weights  # same names (a fresh counter, same creation order)
        return build_agllnet(k, np.asarray(x, np.float64), self.config)

    def weighted_layers(self):
        return [n for n in self.K.layers if n in self.K.weights]

    def load_h5(self, path):
        """Replace the weights by those in a Keras .h5 (any layout), matched by layer name."""
        import h5py

        found = {}
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    layer, weight = name.split("/")[-2], name.split("/")[-1].split(":")[0]
                    found.setdefault(layer, {})[weight] = np.asarray(obj, np.float64)
            f.visititems(visit)
        assert set(found) == set(self.K.weights), (sorted(set(found) ^ set(self.K.weights))[:5])
        self.K.weights = found
        return self


def write_keras_h5(model, path, layout="save", nested=False, config_attribute=None):
    """Write ``model``'s weights as Keras 2.2 does.

    Args:
        layout: "save" (``model.save``: ``model_weights`` group, ``model_config`` JSON) or
            "save_weights" (the groups at the root).
        nested: the whole network as one sub-model layer ``model_1`` (as when the authors' model
            is called inside a training model), holding every weight.
        config_attribute: (name, JSON string) to add at the root, or None.
    """
    import h5py

    names = list(model.K.layers)
    # Keras lists layers by graph depth, not by creation: an order where conv2d_10 precedes conv2d_2.
    file_order = ["input_1"] + sorted(names)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.0"
        f.attrs["backend"] = b"tensorflow"
        if config_attribute:
            f.attrs[config_attribute[0]] = config_attribute[1]
        if layout == "save":
            f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"name": "model_1"}}).encode()
            f.attrs["training_config"] = json.dumps({"loss": "mse"}).encode()
            root = f.create_group("model_weights")
            root.attrs["keras_version"] = b"2.2.0"
            root.attrs["backend"] = b"tensorflow"
        else:
            root = f
        if nested:
            root.attrs["layer_names"] = np.array([b"input_1", b"model_1"])
            root.create_group("input_1").attrs["weight_names"] = np.array([], dtype=np.float64)
            g = root.create_group("model_1")
            wnames = []
            for name in model.weighted_layers():
                for w in ("kernel", "bias"):
                    wnames.append(f"{name}/{w}:0".encode())
                    g.create_dataset(f"{name}/{w}:0", data=model.K.weights[name][w].astype(np.float32))
            g.attrs["weight_names"] = np.array(wnames)
            return path
        root.attrs["layer_names"] = np.array([n.encode() for n in file_order])
        for name in file_order:
            g = root.create_group(name)
            if name in model.K.weights:
                g.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()])
                for w in ("kernel", "bias"):
                    g.create_dataset(f"{name}/{w}:0", data=model.K.weights[name][w].astype(np.float32))
            else:
                g.attrs["weight_names"] = np.array([], dtype=np.float64)  # as Keras writes weightless layers
    return path
