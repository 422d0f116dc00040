"""Retinexformer, a one-stage Retinex-based transformer for low-light enhancement (supervised).

Cai, Bian, Lin, Wang, Timofte, Zhang, "Retinexformer: One-stage Retinex-based Transformer for
Low-light Image Enhancement", ICCV 2023, https://arxiv.org/abs/2303.06705. Authors' code:
https://github.com/caiyuanhao1998/Retinexformer (``basicsr/models/archs/RetinexFormer_arch.py``),
MIT License, Copyright (c) 2023 Yuanhao Cai. This module follows that code closely (the network,
its parameter names, and the padding of ``Enhancement/test_from_dataset.py``), so the MIT
licence's terms apply to it: the copyright notice above and the permission notice below must
be kept with it.

    Permission is hereby granted, free of charge, to any person obtaining a copy of this
    software and associated documentation files (the "Software"), to deal in the Software
    without restriction, including without limitation the rights to use, copy, modify, merge,
    publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
    to whom the Software is furnished to do so, subject to the following conditions: The above
    copyright notice and this permission notice shall be included in all copies or substantial
    portions of the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND,
    EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS
    FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
    HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
    CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
    USE OR OTHER DEALINGS IN THE SOFTWARE.

The model (one stage in the released configurations): an illumination estimator predicts, from
the image and its channel mean, a light-up map ``L`` and illumination features ``F``; the
lit-up image ``I * L + I`` goes through a 2-level U-shaped denoiser of illumination-guided
attention blocks (IGAB), whose self-attention runs across channels (so any image size works)
with the values modulated by ``F``; the output is the denoiser's residual plus its input.

Defaults are the authors' LOL-v1 configuration (``Options/RetinexFormer_LOL_v1.yml``: n_feat 40,
stage 1, num_blocks [1, 2, 2]); every RetinexFormer yml of theirs (LOL-v2 real/synthetic, SID,
SMID, SDSD indoor/outdoor, FiveK, NTIRE) has the same network, so all their released weights
load with the defaults. Their files are BasicSR checkpoints ``{"params": state_dict}``
(``base_model.save_network``); :func:`load_retinexformer_weights` reads them, and
``tools/train_retinexformer.py`` writes the same format.

Differences from the authors' code (none changes a result): the LeakyReLU the authors construct
in ``Denoiser`` but never call is left out (it has no parameters); the test script's split of
images of 3000 px or more into two column halves (a GPU memory saving) is left out; images
smaller than the padding (under 4 px a side) are padded by replication, where the authors'
reflection padding would fail.
"""

import logging
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.params import ParameterError
from .base import Enhancer, frozen_network, run_rgb_network
from .classical import check_int
from .weights_io import listed, read_torch_file, state_dict_differences

__all__ = ["RetinexFormer", "RetinexFormerStage", "IlluminationEstimator", "Denoiser", "IGAB", "IGMSA",
           "FeedForward", "PreNorm", "RetinexFormerEnhancer", "RetinexFormerWeightsError",
           "load_retinexformer_weights", "retinexformer_state_dict", "checkpoint_configuration",
           "pad_to_multiple", "PAD_FACTOR"]

logger = logging.getLogger(__name__)

#: The authors' test script pads images to a multiple of 4 (``factor = 4``): the denoiser halves
#: the resolution twice and its skip connections need the sizes to come back exactly.
PAD_FACTOR = 4


class RetinexFormerWeightsError(ValueError):
    """A weights file that is missing or is not a RetinexFormer BasicSR checkpoint; names the file."""


class PreNorm(nn.Module):
    """LayerNorm over the last (channel) axis, then ``fn`` (the authors' ``PreNorm``; keys ``norm``, ``fn``).

    Shapes: ``(B, H, W, C)`` -> ``fn``'s output.
    """

    def __init__(self, dim, fn):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.fn(self.norm(x))


class IlluminationEstimator(nn.Module):
    """The illumination estimator (the authors' ``Illumination_Estimator``, same keys).

    1x1 conv of the image and its channel mean (4 channels) to ``n_fea_middle``, a 5x5 conv in
    4 groups (``groups=n_fea_in`` as the authors, so ``n_fea_middle`` must be a multiple of 4),
    then a 1x1 conv to the 3-channel light-up map.

    Args:
        n_fea_middle (int): feature channels (= n_feat of the model).
        n_fea_in (int): image channels + 1 (the mean).
        n_fea_out (int): channels of the light-up map.

    Shapes: ``(B, 3, H, W)`` -> features ``(B, n_fea_middle, H, W)`` and map ``(B, 3, H, W)``.
    """

    def __init__(self, n_fea_middle, n_fea_in=4, n_fea_out=3):
        super().__init__()
        self.conv1 = nn.Conv2d(n_fea_in, n_fea_middle, kernel_size=1, bias=True)
        self.depth_conv = nn.Conv2d(n_fea_middle, n_fea_middle, kernel_size=5, padding=2, bias=True,
                                    groups=n_fea_in)
        self.conv2 = nn.Conv2d(n_fea_middle, n_fea_out, kernel_size=1, bias=True)

    def forward(self, img):
        """
        Args:
            img (Tensor): ``(B, 3, H, W)``.

        Returns:
            tuple[Tensor, Tensor]: ``illu_fea`` ``(B, n_fea_middle, H, W)`` and ``illu_map``
            ``(B, 3, H, W)``.
        """
        mean_c = img.mean(dim=1, keepdim=True)
        illu_fea = self.depth_conv(self.conv1(torch.cat([img, mean_c], dim=1)))
        return illu_fea, self.conv2(illu_fea)


class IGMSA(nn.Module):
    """Illumination-guided multi-head self-attention (the authors' ``IG_MSA``, same keys).

    Attention is across channels: per head a ``dim_head x dim_head`` matrix from the
    L2-normalised keys and queries over all pixels, scaled by a learnt ``rescale``; the values
    are multiplied by the illumination features first. A depthwise-conv positional branch of
    the values is added.

    Args:
        dim (int): channels in and out; must equal ``dim_head * heads``.
        dim_head (int): channels per head.
        heads (int): number of heads.

    Shapes: ``x_in`` and ``illu_fea_trans`` ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.
    """

    def __init__(self, dim, dim_head=64, heads=8):
        super().__init__()
        self.num_heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_k = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_v = nn.Linear(dim, dim_head * heads, bias=False)
        self.rescale = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj = nn.Linear(dim_head * heads, dim, bias=True)
        # nn.GELU() is F.gelu (exact erf form), the authors' GELU module; no parameters.
        self.pos_emb = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False, groups=dim),
        )
        self.dim = dim

    def _heads(self, t):
        # (B, N, heads * d) -> (B, heads, N, d), the authors' rearrange 'b n (h d) -> b h n d'.
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, self.dim_head).permute(0, 2, 1, 3)

    def forward(self, x_in, illu_fea_trans):
        b, h, w, c = x_in.shape
        x = x_in.reshape(b, h * w, c)
        v_inp = self.to_v(x)
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(x)), self._heads(v_inp)
        v = v * self._heads(illu_fea_trans.flatten(1, 2))
        # (B, heads, d, N): attention between the d channels of a head, over all N pixels.
        q = F.normalize(q.transpose(-2, -1), dim=-1, p=2)
        k = F.normalize(k.transpose(-2, -1), dim=-1, p=2)
        v = v.transpose(-2, -1)
        attn = ((k @ q.transpose(-2, -1)) * self.rescale).softmax(dim=-1)   # A = K^T Q, (B, heads, d, d)
        x = (attn @ v).permute(0, 3, 1, 2).reshape(b, h * w, self.num_heads * self.dim_head)
        out_c = self.proj(x).view(b, h, w, c)
        out_p = self.pos_emb(v_inp.reshape(b, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return out_c + out_p


class FeedForward(nn.Module):
    """1x1 conv up by ``mult``, GELU, 3x3 depthwise conv, GELU, 1x1 conv down (the authors', keys ``net.*``).

    Shapes: ``(B, H, W, dim)`` -> ``(B, H, W, dim)``.
    """

    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(dim, dim * mult, 1, 1, bias=False),
            nn.GELU(),
            nn.Conv2d(dim * mult, dim * mult, 3, 1, 1, bias=False, groups=dim * mult),
            nn.GELU(),
            nn.Conv2d(dim * mult, dim, 1, 1, bias=False),
        )

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)


class IGAB(nn.Module):
    """Illumination-guided attention block: ``num_blocks`` x (IG-MSA + residual, PreNorm FFN + residual).

    Keys ``blocks.<i>.0`` (IG-MSA) and ``blocks.<i>.1`` (PreNorm FeedForward), as the authors'.

    Shapes: ``x`` and ``illu_fea`` ``(B, dim, H, W)`` -> ``(B, dim, H, W)``.
    """

    def __init__(self, dim, dim_head=64, heads=8, num_blocks=2):
        super().__init__()
        self.blocks = nn.ModuleList([
            nn.ModuleList([IGMSA(dim=dim, dim_head=dim_head, heads=heads), PreNorm(dim, FeedForward(dim=dim))])
            for _ in range(num_blocks)])

    def forward(self, x, illu_fea):
        x = x.permute(0, 2, 3, 1)
        illu = illu_fea.permute(0, 2, 3, 1)
        for attn, ff in self.blocks:
            x = attn(x, illu_fea_trans=illu) + x
            x = ff(x) + x
        return x.permute(0, 3, 1, 2)


class Denoiser(nn.Module):
    """The illumination-guided transformer: a U-Net of IGABs with ``level`` down/up-samplings.

    Level ``i`` has ``dim * 2**i`` channels in ``2**i`` heads of ``dim`` channels. Downsampling
    is a 4x4 stride-2 conv, of the features and (separately) of the illumination features;
    upsampling a 2x2 stride-2 transposed conv, then a 1x1 fusion conv of it and the skip.

    Args:
        in_dim, out_dim (int): image channels (3).
        dim (int): channels at full resolution (n_feat).
        level (int): number of down-samplings (2 in every released model).
        num_blocks (sequence[int]): IG-MSA/FFN pairs per level, the last for the bottleneck.

    Shapes: ``x`` ``(B, in_dim, H, W)`` and ``illu_fea`` ``(B, dim, H, W)`` with H, W multiples
    of ``2**level`` -> ``(B, out_dim, H, W)`` (a residual added to ``x``).
    """

    def __init__(self, in_dim=3, out_dim=3, dim=31, level=2, num_blocks=(2, 4, 4)):
        super().__init__()
        self.dim = dim
        self.level = level
        self.embedding = nn.Conv2d(in_dim, self.dim, 3, 1, 1, bias=False)
        self.encoder_layers = nn.ModuleList([])
        dim_level = dim
        for i in range(level):
            self.encoder_layers.append(nn.ModuleList([
                IGAB(dim=dim_level, num_blocks=num_blocks[i], dim_head=dim, heads=dim_level // dim),
                nn.Conv2d(dim_level, dim_level * 2, 4, 2, 1, bias=False),   # features
                nn.Conv2d(dim_level, dim_level * 2, 4, 2, 1, bias=False),   # illumination features
            ]))
            dim_level *= 2
        self.bottleneck = IGAB(dim=dim_level, dim_head=dim, heads=dim_level // dim, num_blocks=num_blocks[-1])
        self.decoder_layers = nn.ModuleList([])
        for i in range(level):
            self.decoder_layers.append(nn.ModuleList([
                nn.ConvTranspose2d(dim_level, dim_level // 2, stride=2, kernel_size=2, padding=0, output_padding=0),
                nn.Conv2d(dim_level, dim_level // 2, 1, 1, bias=False),
                IGAB(dim=dim_level // 2, num_blocks=num_blocks[level - 1 - i], dim_head=dim,
                     heads=(dim_level // 2) // dim),
            ]))
            dim_level //= 2
        self.mapping = nn.Conv2d(self.dim, out_dim, 3, 1, 1, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        # The authors' initialisation (matters for training only): truncated normal (std 0.02,
        # cut at +-2 absolute, as their trunc_normal_) for Linear weights, LayerNorm at identity.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward(self, x, illu_fea):
        fea = self.embedding(x)
        fea_encoder, illu_fea_list = [], []
        for igab, fea_down, illu_down in self.encoder_layers:
            fea = igab(fea, illu_fea)
            illu_fea_list.append(illu_fea)
            fea_encoder.append(fea)
            fea = fea_down(fea)
            illu_fea = illu_down(illu_fea)
        fea = self.bottleneck(fea, illu_fea)
        for i, (up, fusion, igab) in enumerate(self.decoder_layers):
            fea = fusion(torch.cat([up(fea), fea_encoder[self.level - 1 - i]], dim=1))
            fea = igab(fea, illu_fea_list[self.level - 1 - i])
        return self.mapping(fea) + x


class RetinexFormerStage(nn.Module):
    """One stage (the authors' ``RetinexFormer_Single_Stage``; keys ``estimator``, ``denoiser``).

    Shapes: ``(B, 3, H, W)`` -> ``(B, 3, H, W)``, H and W multiples of 4.
    """

    def __init__(self, in_channels=3, out_channels=3, n_feat=31, level=2, num_blocks=(1, 1, 1)):
        super().__init__()
        self.estimator = IlluminationEstimator(n_feat)
        self.denoiser = Denoiser(in_dim=in_channels, out_dim=out_channels, dim=n_feat, level=level,
                                 num_blocks=num_blocks)

    def forward(self, img):
        illu_fea, illu_map = self.estimator(img)
        return self.denoiser(img * illu_map + img, illu_fea)


class RetinexFormer(nn.Module):
    """The Retinexformer network: ``stage`` stages in sequence (keys ``body.<i>.*``, as the authors').

    Args:
        in_channels, out_channels (int): 3 (the illumination estimator is wired for RGB plus its
            mean, and the light-up map multiplies the 3 input channels).
        n_feat (int): feature channels at full resolution (40 released); a multiple of 4
            (the estimator's grouped conv).
        stage (int): stages (1 released).
        num_blocks (sequence[int]): 3 ints, IG-MSA/FFN pairs of level 0, level 1 and the
            bottleneck ([1, 2, 2] released).

    Shapes: input ``(B, 3, H, W)`` RGB in [0, 1], H and W multiples of 4 (see
    :func:`pad_to_multiple`); output ``(B, 3, H, W)``, not clamped.
    """

    def __init__(self, in_channels=3, out_channels=3, n_feat=40, stage=1, num_blocks=(1, 2, 2)):
        super().__init__()
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if check_int(key, value, 1) != 3:
                raise ParameterError(key, f"RetinexFormer works on 3-channel images, got {value}")
        self.n_feat = check_int("n_feat", n_feat, 4)
        if self.n_feat % 4:
            raise ParameterError("n_feat", f"expected a multiple of 4 (the illumination estimator's conv has "
                                           f"4 groups), got {n_feat}")
        self.stage = check_int("stage", stage, 1)
        if isinstance(num_blocks, (str, bytes)) or not hasattr(num_blocks, "__len__") or len(num_blocks) != 3:
            raise ParameterError("num_blocks", f"expected 3 ints (level 0, level 1, bottleneck), got {num_blocks!r}")
        self.num_blocks = tuple(check_int(f"num_blocks[{i}]", n, 1) for i, n in enumerate(num_blocks))
        self.body = nn.Sequential(*[
            RetinexFormerStage(in_channels=3, out_channels=3, n_feat=self.n_feat, level=2, num_blocks=self.num_blocks)
            for _ in range(self.stage)])

    def forward(self, x):
        """
        Args:
            x (Tensor): RGB images in [0, 1], ``(B, 3, H, W)``, H and W multiples of 4.

        Returns:
            Tensor: enhanced RGB images, ``(B, 3, H, W)`` (clamp to [0, 1] for display).
        """
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % PAD_FACTOR or x.shape[-1] % PAD_FACTOR:
            raise ValueError(f"RetinexFormer expects RGB images of shape (B, 3, H, W) with H and W multiples of "
                             f"{PAD_FACTOR}, got {tuple(x.shape)}; pad them with pad_to_multiple")
        return self.body(x)


def pad_to_multiple(x, factor=PAD_FACTOR):
    """Reflect-pad bottom and right to a multiple of ``factor`` (the authors' test script).

    Args:
        x (Tensor): ``(B, C, H, W)``.
        factor (int): the multiple.

    Returns:
        Tensor: ``(B, C, H', W')``; crop the output back with ``[..., :H, :W]``. Sides under
        ``factor`` that reflection cannot pad (pad >= side) are padded by replication.
    """
    h, w = x.shape[-2:]
    padh, padw = (-h) % factor, (-w) % factor
    if not padh and not padw:
        return x
    mode = "reflect" if padh < h and padw < w else "replicate"
    return F.pad(x, (0, padw, 0, padh), mode)


def retinexformer_state_dict(obj, path):
    """The state dict inside a loaded BasicSR checkpoint, or a one-line :class:`RetinexFormerWeightsError`.

    The authors' files are ``{"params": state_dict}`` (BasicSR's ``save_network``); BasicSR
    writes ``"params_ema"`` beside or instead of it when trained with an EMA, and "module."
    prefixes (DataParallel) are dropped, as their test script and BasicSR's loader accept both.
    """
    expected = "a BasicSR checkpoint {'params': RetinexFormer state dict} (the authors' released .pth)"
    if not isinstance(obj, dict):
        raise RetinexFormerWeightsError(f"RetinexFormer weights {path!r}: expected {expected}, got "
                                        f"{type(obj).__name__}")
    key = "params" if "params" in obj else "params_ema" if "params_ema" in obj else None
    if key is None:
        keys = sorted(map(str, obj))
        raise RetinexFormerWeightsError(
            f"RetinexFormer weights {path!r}: expected {expected}, got a dict with keys "
            f"{keys[:5]}{' ...' if len(keys) > 5 else ''}")
    state = obj[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RetinexFormerWeightsError(f"RetinexFormer weights {path!r}: {key!r} is not a state dict of tensors "
                                        f"(expected {expected})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def checkpoint_configuration(state):
    """The (n_feat, stage, num_blocks) a RetinexFormer state dict was made with, or None if it is not one."""
    try:
        n_feat = int(state["body.0.estimator.conv1.weight"].shape[0])
    except (KeyError, AttributeError, IndexError):
        return None
    stage = 1 + max(int(m.group(1)) for m in map(re.compile(r"body\.(\d+)\.").match, state) if m)
    blocks = []
    for part in ("encoder_layers.0.0", "encoder_layers.1.0", "bottleneck"):
        prefix = re.compile(rf"body\.0\.denoiser\.{re.escape(part)}\.blocks\.(\d+)\.")
        blocks.append(len({m.group(1) for m in map(prefix.match, state) if m}))
    return n_feat, stage, blocks


def load_retinexformer_weights(model, path):
    """Load the authors' released weights (e.g. ``LOL_v1.pth``) or ours into ``model``.

    Args:
        model (RetinexFormer): the network, of the file's configuration; modified in place.
        path (str): a BasicSR ``.pth`` checkpoint ``{"params": state_dict}``.

    Returns:
        RetinexFormer: ``model``.

    Raises:
        RetinexFormerWeightsError: the file is missing, unreadable, not a BasicSR checkpoint, or
            its keys or shapes do not fit ``model`` (the one-line message names the file and
            lists the differences).
    """
    obj = read_torch_file(path, "RetinexFormer", RetinexFormerWeightsError,
                          "train one with tools/train_retinexformer.py, or give the authors' e.g. LOL_v1.pth",
                          "expected a BasicSR .pth checkpoint")
    state = retinexformer_state_dict(obj, path)
    missing, unexpected, wrong = state_dict_differences(model.state_dict(), state)
    if missing or unexpected or wrong:
        found = checkpoint_configuration(state)
        hint = f" (the file is n_feat={found[0]}, stage={found[1]}, num_blocks={found[2]})" if found else ""
        raise RetinexFormerWeightsError(
            f"RetinexFormer weights {path!r} do not fit RetinexFormer(n_feat={model.n_feat}, stage={model.stage}, "
            f"num_blocks={list(model.num_blocks)}){hint}: missing {listed(missing, 4)}, "
            f"unexpected {listed(unexpected, 4)}, wrong shapes {listed(wrong, 3)}")
    model.load_state_dict(state)
    logger.info(f"Loaded RetinexFormer weights from {path} ({len(state)} tensors)")
    return model


class RetinexFormerEnhancer(Enhancer):
    """Retinexformer as an image enhancer (CPU, no gradients).

    As the authors' test script: RGB in [0, 1], reflect-padded bottom/right to a multiple of 4,
    the network, cropped back, clamped to [0, 1]; then rounded to uint8. It runs on the CPU
    because enhancers run inside data-loader workers (forked processes without CUDA).

    Args:
        weights (str): a RetinexFormer BasicSR ``.pth`` (required): the authors' (e.g.
            ``LOL_v1.pth``) or one from ``tools/train_retinexformer.py``.
        n_feat, stage, num_blocks: the file's configuration (the LOL-v1 one by default; see
            :class:`RetinexFormer`).
    """

    name = "retinexformer"

    def __init__(self, weights="", n_feat=40, stage=1, num_blocks=(1, 2, 2)):
        if not weights:
            raise ParameterError("weights", "no RetinexFormer weights given: train them on (dark, clean) pairs "
                                            "with tools/train_retinexformer.py, or give the authors' LOL_v1.pth")
        self.weights = str(weights)
        self.net = frozen_network(lambda: load_retinexformer_weights(
            RetinexFormer(n_feat=n_feat, stage=stage, num_blocks=num_blocks), self.weights), RetinexFormerWeightsError)

    def _enhance(self, bgr):
        h, w = bgr.shape[:2]
        # Padded to a multiple of 4 for the network, cropped back; clipped and rounded to uint8.
        return run_rgb_network(bgr, lambda rgb: self.net(pad_to_multiple(rgb))[:, :, :h, :w])

    def _params(self):
        return {"weights": self.weights, "n_feat": self.net.n_feat, "stage": self.net.stage,
                "num_blocks": list(self.net.num_blocks)}
