"""The two heads of SOLOv2: the instance head (category + dynamic kernels per grid cell) and
the unified mask-feature head (Wang et al., NeurIPS 2020, Sec. 3.2)."""

import logging
import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn

__all__ = ["coord_features", "SOLOv2InstanceHead", "SOLOv2MaskHead"]

logger = logging.getLogger(__name__)


def coord_features(x):
    """Normalised pixel coordinates for CoordConv (Liu et al. 2018).

    Args:
        x (Tensor): a feature map, shape ``(B, C, H, W)``.

    Returns:
        Tensor: ``(B, 2, H, W)``: x then y, each linear in [-1, 1] across the map.
    """
    b, _, h, w = x.shape
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])[None].expand(b, -1, -1, -1)


def _conv(in_channels, out_channels, norm, kernel_size=3):
    return Conv2d(
        in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2,
        bias=not norm, norm=get_norm(norm, out_channels), activation=F.relu,
    )


CONV_INITS = ("normal", "kaiming")


def _init_convs(module, conv_init="normal", std=0.01):
    """Every conv: zero bias, weights normal with ``std``; with ``conv_init="kaiming"``, the convs
    followed by a norm get He-normal (fan-out) weights instead (see ``MODEL.SOLOV2.CONV_INIT``)."""
    if conv_init not in CONV_INITS:
        raise ValueError(f"MODEL.SOLOV2.CONV_INIT = {conv_init!r} is invalid; expected one of {CONV_INITS}")
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if conv_init == "kaiming" and getattr(m, "norm", None) is not None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


def _check_norm_channels(norm, channels, key):
    if norm == "GN" and channels % 32 != 0:
        raise ValueError(f"{key} = {channels} must be a multiple of 32 with NORM 'GN' (32 groups)")


class SOLOv2InstanceHead(nn.Module):
    """Per level, an S x S grid of category scores and dynamic mask kernels.

    Each level's feature map is resized to S x S (after the SOLOv2 level resizing: the first
    level down-sampled by 2, the last resized to the one before it). The kernel branch sees
    the features with coordinates concatenated (CoordConv: a kernel must know where its
    instance is, since the mask features are shared by all cells); the category branch sees
    them without.
    """

    @configurable
    def __init__(self, *, in_channels, num_classes, num_grids, channels=512, num_convs=4,
                 num_kernels=256, use_coord_conv=True, norm="GN", prior_prob=0.01, conv_init="normal"):
        """
        Args:
            in_channels (int): channels of every input level (FPN: all equal).
            num_classes (int): foreground classes.
            num_grids (list[int]): S per level.
            channels (int): channels of the stacked convs.
            num_convs (int): stacked 3x3 convs per branch.
            num_kernels (int): length of each dynamic kernel (= mask-feature channels, 1x1).
            use_coord_conv (bool): concatenate coordinates to the kernel branch's input.
            norm (str): norm of the stacked convs (detectron2 ``get_norm`` names, "" for none).
            prior_prob (float): initial foreground probability of the category branch.
            conv_init (str): "normal" or "kaiming" (``MODEL.SOLOV2.CONV_INIT``).
        """
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"MODEL.SOLOV2.NUM_INSTANCE_CONVS must be at least 1, got {num_convs}")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"MODEL.SOLOV2.PRIOR_PROB must be in (0, 1), got {prior_prob}")
        _check_norm_channels(norm, channels, "MODEL.SOLOV2.INSTANCE_CHANNELS")
        self.num_grids = list(num_grids)
        self.use_coord_conv = use_coord_conv
        kernel_in = in_channels + (2 if use_coord_conv else 0)
        self.kernel_tower = nn.Sequential(
            *[_conv(kernel_in if i == 0 else channels, channels, norm) for i in range(num_convs)]
        )
        self.cate_tower = nn.Sequential(
            *[_conv(in_channels if i == 0 else channels, channels, norm) for i in range(num_convs)]
        )
        self.kernel_pred = nn.Conv2d(channels, num_kernels, kernel_size=3, padding=1)
        self.cate_pred = nn.Conv2d(channels, num_classes, kernel_size=3, padding=1)
        _init_convs(self, conv_init)
        # Focal-loss initialisation (Lin et al.): every cell starts at foreground probability
        # prior_prob, so the many background cells do not swamp the first iterations.
        nn.init.constant_(self.cate_pred.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, input_shapes: List[ShapeSpec]):
        channels = {s.channels for s in input_shapes}
        if len(channels) != 1:
            raise ValueError(f"MODEL.SOLOV2.IN_FEATURES must have equal channels (an FPN), got {sorted(channels)}")
        c = cfg.MODEL.SOLOV2
        return {
            "in_channels": channels.pop(),
            "num_classes": c.NUM_CLASSES,
            "num_grids": list(c.NUM_GRIDS),
            "channels": c.INSTANCE_CHANNELS,
            "num_convs": c.NUM_INSTANCE_CONVS,
            "num_kernels": c.NUM_KERNELS,
            "use_coord_conv": c.USE_COORD_CONV,
            "norm": c.NORM,
            "prior_prob": c.PRIOR_PROB,
            "conv_init": c.CONV_INIT,
        }

    @staticmethod
    def resize_levels(features):
        """SOLOv2's level resizing: first level down-sampled by 2, last resized to the one before.

        Args:
            features (list[Tensor]): ``(B, C, H_l, W_l)`` per level, finest first (P2-P6).

        Returns:
            list[Tensor]: the same levels, P2 at stride 8 and P6 at P5's size.
        """
        out = list(features)
        if len(out) > 1:
            out[0] = F.interpolate(out[0], scale_factor=0.5, mode="bilinear", align_corners=False)
            out[-1] = F.interpolate(out[-1], size=out[-2].shape[-2:], mode="bilinear", align_corners=False)
        return out

    def forward(self, features: List[torch.Tensor]):
        """
        Args:
            features (list[Tensor]): ``(B, C, H_l, W_l)`` per level, finest first, one per grid.

        Returns:
            tuple[list[Tensor], list[Tensor]]: category logits ``(B, num_classes, S_l, S_l)``
            and kernels ``(B, num_kernels, S_l, S_l)`` per level.
        """
        if len(features) != len(self.num_grids):
            raise ValueError(f"SOLOv2 instance head: {len(features)} feature levels for {len(self.num_grids)} grids")
        cate, kernels = [], []
        for x, s in zip(self.resize_levels(features), self.num_grids):
            if self.use_coord_conv:
                x = torch.cat([x, coord_features(x)], dim=1)
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
            kernels.append(self.kernel_pred(self.kernel_tower(x)))
            c = x[:, :-2] if self.use_coord_conv else x
            cate.append(self.cate_pred(self.cate_tower(c)))
        return cate, kernels


class SOLOv2MaskHead(nn.Module):
    """Unified mask features: each level up-sampled to the finest one's resolution and summed.

    Level ``l`` (0 = finest) goes through ``l`` rounds of (3x3 conv, norm, ReLU, 2x bilinear
    up-sampling), level 0 through one conv; the coarsest level gets coordinates first, so the
    masks can be position-sensitive. A 1x1 conv then gives ``num_kernels`` channels.
    """

    @configurable
    def __init__(self, *, in_channels, num_levels, channels=128, num_kernels=256, norm="GN", conv_init="normal"):
        """
        Args:
            in_channels (int): channels of every input level.
            num_levels (int): input levels (P2-P5: 4).
            channels (int): channels inside the branch.
            num_kernels (int): output channels (= length of the dynamic kernels).
            norm (str): norm of every conv.
            conv_init (str): "normal" or "kaiming" (``MODEL.SOLOV2.CONV_INIT``).
        """
        super().__init__()
        _check_norm_channels(norm, channels, "MODEL.SOLOV2.MASK_CHANNELS")
        _check_norm_channels(norm, num_kernels, "MODEL.SOLOV2.NUM_KERNELS")
        self.num_levels = num_levels
        self.levels = nn.ModuleList()
        for level in range(num_levels):
            coord = 2 if level == num_levels - 1 else 0
            if level == 0:
                self.levels.append(nn.Sequential(_conv(in_channels + coord, channels, norm)))
                continue
            layers = []
            for j in range(level):
                layers.append(_conv((in_channels + coord) if j == 0 else channels, channels, norm))
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.levels.append(nn.Sequential(*layers))
        self.pred = _conv(channels, num_kernels, norm, kernel_size=1)
        _init_convs(self, conv_init)

    @classmethod
    def from_config(cls, cfg, input_shapes: List[ShapeSpec]):
        channels = {s.channels for s in input_shapes}
        if len(channels) != 1:
            raise ValueError(f"MODEL.SOLOV2.MASK_IN_FEATURES must have equal channels, got {sorted(channels)}")
        c = cfg.MODEL.SOLOV2
        return {
            "in_channels": channels.pop(),
            "num_levels": len(input_shapes),
            "channels": c.MASK_CHANNELS,
            "num_kernels": c.NUM_KERNELS,
            "norm": c.NORM,
            "conv_init": c.CONV_INIT,
        }

    def forward(self, features: List[torch.Tensor]):
        """
        Args:
            features (list[Tensor]): ``(B, C, H_l, W_l)`` per level, finest first, each half
                the size of the one before.

        Returns:
            Tensor: mask features ``(B, num_kernels, H_0, W_0)``.
        """
        if len(features) != self.num_levels:
            raise ValueError(f"SOLOv2 mask head: {len(features)} feature levels, expected {self.num_levels}")
        size = features[0].shape[-2:]
        out = 0
        for level, (x, branch) in enumerate(zip(features, self.levels)):
            if level == self.num_levels - 1:
                x = torch.cat([x, coord_features(x)], dim=1)
            x = branch(x)
            if x.shape[-2:] != size:  # odd sizes (no size divisibility): align to the finest level
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            out = out + x
        return self.pred(out)
