# The network follows the layers of the authors' released AgLLNet.h5 (github.com/yu-li/AGLLNet):
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
"""AGLLNet, the attention-guided low-light enhancer of Lv, Li and Lu (IJCV 2021), with its Keras weights.

Paper: Feifan Lv, Yu Li, Feng Lu, "Attention Guided Low-light Image Enhancement with a Large Scale
Low-light Simulation Dataset", International Journal of Computer Vision 129(7):2175-2193, 2021
(arXiv:1908.00682). Authors' repository: https://github.com/yu-li/AGLLNet (MIT licence,
Copyright (c) 2021 Yu Li; this file follows the released model, so its notice heads this file).

What the authors publish is a test script (``run_agllnet.py``) and one Keras model,
``model/AgLLNet.h5`` (Keras 2.2 / TensorFlow 1.6, saved with ``model.save``, loaded with
``keras.models.load_model``); the README says it "is newly trained for general low light
enhancement. It is not strictly the one used in our IJCV paper". There is no model-building or
training code. The network below is the one inside that released file, read layer by layer from
its published conversion (the ONNX export of AgLLNet.h5 in Kazuhito00/Image-Processing-Node-Editor,
``node/deep_learning_node/low_light_image_enhancement/AGLLNet``): 104 Conv2D and 22
Conv2DTranspose layers with biases, ReLU activations, no normalisation layer, 925,578 parameters
(this module with those weights copied in reproduces the ONNX model under onnxruntime to within
1e-6 on 256x256 and 256x384 inputs, all 10 output channels):

* **Attention-Net** (U-Net, the "ue-attention map" A of under-exposed regions): seven 3x3
  stride-2 convolutions (8, 16, 32, 64, 64, 64, 64 channels), then six times nearest 2x
  up-sampling + 3x3 conv + concatenation with the encoder feature of the same size, a last
  up-sampling and a 3x3 conv to 1 channel with a sigmoid. Inputs must be multiples of 2^7 = 128
  (the authors' script resizes to that).
* **attention-guided input** ``I / (1.00001 - A)`` (the image brightened where A says it is
  under-exposed; with the training target of A it equals the clean image's brightness).
* **Enhancement-Net** as in the paper (decomposition / multi-branch enhancement / fusion): a
  10-layer feature-extraction module (FEM, 3x3 convs of 8 channels) and after each FEM layer an
  enhancement module (EM). The EMs are five kinds, each used twice -- layers 1-5 see the FEM
  feature, layers 6-10 the FEM feature with A concatenated in front:
  ``dilated`` (3x3 convs of 24 channels with dilations 2..64, 1x1 to RGB, linear),
  ``unet`` (two stride-2 levels with dilated convs and transposed-conv up-sampling),
  ``conv7`` (MBLLEN's EM: three 7x7 valid convs and three 7x7 valid transposed convs),
  ``conv5`` (the same with 5x5 kernels and skip concatenations),
  ``residual`` (two stride-2 convs, four residual blocks, three transposed convs).
  The fusion module is a 1x1 conv of [A, EM_1 .. EM_10] (31 channels) to RGB, linear.
* **Reinforce-Net**: a ``dilated`` module on the fused image.

The Keras model's output has 10 channels (NHWC): ``[fused (3), A (1), reinforced (3),
I / (1.00001 - A) (3)]``; the authors' script takes channels 4:7 (the Reinforce-Net output) as the
enhanced image. :class:`AGLLNet` returns the same 10 channels in NCHW. The paper's Noise-Net is
not in the released model (no layer of it exists in the file), so it is not here either.

Keras layers and their weights: ``Conv2D`` kernels are (kh, kw, in, out) and become torch's
(out, in, kh, kw); ``Conv2DTranspose`` kernels are (kh, kw, out, in) and become torch's
ConvTranspose2d (in, out, kh, kw) -- the same axis permutation (3, 2, 0, 1) for both.
TensorFlow's 'same' padding is reproduced exactly: a stride-2 3x3 conv on an even size pads 0
rows at the top and 1 at the bottom (asymmetric, unlike torch's ``padding=1``), and a stride-2
3x3 'same' transposed conv keeps the first 2n rows of its (2n+1)-row full output (torch's
``padding``/``output_padding`` would shift it by one). ``UpSampling2D`` is nearest-neighbour.

Loading the authors' file (:func:`load_agllnet_weights`, :func:`convert_agllnet_h5`): the .h5 is
read with h5py in both layouts Keras 2 writes -- ``model.save`` (groups under ``model_weights``)
and ``model.save_weights`` (groups at the root) -- through each layer group's ``weight_names``
(``conv2d_5/kernel:0`` ...), so nested models load too. Keras names layers by creation order
(``conv2d_1``, ``conv2d_2``, ... and separately ``conv2d_transpose_1`` ...), while the file lists
them in its own depth order, so the layers are matched to this network by their creation order:
the numeric suffix sorted, against :meth:`AGLLNet.keras_layers`, which lists the modules in the
order the authors' code creates them (Attention-Net down then up then out; then for k = 1..10
FEM layer k followed by EM k, the MBLLEN code's interleaving that the layer numbering of the
converted release also shows; then the fusion conv and the Reinforce-Net; inside a module in
data-flow order). With the released configuration ``conv2d_1 .. conv2d_14`` are the
Attention-Net, ``conv2d_15`` is FEM layer 1, ``conv2d_16 .. conv2d_24`` its dilated EM, and so
on; :func:`keras_layer_map` prints the whole map. Every kernel's shape is checked, so a file of
another network (or another ordering) is refused with the first mismatch named.
"""

import json
import logging
import math
import os
import re

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.params import ParameterError
from .base import Enhancer, frozen_network
from .weights_io import (check_weights_file, listed, one_line, read_torch_file, save_torch_file,
                         state_dict_differences, state_dict_of_tensors)

__all__ = ["AGLLNet", "AGLLNetEnhancer", "AGLLNetWeightsError", "RELEASED_CONFIG", "CONFIG_ATTRIBUTE",
           "EM_KINDS", "TFConv2d", "TFConvTranspose2d", "load_agllnet_weights", "build_agllnet_from_weights",
           "convert_agllnet_h5", "read_keras_h5", "keras_layer_map", "keras_to_state_dict",
           "agllnet_config_from_state_dict", "split_outputs"]

logger = logging.getLogger(__name__)

#: The configuration of the authors' released ``AgLLNet.h5``.
RELEASED_CONFIG = {"att_widths": (8, 16, 32, 64, 64, 64, 64), "fem_width": 8, "em_width": 8, "dilated_width": 24,
                   "num_dilated": 6, "res_blocks": 4}

#: The enhancement-module kinds after FEM layers 1-5 (and, with the attention map, 6-10).
EM_KINDS = ("dilated", "unet", "conv7", "conv5", "residual")

#: Root attribute of the .h5 files this package writes: the JSON configuration of the network
#: (Keras ignores unknown attributes; the authors' file has none and means the released one).
CONFIG_ATTRIBUTE = "wnlb_d2_agllnet_config"

#: The constant of the authors' attention-guided input ``I / (1.00001 - A)`` (float32 in the file).
ATTENTION_EPS = 1.00001

_EXPECTED = ("expected the authors' Keras HDF5 weights (AgLLNet.h5: model.save or model.save_weights of "
             "Keras 2, Conv2D/Conv2DTranspose layers conv2d_N/conv2d_transpose_N) or a torch state dict "
             "written by convert_agllnet_h5")


class AGLLNetWeightsError(ValueError):
    """A weights file that is missing or does not hold AGLLNet's layers; the message names the file."""


def _same_pads(size, kernel, stride, dilation):
    """TensorFlow's 'same' padding (before, after) of one spatial axis."""
    eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


class TFConv2d(nn.Conv2d):
    """``keras.layers.Conv2D`` with TensorFlow's 'same' or 'valid' padding.

    'same' with stride 1 and an odd effective kernel is symmetric and uses torch's own padding;
    otherwise the input is zero-padded as TensorFlow does (the extra row/column at the bottom/right).

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, out_channels, ceil(H / stride), ceil(W / stride))``
    ('same') or ``(B, out_channels, H - (k - 1) * d, ...)`` ('valid', stride 1).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, padding="same"):
        if padding not in ("same", "valid"):
            raise ValueError(f"TFConv2d: padding must be 'same' or 'valid', got {padding!r}")
        eff = (kernel_size - 1) * dilation + 1
        self.tf_padding = padding
        # Symmetric 'same' padding: torch pads inside the convolution (no copy of the input).
        self._inline = padding == "same" and stride == 1 and eff % 2 == 1
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation,
                         padding=(eff - 1) // 2 if self._inline else 0)

    def forward(self, x):
        if self.tf_padding == "same" and not self._inline:
            k, s, d = self.kernel_size[0], self.stride[0], self.dilation[0]
            top, bottom = _same_pads(x.shape[-2], k, s, d)
            left, right = _same_pads(x.shape[-1], k, s, d)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class TFConvTranspose2d(nn.ConvTranspose2d):
    """``keras.layers.Conv2DTranspose`` with TensorFlow's 'same' or 'valid' output size.

    torch computes the full transposed convolution (``(n - 1) * s + k`` rows); 'valid' keeps it,
    'same' keeps ``n * s`` rows starting at row ``(k - s) // 2`` (TensorFlow's crop: for k=3, s=2
    the first 2n rows, for k=3, s=1 rows 1..n).

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, out_channels, H * s, W * s)`` ('same') or
    ``(B, out_channels, (H - 1) * s + k, ...)`` ('valid').
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="same"):
        if padding not in ("same", "valid"):
            raise ValueError(f"TFConvTranspose2d: padding must be 'same' or 'valid', got {padding!r}")
        if kernel_size < stride:
            raise ValueError(f"TFConvTranspose2d: kernel_size {kernel_size} < stride {stride} is not supported")
        self.tf_padding = padding
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)

    def forward(self, x):
        h, w = x.shape[-2:]
        y = super().forward(x)
        if self.tf_padding == "same":
            s = self.stride[0]
            before = (self.kernel_size[0] - s) // 2
            y = y[..., before:before + h * s, before:before + w * s]
        return y


def _c(cin, cout, k, stride=1, dilation=1, padding="same"):
    return TFConv2d(cin, cout, k, stride=stride, dilation=dilation, padding=padding)


def _t(cin, cout, k, stride=1, padding="same"):
    return TFConvTranspose2d(cin, cout, k, stride=stride, padding=padding)


class AttentionNet(nn.Module):
    """The Attention-Net: a U-Net of stride-2 convs and nearest up-sampling, 1-channel sigmoid output.

    Args:
        widths (tuple[int]): channels of the stride-2 encoder convs (their number L is the depth).

    Shapes: ``(B, 3, H, W)`` with H, W multiples of 2^L -> ``(B, 1, H, W)`` in (0, 1).
    """

    def __init__(self, widths):
        super().__init__()
        w = list(widths)
        depth = len(w)
        self.down = nn.ModuleList(_c(3 if i == 0 else w[i - 1], w[i], 3, stride=2) for i in range(depth))
        # Decoder conv k (1-based) up-samples, convolves to w[L-1-k], then concatenates the encoder
        # feature of that size (also w[L-1-k] channels).
        self.up = nn.ModuleList(_c(w[-1] if k == 1 else 2 * w[depth - k], w[depth - 1 - k], 3)
                                for k in range(1, depth))
        self.out = _c(2 * w[0] if depth > 1 else w[0], 1, 3)

    def keras_layers(self, prefix):
        return ([("conv2d", f"{prefix}.down.{i}", m) for i, m in enumerate(self.down)]
                + [("conv2d", f"{prefix}.up.{i}", m) for i, m in enumerate(self.up)]
                + [("conv2d", f"{prefix}.out", self.out)])

    def forward(self, x):
        skips = []
        for conv in self.down:
            x = F.relu(conv(x))
            skips.append(x)
        x = skips[-1]
        for k, conv in enumerate(self.up, start=1):
            x = F.relu(conv(F.interpolate(x, scale_factor=2, mode="nearest")))
            x = torch.cat([x, skips[-1 - k]], 1)
        return torch.sigmoid(self.out(F.interpolate(x, scale_factor=2, mode="nearest")))


class DilatedEM(nn.Module):
    """EM kind ``dilated`` (also the Reinforce-Net): 3x3 conv, 3x3 convs with dilations 2, 4, ...,
    3x3 conv (all ReLU), 1x1 conv to RGB (linear).

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, 3, H, W)``.
    """

    def __init__(self, in_channels, width, num_dilated):
        super().__init__()
        self.conv_in = _c(in_channels, width, 3)
        self.dilated = nn.ModuleList(_c(width, width, 3, dilation=2 ** (i + 1)) for i in range(num_dilated))
        self.conv_mid = _c(width, width, 3)
        self.conv_out = _c(width, 3, 1)

    def keras_layers(self, prefix):
        return ([("conv2d", f"{prefix}.conv_in", self.conv_in)]
                + [("conv2d", f"{prefix}.dilated.{i}", m) for i, m in enumerate(self.dilated)]
                + [("conv2d", f"{prefix}.conv_mid", self.conv_mid), ("conv2d", f"{prefix}.conv_out", self.conv_out)])

    def forward(self, x):
        x = F.relu(self.conv_in(x))
        for conv in self.dilated:
            x = F.relu(conv(x))
        return self.conv_out(F.relu(self.conv_mid(x)))


class UNetEM(nn.Module):
    """EM kind ``unet``: 3x3 conv (c), 5x5 conv dilated 2 (2c), stride-2 conv (4c), conv dilated 2,
    stride-2 conv, conv, transposed stride-2 conv + skip, transposed stride-2 conv (2c) + skip,
    3x3 conv to RGB; all ReLU.

    Shapes: ``(B, in_channels, H, W)`` (H, W multiples of 4) -> ``(B, 3, H, W)``.
    """

    def __init__(self, in_channels, c):
        super().__init__()
        self.conv_in = _c(in_channels, c, 3)
        self.conv_wide = _c(c, 2 * c, 5, dilation=2)
        self.down1 = _c(2 * c, 4 * c, 3, stride=2)
        self.mid1 = _c(4 * c, 4 * c, 3, dilation=2)
        self.down2 = _c(4 * c, 4 * c, 3, stride=2)
        self.mid2 = _c(4 * c, 4 * c, 3)
        self.up1 = _t(4 * c, 4 * c, 3, stride=2)
        self.up2 = _t(8 * c, 2 * c, 3, stride=2)
        self.conv_out = _c(4 * c, 3, 3)

    def keras_layers(self, prefix):
        convs = ("conv_in", "conv_wide", "down1", "mid1", "down2", "mid2")
        return ([("conv2d", f"{prefix}.{n}", getattr(self, n)) for n in convs]
                + [("conv2d_transpose", f"{prefix}.up1", self.up1), ("conv2d_transpose", f"{prefix}.up2", self.up2),
                   ("conv2d", f"{prefix}.conv_out", self.conv_out)])

    def forward(self, x):
        wide = F.relu(self.conv_wide(F.relu(self.conv_in(x))))
        m1 = F.relu(self.mid1(F.relu(self.down1(wide))))
        m2 = F.relu(self.mid2(F.relu(self.down2(m1))))
        u1 = torch.cat([F.relu(self.up1(m2)), m1], 1)
        u2 = torch.cat([F.relu(self.up2(u1)), wide], 1)
        return F.relu(self.conv_out(u2))


class EncDecEM(nn.Module):
    """EM kinds ``conv7`` and ``conv5``: 3x3 conv (c), three k x k 'valid' convs (c, 2c, 2c) and three
    k x k 'valid' transposed convs (2c, c, 3), all ReLU -- MBLLEN's EM; with ``skips`` the second and
    third transposed convs also see the encoder feature of their size (``conv5``).

    Shapes: ``(B, in_channels, H, W)`` (H, W >= 3 (k - 1) + 1) -> ``(B, 3, H, W)``.
    """

    def __init__(self, in_channels, c, kernel, skips):
        super().__init__()
        self.skips = skips
        self.conv_in = _c(in_channels, c, 3)
        self.enc = nn.ModuleList([_c(c, c, kernel, padding="valid"), _c(c, 2 * c, kernel, padding="valid"),
                                  _c(2 * c, 2 * c, kernel, padding="valid")])
        m = 2 if skips else 1
        self.dec = nn.ModuleList([_t(2 * c, 2 * c, kernel, padding="valid"), _t(m * 2 * c, c, kernel, padding="valid"),
                                  _t(m * c, 3, kernel, padding="valid")])

    def keras_layers(self, prefix):
        return ([("conv2d", f"{prefix}.conv_in", self.conv_in)]
                + [("conv2d", f"{prefix}.enc.{i}", m) for i, m in enumerate(self.enc)]
                + [("conv2d_transpose", f"{prefix}.dec.{i}", m) for i, m in enumerate(self.dec)])

    def forward(self, x):
        e1 = F.relu(self.enc[0](F.relu(self.conv_in(x))))
        e2 = F.relu(self.enc[1](e1))
        x = F.relu(self.dec[0](F.relu(self.enc[2](e2))))
        x = F.relu(self.dec[1](torch.cat([x, e2], 1) if self.skips else x))
        return F.relu(self.dec[2](torch.cat([x, e1], 1) if self.skips else x))


class ResBlock(nn.Module):
    """``relu(x + conv2(conv1(x)))`` with two linear 3x3 convs (as in the released model).

    Shapes: ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels):
        super().__init__()
        self.conv1 = _c(channels, channels, 3)
        self.conv2 = _c(channels, channels, 3)

    def forward(self, x):
        return F.relu(x + self.conv2(self.conv1(x)))


class ResidualEM(nn.Module):
    """EM kind ``residual``: 3x3 conv (c), stride-2 convs (2c, 4c), residual blocks, transposed stride-2
    convs (4c, 2c) and a 3x3 'same' transposed conv to RGB; all ReLU.

    Shapes: ``(B, in_channels, H, W)`` (H, W multiples of 4) -> ``(B, 3, H, W)``.
    """

    def __init__(self, in_channels, c, blocks):
        super().__init__()
        self.conv_in = _c(in_channels, c, 3)
        self.down1 = _c(c, 2 * c, 3, stride=2)
        self.down2 = _c(2 * c, 4 * c, 3, stride=2)
        self.res = nn.ModuleList(ResBlock(4 * c) for _ in range(blocks))
        self.up1 = _t(4 * c, 4 * c, 3, stride=2)
        self.up2 = _t(4 * c, 2 * c, 3, stride=2)
        self.conv_out = _t(2 * c, 3, 3)

    def keras_layers(self, prefix):
        layers = [("conv2d", f"{prefix}.{n}", getattr(self, n)) for n in ("conv_in", "down1", "down2")]
        for i, block in enumerate(self.res):
            layers += [("conv2d", f"{prefix}.res.{i}.conv1", block.conv1), ("conv2d", f"{prefix}.res.{i}.conv2", block.conv2)]
        return layers + [("conv2d_transpose", f"{prefix}.{n}", getattr(self, n)) for n in ("up1", "up2", "conv_out")]

    def forward(self, x):
        x = F.relu(self.down2(F.relu(self.down1(F.relu(self.conv_in(x))))))
        for block in self.res:
            x = block(x)
        return F.relu(self.conv_out(F.relu(self.up2(F.relu(self.up1(x))))))


def _check_widths(config):
    cfg = dict(RELEASED_CONFIG)
    unknown = sorted(set(config) - set(cfg))
    if unknown:
        raise ValueError(f"AGLLNet: unknown configuration key(s) {unknown}; expected {sorted(cfg)}")
    cfg.update(config)
    aw = tuple(cfg["att_widths"])
    if not aw or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in aw):
        raise ValueError(f"AGLLNet: att_widths must be a non-empty sequence of ints >= 1, got {cfg['att_widths']!r}")
    cfg["att_widths"] = aw
    for key, low in (("fem_width", 1), ("em_width", 1), ("dilated_width", 1), ("num_dilated", 0), ("res_blocks", 0)):
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"AGLLNet: {key} must be an int >= {low}, got {v!r}")
    return cfg


class AGLLNet(nn.Module):
    """The released AGLLNet (Attention-Net, Enhancement-Net, Reinforce-Net); see the module docstring.

    The defaults are the released ``AgLLNet.h5`` (:data:`RELEASED_CONFIG`); tests and the CPU
    training recipe use smaller widths.

    Args:
        att_widths (tuple[int]): Attention-Net encoder channels; its length L sets the input
            multiple 2^L (``multiple``).
        fem_width (int): feature-extraction-module channels (8).
        em_width (int): base channels c of the ``unet``/``conv7``/``conv5``/``residual`` EMs (8).
        dilated_width (int): channels of the ``dilated`` EMs and the Reinforce-Net (24).
        num_dilated (int): dilated convs per ``dilated`` module, dilations 2, 4, ..., 2^n (6).
        res_blocks (int): residual blocks of the ``residual`` EMs (4).

    Shapes: input ``(B, 3, H, W)`` RGB in [0, 1] with H, W multiples of ``multiple`` and >= 19;
    output ``(B, 10, H, W)``: fused (0:3), attention (3:4), reinforced = the enhanced image (4:7),
    attention-guided input (7:10). :func:`split_outputs` names them.
    """

    def __init__(self, **config):
        super().__init__()
        cfg = _check_widths(config)
        self.config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
        self.multiple = 2 ** len(cfg["att_widths"])
        self.min_size = max(self.multiple, 19)  # the conv7 EM's three valid 7x7 convs need 19 rows
        f, c, d = cfg["fem_width"], cfg["em_width"], cfg["dilated_width"]
        self.attention = AttentionNet(cfg["att_widths"])
        self.fem = nn.ModuleList(_c(3 if i == 0 else f, f, 3) for i in range(2 * len(EM_KINDS)))
        em = []
        for guided in (False, True):
            cin = f + 1 if guided else f
            em += [DilatedEM(cin, d, cfg["num_dilated"]), UNetEM(cin, c), EncDecEM(cin, c, 7, skips=False),
                   EncDecEM(cin, c, 5, skips=True), ResidualEM(cin, c, cfg["res_blocks"])]
        self.em = nn.ModuleList(em)
        self.fusion = _c(1 + 3 * len(em), 3, 1)
        self.reinforce = DilatedEM(3, d, cfg["num_dilated"])

    def keras_layers(self):
        """The weighted layers in the authors' creation order (the order of Keras' auto-names).

        Returns:
            list[tuple[str, str, nn.Module]]: (Keras class prefix ``"conv2d"`` or
            ``"conv2d_transpose"``, torch module name, module).
        """
        layers = self.attention.keras_layers("attention")
        for k, (conv, em) in enumerate(zip(self.fem, self.em)):
            layers += [("conv2d", f"fem.{k}", conv)] + em.keras_layers(f"em.{k}")
        return layers + [("conv2d", "fusion", self.fusion)] + self.reinforce.keras_layers("reinforce")

    def check_input(self, x):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"AGLLNet expects RGB images of shape (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple or min(h, w) < self.min_size:
            raise ValueError(f"AGLLNet: image size {h}x{w} must be a multiple of {self.multiple} (2^{len(self.attention.down)}, "
                             f"the Attention-Net's stride-2 levels) and >= {self.min_size}; resize or pad it first")

    def forward(self, x):
        """
        Args:
            x (Tensor): RGB images in [0, 1], ``(B, 3, H, W)``.

        Returns:
            Tensor: ``(B, 10, H, W)`` = [fused, attention, reinforced, x / (1.00001 - attention)].
        """
        self.check_input(x)
        att = self.attention(x)
        guided = x / (ATTENTION_EPS - att)
        feat = guided
        outs = []
        for k, (conv, em) in enumerate(zip(self.fem, self.em)):
            feat = F.relu(conv(feat))
            outs.append(em(torch.cat([att, feat], 1) if k >= len(EM_KINDS) else feat))
        fused = self.fusion(torch.cat([att] + outs, 1))
        return torch.cat([fused, att, self.reinforce(fused), guided], 1)


def split_outputs(out):
    """Name the 10 output channels of :class:`AGLLNet`.

    Args:
        out (Tensor): ``(B, 10, H, W)``.

    Returns:
        dict[str, Tensor]: ``fused`` (B, 3, H, W), ``attention`` (B, 1, H, W), ``enhanced`` (the
        Reinforce-Net output the authors keep, (B, 3, H, W)), ``guided`` (B, 3, H, W).
    """
    return {"fused": out[:, 0:3], "attention": out[:, 3:4], "enhanced": out[:, 4:7], "guided": out[:, 7:10]}


def keras_layer_map(model):
    """Keras auto-name -> torch module name for ``model`` (``conv2d_1`` -> ``attention.down.0`` ...).

    The names a fresh Keras 2 session gives when the authors' code builds the model; the files
    may carry any offset (the loader sorts the numbers), so this is the documented order.
    """
    counts = {"conv2d": 0, "conv2d_transpose": 0}
    out = {}
    for kind, name, _ in model.keras_layers():
        counts[kind] += 1
        out[f"{kind}_{counts[kind]}"] = name
    return out


# ---------------------------------------------------------------- reading the weights

def _decode(s):
    return s.decode("utf8") if isinstance(s, (bytes, np.bytes_)) else str(s)


def read_keras_h5(path):
    """Read the weights of a Keras 2 HDF5 file (``model.save`` or ``model.save_weights`` layout).

    Args:
        path (str): the .h5 file.

    Returns:
        tuple[dict, dict or None]: layer name -> {"kernel"/"bias"/...: np.ndarray}, and the
        configuration stored under :data:`CONFIG_ATTRIBUTE` (None in the authors' file).

    Raises:
        AGLLNetWeightsError: h5py is missing, or the file is not a readable Keras HDF5 weights file.
    """
    try:
        import h5py
    except ImportError as e:
        raise AGLLNetWeightsError(f"reading the Keras weights {path!r} needs the h5py package "
                                  "(pip install h5py, or the 'agllnet' extra)") from e
    try:
        with h5py.File(path, "r") as f:
            # model.save puts the layer groups under "model_weights"; model.save_weights at the root.
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise AGLLNetWeightsError(f"AGLLNet weights {path!r}: an HDF5 file without Keras' 'layer_names' "
                                          f"attribute; {_EXPECTED}")
            weights = {}
            for lname in root.attrs["layer_names"]:
                group = root[_decode(lname)]
                for wname in group.attrs.get("weight_names", []):
                    wname = _decode(wname)
                    parts = wname.split("/")
                    if len(parts) < 2:
                        raise AGLLNetWeightsError(f"AGLLNet weights {path!r}: weight name {wname!r} is not "
                                                  f"'<layer>/<weight>:0'; {_EXPECTED}")
                    # "conv2d_5/kernel:0" (nested models too: the variable's own layer scope).
                    weights.setdefault(parts[-2], {})[parts[-1].split(":")[0]] = np.asarray(group[wname])
            raw = f.attrs.get(CONFIG_ATTRIBUTE)
            config = json.loads(_decode(raw)) if raw is not None else None
    except AGLLNetWeightsError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise AGLLNetWeightsError(f"Cannot read AGLLNet weights {path!r}: {one_line(e)}; {_EXPECTED}") from e
    return weights, config


_KERAS_NAME = re.compile(r"^(conv2d_transpose|conv2d)(?:_(\d+))?$")


def keras_to_state_dict(weights, model, path="<weights>"):
    """Map Keras layer weights onto ``model`` by creation order; returns a torch state dict.

    Args:
        weights (dict): from :func:`read_keras_h5`.
        model (AGLLNet): gives the layer order (:meth:`AGLLNet.keras_layers`) and shapes.
        path (str): named in errors.

    Returns:
        dict[str, Tensor]: float32 tensors with ``model``'s keys.

    Raises:
        AGLLNetWeightsError: other layers, another number of layers, or a shape that does not fit.
    """
    by_kind = {"conv2d": [], "conv2d_transpose": []}
    other = []
    for name in weights:
        m = _KERAS_NAME.match(name)
        if m:
            by_kind[m.group(1)].append((int(m.group(2) or 0), name))
        else:
            other.append(name)
    if other:
        raise AGLLNetWeightsError(f"AGLLNet weights {path!r}: unexpected Keras layers {sorted(other)[:6]} "
                                  f"(AGLLNet has only Conv2D and Conv2DTranspose layers); {_EXPECTED}")
    expected = {"conv2d": [], "conv2d_transpose": []}
    for kind, name, module in model.keras_layers():
        expected[kind].append((name, module))
    counts = {k: (len(by_kind[k]), len(expected[k])) for k in expected}
    if any(a != b for a, b in counts.values()):
        raise AGLLNetWeightsError(
            f"AGLLNet weights {path!r}: the file has {counts['conv2d'][0]} Conv2D and {counts['conv2d_transpose'][0]} "
            f"Conv2DTranspose layers, AGLLNet{_config_text(model)} has {counts['conv2d'][1]} and "
            f"{counts['conv2d_transpose'][1]}; {_EXPECTED}")
    state = {}
    for kind in ("conv2d", "conv2d_transpose"):
        for (_, kname), (tname, module) in zip(sorted(by_kind[kind]), expected[kind]):
            w = weights[kname]
            if sorted(w) != ["bias", "kernel"]:
                raise AGLLNetWeightsError(f"AGLLNet weights {path!r}: layer {kname} has weights {sorted(w)}, "
                                          f"expected kernel and bias; {_EXPECTED}")
            # Keras Conv2D (kh, kw, in, out) and Conv2DTranspose (kh, kw, out, in) both become torch's
            # layout with the same permutation: Conv2d (out, in, kh, kw), ConvTranspose2d (in, out, kh, kw).
            want = tuple(module.weight.shape[i] for i in (2, 3, 1, 0))
            if w["kernel"].shape != want or w["bias"].shape != tuple(module.bias.shape):
                raise AGLLNetWeightsError(
                    f"AGLLNet weights {path!r}: layer {kname} (-> {tname}) has kernel {w['kernel'].shape} and bias "
                    f"{w['bias'].shape}, AGLLNet{_config_text(model)} expects {want} and {tuple(module.bias.shape)}; "
                    f"{_EXPECTED}")
            state[f"{tname}.weight"] = torch.from_numpy(np.ascontiguousarray(w["kernel"].transpose(3, 2, 0, 1),
                                                                             dtype=np.float32))
            state[f"{tname}.bias"] = torch.from_numpy(np.ascontiguousarray(w["bias"], dtype=np.float32))
    return state


def _config_text(model):
    released = {k: (list(v) if isinstance(v, tuple) else v) for k, v in RELEASED_CONFIG.items()}
    return "" if model.config == released else f" ({json.dumps(model.config)})"


def agllnet_config_from_state_dict(state):
    """The configuration of the :class:`AGLLNet` that a state dict belongs to (its keys and shapes).

    Dilations are 2, 4, ..., 2^n as in the released model (n from the number of dilated convs).

    Raises:
        KeyError: a key the inference needs is absent (the state dict is not AGLLNet's).
    """
    def count(fmt):
        n = 0
        while fmt.format(n) in state:
            n += 1
        return n

    depth = count("attention.down.{}.weight")
    if depth == 0:
        raise KeyError("attention.down.0.weight")
    return {"att_widths": tuple(int(state[f"attention.down.{i}.weight"].shape[0]) for i in range(depth)),
            "fem_width": int(state["fem.0.weight"].shape[0]), "em_width": int(state["em.1.conv_in.weight"].shape[0]),
            "dilated_width": int(state["em.0.conv_in.weight"].shape[0]),
            "num_dilated": count("em.0.dilated.{}.weight"), "res_blocks": count("em.4.res.{}.conv1.weight")}


def _is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


_MISSING_HINT = (f"{_EXPECTED}; the authors' file is model/AgLLNet.h5 of github.com/yu-li/AGLLNet, or train one "
                 "with tools/train_agllnet.py")


def _read_weights(path):
    """('h5', (weights, config)) or ('pth', state); raises AGLLNetWeightsError naming ``path``."""
    path = os.fspath(path)
    check_weights_file(path, "AGLLNet", AGLLNetWeightsError, _MISSING_HINT)
    if _is_hdf5(path):
        return "h5", read_keras_h5(path)
    # A torch state dict (convert_agllnet_h5's), bare or in a {"model"/"state_dict": ...} wrapper.
    obj = read_torch_file(path, "AGLLNet", AGLLNetWeightsError, _MISSING_HINT, _EXPECTED)
    return "pth", state_dict_of_tensors(obj, path, "AGLLNet", AGLLNetWeightsError, _EXPECTED)


def _load_state(model, state, path):
    missing, unexpected, wrong = state_dict_differences(model.state_dict(), state)
    if missing or unexpected or wrong:
        raise AGLLNetWeightsError(
            f"AGLLNet weights {path!r} do not fit AGLLNet{_config_text(model)}: missing {listed(missing, 4)}, "
            f"unexpected {listed(unexpected, 4)}, wrong shapes {wrong[:3]}; {_EXPECTED}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model


def load_agllnet_weights(model, path):
    """Load the authors' Keras ``AgLLNet.h5`` (either Keras layout) or a converted state dict into ``model``.

    Args:
        model (AGLLNet): modified in place; its configuration must be the file's.
        path (str): an .h5 (recognised by the HDF5 signature) or a torch ``.pth``.

    Returns:
        AGLLNet: ``model``.

    Raises:
        AGLLNetWeightsError: the file is missing, unreadable, or not AGLLNet's layers (one line
            naming the file and the expected format).
    """
    kind, data = _read_weights(path)
    state = keras_to_state_dict(data[0], model, path) if kind == "h5" else data
    _load_state(model, state, path)
    logger.info(f"Loaded AGLLNet weights from {path} ({len(state)} tensors)")
    return model


def build_agllnet_from_weights(path, config=None):
    """Build the :class:`AGLLNet` a weights file describes and load it.

    The configuration is ``config`` when given; otherwise it comes from the .h5's
    :data:`CONFIG_ATTRIBUTE` (files written by
    :func:`~wnlb_d2.enhance.agllnet_train.save_agllnet_weights`), is the released one for the
    authors' .h5 (which has none), and is read off the keys and shapes of a ``.pth``.

    Raises:
        AGLLNetWeightsError: as :func:`load_agllnet_weights`.
    """
    kind, data = _read_weights(path)
    if kind == "h5":
        weights, stored = data
        config = stored if config is None else config
        try:
            model = AGLLNet(**(config or {}))
        except (TypeError, ValueError) as e:
            raise AGLLNetWeightsError(f"AGLLNet weights {path!r}: bad {CONFIG_ATTRIBUTE} attribute: {one_line(e)}; "
                                      f"{_EXPECTED}") from e
        state = keras_to_state_dict(weights, model, path)
    else:
        state = data
        try:
            model = AGLLNet(**(agllnet_config_from_state_dict(state) if config is None else config))
        except (KeyError, ValueError):
            model = AGLLNet()  # not AGLLNet's keys: the strict check below names the differences
    _load_state(model, state, path)
    logger.info(f"Loaded AGLLNet weights from {path} ({len(state)} tensors, config {model.config})")
    return model


def convert_agllnet_h5(h5_path, pth_path, config=None):
    """Convert the authors' Keras ``AgLLNet.h5`` (or one written here) to a torch state dict file.

    The .pth is written atomically and loads with :func:`load_agllnet_weights` /
    :func:`build_agllnet_from_weights` (and ``AGLLNetEnhancer(weights=pth_path)``) without h5py.
    ``config`` is the architecture of an .h5 that neither is the released one nor carries
    :data:`CONFIG_ATTRIBUTE` (see :func:`build_agllnet_from_weights`).

    Returns:
        str: ``pth_path``.

    Raises:
        AGLLNetWeightsError: ``h5_path`` is not an AGLLNet Keras weights file.
    """
    if not os.path.isfile(h5_path) or not _is_hdf5(h5_path):
        raise AGLLNetWeightsError(f"convert_agllnet_h5: {h5_path!r} is not an HDF5 file; {_EXPECTED}")
    model = build_agllnet_from_weights(h5_path, config)
    save_torch_file(model.state_dict(), pth_path)
    logger.info(f"Converted {h5_path} to {pth_path}")
    return pth_path


# ---------------------------------------------------------------- the enhancer

class AGLLNetEnhancer(Enhancer):
    """AGLLNet as an image enhancer (CPU, no gradients), run as the authors' ``run_agllnet.py`` does.

    The RGB image in [0, 1] is resized (Lanczos-4, float64) to the next multiples of 2^L (128 for
    the released model), the network's channels 4:7 are resized back (Lanczos-4), clipped to
    [0, 1] and scaled to uint8 by truncation, as ``(x * 255.).astype(np.uint8)`` there.

    Args:
        weights (str): the authors' ``AgLLNet.h5``, an .h5 written by ``tools/train_agllnet.py``,
            or a ``.pth`` from :func:`convert_agllnet_h5` (required). The architecture comes from
            the file.
    """

    name = "agllnet"

    def __init__(self, weights=""):
        if not weights:
            raise ParameterError("weights", "no AGLLNet weights given: the authors' model/AgLLNet.h5 "
                                            "(github.com/yu-li/AGLLNet) or train one with tools/train_agllnet.py")
        self.weights = str(weights)
        self.net = frozen_network(lambda: build_agllnet_from_weights(self.weights), AGLLNetWeightsError)

    def _enhance(self, bgr):
        # Not base.run_rgb_network: the authors resize in float64 NumPy (cv2) before and after the
        # network, and their uint8 conversion truncates.
        h, w = bgr.shape[:2]
        side_h, side_w = self._network_size(h), self._network_size(w)
        rgb = bgr[:, :, ::-1] / 255.0
        img = cv2.resize(rgb, (side_w, side_h), interpolation=cv2.INTER_LANCZOS4)
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            out = self.net(x)[0, 4:7].permute(1, 2, 0).numpy()
        out = np.clip(cv2.resize(out, (w, h), interpolation=cv2.INTER_LANCZOS4), 0.0, 1.0)
        return np.ascontiguousarray((out * 255.0).astype(np.uint8)[:, :, ::-1])

    def _network_size(self, n):
        # The authors' script: the next multiple of 2^7 (here 2^L); at least the network's minimum.
        m = self.net.multiple
        return max(math.ceil(n / m), math.ceil(self.net.min_size / m)) * m

    def _params(self):
        return {"weights": self.weights}
