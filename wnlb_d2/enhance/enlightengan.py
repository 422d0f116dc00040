"""EnlightenGAN (Jiang et al., "EnlightenGAN: Deep Light Enhancement without Paired Supervision",
IEEE TIP 30, 2021): an attention-guided U-Net generator trained without paired references.

The generator is the authors' ``Unet_resize_conv`` (github.com/VITA-Group/EnlightenGAN,
``models/networks.py``) with the options of their released model (``scripts/script.py
--predict``: ``--which_model_netG sid_unet_resize --skip 1 --use_norm 1 --self_attention
--times_residual``): a five-level U-Net of 3x3 convolutions, each followed by LeakyReLU(0.2) and
then BatchNorm, max-pooling down and bilinear resize + 3x3 convolution up. The self-regularised
attention map ``gray = 1 - Y`` (Y the luma of the input, in [0, 1]) is a fifth input channel,
multiplies the bottleneck and every skip connection (max-pooled to their size) and the
predicted residual::

    output = latent * gray + input          (input, output in [-1, 1])

Parameter names are the authors' (``conv1_1``, ``bn1_1``, ..., ``deconv5``, ``conv10``), so their
released ``200_net_G_A.pth`` loads with :func:`load_enlightengan_weights` and files written by
:func:`~wnlb_d2.enhance.enlightengan_train.save_enlightengan_weights` load into their code.

Test-time processing follows their ``predict.py`` path: RGB scaled to [-1, 1]
(``Normalize(0.5, 0.5)``), the attention map from that image, reflection padding to a multiple of
16 inside the forward (``pad_tensor``) and cropping back, images wider than 2200 px averaged
down 2x and the output upsampled back, and ``tensor2im``: ``(out + 1) / 2 * 255`` clipped and
truncated to uint8. Differences, all documented where they are made: the bilinear upsampling is
``align_corners=True`` (what ``F.upsample`` computed in the authors' PyTorch 0.3.1; an option
for weights trained on PyTorch >= 0.4); a side too small to reflect-pad is replicate-padded
(the authors' code fails there); a halved image is upsampled to its exact size (theirs gives
one pixel less on odd sides). The unused options of ``Unet_resize_conv`` (``tanh``,
``linear_add``, ``latent_threshold``, ``latent_norm``, ``linear``, ``use_avgpool``, ``syn_norm``)
are off in the released model and left out.

Licence: the layout and forward follow the authors' BSD-licensed code, Copyright (c) 2019,
Yifan Jiang and Zhangyang Wang, all rights reserved; redistributions must retain that notice
(their ``License`` file).
"""

import collections
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.params import ParameterError, check_number
from .base import Enhancer, frozen_network, run_rgb_network
from .classical import check_int
from .weights_io import listed, read_torch_file, state_dict_differences, state_dict_of_tensors

__all__ = ["UnetResizeConv", "attention_map", "pad_to_multiple", "EnlightenGANWeightsError",
           "load_enlightengan_weights", "build_enlightengan_generator", "enlightengan_state_dict",
           "EnlightenGANEnhancer", "PAD_MULTIPLE"]

logger = logging.getLogger(__name__)

#: The U-Net pools four times, so sides must be multiples of 16 (the authors' ``pad_tensor``).
PAD_MULTIPLE = 16

#: What a weights file must be, for error messages.
_EXPECTED = ("the EnlightenGAN generator state dict as the authors release it (200_net_G_A.pth: torch.save of "
             "the DataParallel-wrapped Unet_resize_conv's state_dict, keys 'module.conv1_1.weight', "
             "'module.bn1_1.running_mean', ... 'module.conv10.bias'; without 'module.' also accepted)")


class EnlightenGANWeightsError(ValueError):
    """A weights file that is missing or is not an EnlightenGAN generator; names the file."""


def attention_map(x):
    """The self-regularised attention map ``1 - Y`` of the authors' data loader.

    Args:
        x (Tensor): RGB images in [-1, 1], shape ``(B, 3, H, W)``.

    Returns:
        Tensor: ``1 - (0.299 R + 0.587 G + 0.114 B)`` with R, G, B in [0, 1], shape ``(B, 1, H, W)``
        (written as the authors do, from ``x + 1``, so the float rounding is theirs too).
    """
    r, g, b = x[:, 0:1] + 1, x[:, 1:2] + 1, x[:, 2:3] + 1
    return 1.0 - (0.299 * r + 0.587 * g + 0.114 * b) / 2.0


def pad_to_multiple(x, multiple=PAD_MULTIPLE):
    """Reflection-pad the last two dimensions to multiples of ``multiple``, split as the authors do.

    Args:
        x (Tensor): shape ``(B, C, H, W)``.
        multiple (int): the stride to reach.

    Returns:
        tuple[Tensor, tuple[int, int, int, int]]: the padded tensor and (left, right, top,
        bottom); the smaller half of each padding goes left/top (``pad_tensor``). A side too
        short to reflect (a padding >= the side) is replicate-padded instead: the authors' code
        fails there, and only images under 16 px reach it.
    """
    h, w = x.shape[-2:]
    pad_w, pad_h = (-w) % multiple, (-h) % multiple
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if not any(pads):
        return x, pads
    mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
    return F.pad(x, pads, mode=mode), pads


def _crop(x, pads):
    left, right, top, bottom = pads
    return x[:, :, top:x.shape[-2] - bottom, left:x.shape[-1] - right]


class UnetResizeConv(nn.Module):
    """EnlightenGAN's generator (the authors' ``Unet_resize_conv``, their parameter names).

    Args:
        channels (int): width of the first level (32 released); level k has ``channels * 2**(k-1)``.
        self_attention (bool): the attention map as a fifth input channel and as a multiplier of
            the bottleneck and skip connections (on in the released model).
        times_residual (bool): multiply the residual by the attention map (on).
        use_norm (bool): BatchNorm after each LeakyReLU (on; off removes the ``bn*`` keys).
        skip (float): ``output = latent + skip * input``; 0 for no skip (1 released).
        align_corners (bool): of the decoder's bilinear upsampling. True is what the authors'
            PyTorch 0.3.1 computed for the released weights; False for weights trained with their
            code on PyTorch >= 0.4 (whose default changed).
        downsample_above (int): images wider than this are averaged down 2x before the network
            and the output upsampled back (the authors' 2200 px, which keeps GPU memory bounded).

    Shapes: ``input`` ``(B, 3, H, W)`` RGB in [-1, 1] and ``gray`` ``(B, 1, H, W)``; any H, W
    (padded to multiples of 16 inside, as the authors do). Returns ``(output, latent)``, both
    ``(B, 3, H, W)`` (the authors return only ``output`` when ``skip`` is 0).
    """

    def __init__(self, *, channels=32, self_attention=True, times_residual=True, use_norm=True, skip=1.0,
                 align_corners=True, downsample_above=2200):
        super().__init__()
        c = check_int("channels", channels, 1)
        self.self_attention = bool(self_attention)
        self.times_residual = bool(times_residual)
        self.use_norm = bool(use_norm)
        self.skip = check_number("skip", skip)
        self.align_corners = bool(align_corners)
        self.downsample_above = check_int("downsample_above", downsample_above, 1)
        self.channels = c
        widths = [c, 2 * c, 4 * c, 8 * c, 16 * c]

        def norm(n):
            # Identity has no state, so without norms the keys are exactly the authors' (no bn*).
            return nn.BatchNorm2d(n) if self.use_norm else nn.Identity()

        # Registered in the authors' order, so the state dict lists keys as theirs does.
        cin = 4 if self.self_attention else 3
        for level, w in enumerate(widths, 1):
            setattr(self, f"conv{level}_1", nn.Conv2d(cin, w, 3, padding=1))
            setattr(self, f"bn{level}_1", norm(w))
            setattr(self, f"conv{level}_2", nn.Conv2d(w, w, 3, padding=1))
            setattr(self, f"bn{level}_2", norm(w))
            cin = w
        # Decoder level 6..9: deconv{level-1} halves the channels after the resize, conv{level}_1
        # takes it concatenated with the skip of the same width.
        for level, w in zip(range(6, 10), reversed(widths[:-1])):
            setattr(self, f"deconv{level - 1}", nn.Conv2d(2 * w, w, 3, padding=1))
            setattr(self, f"conv{level}_1", nn.Conv2d(2 * w, w, 3, padding=1))
            setattr(self, f"bn{level}_1", norm(w))
            setattr(self, f"conv{level}_2", nn.Conv2d(w, w, 3, padding=1))
            if level < 9:  # the last level has no bn9_2 (the authors')
                setattr(self, f"bn{level}_2", norm(w))
        self.conv10 = nn.Conv2d(c, 3, 1)

    def _block(self, x, name):
        # conv -> LeakyReLU -> BatchNorm: the authors' order (norm after the activation).
        x = F.leaky_relu(getattr(self, "conv" + name)(x), 0.2)
        return getattr(self, "bn" + name)(x) if hasattr(self, "bn" + name) else x

    def _up(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=self.align_corners)

    def forward(self, input, gray=None):
        """
        Args:
            input (Tensor): RGB images in [-1, 1], ``(B, 3, H, W)``.
            gray (Tensor or None): the attention map ``(B, 1, H, W)``; None: :func:`attention_map`
                of ``input``.

        Returns:
            tuple[Tensor, Tensor]: ``output`` (the enhanced images in [-1, 1], not clipped) and
            ``latent`` (the attention-weighted residual), both ``(B, 3, H, W)``.
        """
        if input.dim() != 4 or input.shape[1] != 3:
            raise ValueError(f"UnetResizeConv expects RGB images of shape (B, 3, H, W), got {tuple(input.shape)}")
        if gray is None:
            gray = attention_map(input)
        h, w = input.shape[-2:]
        halved = w > self.downsample_above
        if halved:
            input, gray = F.avg_pool2d(input, 2), F.avg_pool2d(gray, 2)
        input, pads = pad_to_multiple(input)
        gray, _ = pad_to_multiple(gray)
        if self.self_attention:
            gray_2 = F.max_pool2d(gray, 2)
            gray_3 = F.max_pool2d(gray_2, 2)
            gray_4 = F.max_pool2d(gray_3, 2)
            gray_5 = F.max_pool2d(gray_4, 2)
            x = self._block(torch.cat((input, gray), 1), "1_1")
        else:
            x = self._block(input, "1_1")
        conv1 = self._block(x, "1_2")
        conv2 = self._block(self._block(F.max_pool2d(conv1, 2), "2_1"), "2_2")
        conv3 = self._block(self._block(F.max_pool2d(conv2, 2), "3_1"), "3_2")
        conv4 = self._block(self._block(F.max_pool2d(conv3, 2), "4_1"), "4_2")
        x = self._block(F.max_pool2d(conv4, 2), "5_1")
        if self.self_attention:
            x = x * gray_5
            conv1, conv2, conv3, conv4 = conv1 * gray, conv2 * gray_2, conv3 * gray_3, conv4 * gray_4
        x = self._block(x, "5_2")
        for level, skip in zip(range(6, 10), (conv4, conv3, conv2, conv1)):
            up = torch.cat([getattr(self, f"deconv{level - 1}")(self._up(x)), skip], 1)
            x = self._block(self._block(up, f"{level}_1"), f"{level}_2")
        latent = self.conv10(x)
        if self.times_residual:
            latent = latent * gray
        output = latent + input * self.skip if self.skip else latent
        output, latent = _crop(output, pads), _crop(latent, pads)
        if halved:
            # The authors upsample 2x; to the exact size so odd sides come back whole.
            output = F.interpolate(output, size=(h, w), mode="bilinear", align_corners=self.align_corners)
        return output, latent


def enlightengan_state_dict(model):
    """The generator's state dict as the authors release it.

    ``define_G`` always wraps the generator in ``DataParallel``, so the keys carry ``module.``;
    PyTorch 0.3.1 had no BatchNorm ``num_batches_tracked``, so those keys are left out (they
    are not used: the momentum is fixed). Such a file loads into the authors' code with any
    PyTorch version, and into :func:`load_enlightengan_weights`.

    Args:
        model (UnetResizeConv): the generator.

    Returns:
        collections.OrderedDict: ``"module." + name`` -> tensor (CPU).
    """
    return collections.OrderedDict(("module." + k, v.detach().cpu()) for k, v in model.state_dict().items()
                                   if not k.endswith("num_batches_tracked"))


def _read_state_dict(path):
    obj = read_torch_file(path, "EnlightenGAN", EnlightenGANWeightsError,
                          f"expected {_EXPECTED}; train one with tools/train_enlightengan.py", f"expected {_EXPECTED}")
    # The authors' file is the bare state dict (no training-checkpoint wrapper to unwrap).
    return state_dict_of_tensors(obj, path, "EnlightenGAN", EnlightenGANWeightsError, f"expected {_EXPECTED}",
                                 wrappers=())


def load_enlightengan_weights(model, path):
    """Load an EnlightenGAN generator file (the authors' ``200_net_G_A.pth`` or ours) into ``model``.

    Accepted: the bare state dict with or without DataParallel's ``module.`` prefix, with or
    without BatchNorm's ``num_batches_tracked`` (absent from files of PyTorch < 0.4.1, such as
    the released one). Nothing else: every other key must match ``model`` in name and shape.

    Args:
        model (UnetResizeConv): the generator; modified in place.
        path (str): the ``.pth`` file.

    Returns:
        UnetResizeConv: ``model``.

    Raises:
        EnlightenGANWeightsError: the file is missing, unreadable, not a state dict, or does not
            fit ``model`` (one line naming the file, the expected format and the differences).
    """
    return _load_state(model, _read_state_dict(path), path)


def build_enlightengan_generator(path, channels=0, align_corners=True):
    """A generator with the weights of ``path``, its width read from the file unless given.

    Args:
        path (str): the ``.pth`` file (see :func:`load_enlightengan_weights`).
        channels (int): first-level width; 0: that of the file's ``conv1_1``.
        align_corners (bool): see :class:`UnetResizeConv`.

    Returns:
        UnetResizeConv: in train mode, as built.

    Raises:
        EnlightenGANWeightsError: as :func:`load_enlightengan_weights`.
    """
    state = _read_state_dict(path)
    net = UnetResizeConv(channels=channels or _file_channels(state) or 32, align_corners=align_corners)
    return _load_state(net, state, path)


def _file_channels(state):
    """The first-level width of the generator in a (prefix-free) state dict, or None."""
    w = state.get("conv1_1.weight")
    return int(w.shape[0]) if w is not None and w.dim() == 4 else None


def _load_state(model, state, path):
    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing, unexpected, wrong = state_dict_differences(own, state, optional)
    if missing or unexpected or wrong:
        hint = ""
        if any(k.startswith("model.") for k in state):
            hint = (" (this looks like a discriminator, *_net_D_A.pth or *_net_D_P.pth: give the generator "
                    "*_net_G_A.pth)")
        elif _file_channels(state) is not None:
            hint = (f" (the file's generator has channels={_file_channels(state)}, self_attention="
                    f"{state['conv1_1.weight'].shape[1] == 4}, use_norm={'bn1_1.weight' in state})")
        raise EnlightenGANWeightsError(
            f"EnlightenGAN weights {path!r} do not fit the generator{hint}: expected {_EXPECTED}; missing "
            f"{listed(missing, 5)}, unexpected {listed(unexpected, 5)}, wrong shapes {listed(wrong, 3)}")
    for k in optional - set(state):
        state[k] = own[k]
    model.load_state_dict(state)
    logger.info(f"Loaded EnlightenGAN generator weights from {path} ({len(state)} tensors)")
    return model


class EnlightenGANEnhancer(Enhancer):
    """EnlightenGAN as an image enhancer (CPU, no gradients, the authors' test-time processing).

    It runs on the CPU because enhancers run inside data-loader workers, which are forked
    processes where CUDA cannot be initialised. About 0.12 MMAC a pixel at the released width,
    a quarter of it at width 16 (0.04 CPU-seconds for a 128 px image, 2026-12-05).

    Args:
        weights (str): an EnlightenGAN generator ``.pth`` (required): the authors'
            ``200_net_G_A.pth`` or one written by ``tools/train_enlightengan.py``.
        channels (int): first-level width of the generator (32 released, 16 by default in
            ``tools/train_enlightengan.py``); 0: read it from the file.
        align_corners (bool): see :class:`UnetResizeConv` (True for the released weights and ours).
    """

    name = "enlightengan"

    def __init__(self, weights="", channels=0, align_corners=True):
        if not weights:
            raise ParameterError("weights", "no EnlightenGAN weights given: train a generator on low-light and "
                                            "normal-light images with tools/train_enlightengan.py, or give the "
                                            "authors' 200_net_G_A.pth")
        self.weights = str(weights)
        check_int("channels", channels, 0)
        self.net = frozen_network(lambda: build_enlightengan_generator(self.weights, channels, align_corners),
                                  EnlightenGANWeightsError)

    def _enhance(self, bgr):
        # tensor2im: (x + 1) / 2 * 255, clipped, then astype(uint8), which truncates.
        return run_rgb_network(bgr, self._forward, truncate=True)

    def _forward(self, rgb):
        """``(1, 3, H, W)`` RGB in [0, 1] -> the generator's output mapped back to [0, 1] (unclipped)."""
        # ToTensor + Normalize((0.5,)*3, (0.5,)*3) of the authors' loader: RGB in [-1, 1].
        x = (rgb - 0.5) / 0.5
        out, _ = self.net(x, attention_map(x))
        return (out + 1) / 2.0

    def _params(self):
        return {"weights": self.weights, "channels": self.net.channels, "align_corners": self.net.align_corners}
