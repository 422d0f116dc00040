"""ResNet with (weighted) non-local blocks after chosen stages."""

import logging

from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import ResNet, build_resnet_backbone

from ...layers import NONLOCAL_FUSIONS, NONLOCAL_IMPLS, NONLOCAL_MODES, NONLOCAL_NORMS, NONLOCAL_ZERO_INITS, NonLocalBlock2d

__all__ = ["WNLBResNet", "build_resnet_wnlb_backbone", "build_wnlb_bottom_up", "wnlb_config_of"]

logger = logging.getLogger(__name__)

_STAGE_NAMES = ("res2", "res3", "res4", "res5")


class WNLBResNet(ResNet):
    """A stock detectron2 :class:`ResNet` with a non-local block after some of its stages.

    The stem and stages are the stock modules under their stock names (``res3.0.conv1`` ...), so
    every stock checkpoint loads unchanged; the blocks live beside them in ``self.wnlb``
    (``wnlb.res3`` ...), never inside a stage. A block's output replaces the stage's output
    both as a feature returned to the FPN / ROI heads and as the next stage's input.

    Blocks are new parameters and are never frozen by ``MODEL.BACKBONE.FREEZE_AT``.

    Args:
        stem, stages, num_classes, out_features, freeze_at: as in :class:`ResNet`.
        blocks (dict[str, nn.Module]): stage name -> block applied after that stage.
    """

    def __init__(self, stem, stages, *, blocks, num_classes=None, out_features=None, freeze_at=0):
        super().__init__(stem, stages, num_classes=num_classes, out_features=out_features, freeze_at=freeze_at)
        unknown = sorted(set(blocks) - set(self.stage_names))
        if unknown:
            raise ValueError(
                f"Non-local blocks requested after stages {unknown}, but this ResNet only "
                f"computes {list(self.stage_names)}"
            )
        self.wnlb = nn.ModuleDict({name: blocks[name] for name in self.stage_names if name in blocks})

    @classmethod
    def from_resnet(cls, resnet, blocks):
        """Wrap the modules of an already built (and frozen) stock ResNet; nothing is copied."""
        return cls(
            resnet.stem,
            [list(stage) for stage in resnet.stages],
            blocks=blocks,
            num_classes=resnet.num_classes,
            out_features=list(resnet.output_shape()),
            freeze_at=0,  # the stock builder already froze what FREEZE_AT asks for
        )

    def forward(self, x):
        """
        Args:
            x (Tensor): images, shape ``(B, C, H, W)``.

        Returns:
            dict[str, Tensor]: the requested features, as :meth:`ResNet.forward`.
        """
        if x.dim() != 4:
            raise ValueError(f"WNLBResNet takes an input of shape (B, C, H, W), got {tuple(x.shape)}")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self.wnlb:
                x = self.wnlb[name](x)
            if name in self._out_features:
                outputs[name] = x
        if self.num_classes is not None:
            x = self.linear(self.avgpool(x).flatten(1))
            if "linear" in self._out_features:
                outputs["linear"] = x
        return outputs


def wnlb_config_of(cfg):
    """``cfg.MODEL.WNLB``, or its defaults when the config was made without ``add_lowlight_config``.

    This keeps the promise that a stock config becomes a wNLB config by the one key
    ``MODEL.BACKBONE.NAME``.
    """
    if "WNLB" in cfg.MODEL:
        return cfg.MODEL.WNLB
    from detectron2.config import get_cfg

    from ...config import add_wnlb_model_config

    defaults = get_cfg()
    add_wnlb_model_config(defaults)
    logger.warning("Config has no MODEL.WNLB node (wnlb_d2.add_lowlight_config not called): using its defaults.")
    return defaults.MODEL.WNLB


def _choice(key, value, allowed):
    if value not in allowed:
        raise ValueError(f"MODEL.WNLB.{key} = {value!r} is invalid; expected one of {tuple(allowed)}")
    return value


def _weights_per_stage(value, stages):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)] * len(stages)
    if isinstance(value, (list, tuple)):
        if len(value) != len(stages):
            raise ValueError(
                f"MODEL.WNLB.WEIGHT_INIT has {len(value)} values {list(value)} but MODEL.WNLB.STAGES "
                f"has {len(stages)} stages {list(stages)}; give one value or one per stage"
            )
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"MODEL.WNLB.WEIGHT_INIT must hold numbers, got {list(value)}")
        return [float(v) for v in value]
    raise ValueError(f"MODEL.WNLB.WEIGHT_INIT must be a number or a list of numbers, got {value!r}")


def build_wnlb_blocks(cfg, stage_channels):
    """Build the non-local blocks that ``cfg.MODEL.WNLB`` asks for.

    Args:
        cfg (CfgNode): the full config.
        stage_channels (dict[str, int]): channels of each stage the backbone computes.

    Returns:
        dict[str, NonLocalBlock2d]: stage name -> block.

    Raises:
        ValueError: a config value is not allowed; the message names the key and the choices.
    """
    wcfg = wnlb_config_of(cfg)
    stages = list(wcfg.STAGES)
    for s in stages:
        _choice("STAGES entry", s, _STAGE_NAMES)
        if s not in stage_channels:
            raise ValueError(
                f"MODEL.WNLB.STAGES contains {s!r}, but this backbone only computes "
                f"{sorted(stage_channels)} (MODEL.RESNETS.OUT_FEATURES = "
                f"{list(cfg.MODEL.RESNETS.OUT_FEATURES)}; in C4 models res5 belongs to the ROI head)"
            )
    if len(set(stages)) != len(stages):
        raise ValueError(f"MODEL.WNLB.STAGES lists a stage twice: {stages}")
    mode = _choice("MODE", wcfg.MODE, NONLOCAL_MODES)
    fusion = _choice("FUSION", wcfg.FUSION, NONLOCAL_FUSIONS)
    norm = _choice("NORM", wcfg.NORM, NONLOCAL_NORMS)
    impl = _choice("IMPL", wcfg.IMPL, NONLOCAL_IMPLS)
    ratio = wcfg.INTER_CHANNELS_RATIO
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise ValueError(f"MODEL.WNLB.INTER_CHANNELS_RATIO must be a positive number, got {ratio!r}")
    weights = _weights_per_stage(wcfg.WEIGHT_INIT, stages)
    sub_sample = bool(wcfg.get("SUB_SAMPLE", False))
    zero_init = _choice("ZERO_INIT", wcfg.get("ZERO_INIT", "norm"), NONLOCAL_ZERO_INITS)

    blocks = {}
    for stage, weight_init in zip(stages, weights):
        channels = stage_channels[stage]
        if norm == "GN" and channels % 32:
            raise ValueError(f"MODEL.WNLB.NORM = 'GN' needs channels divisible by 32; {stage} has {channels}")
        blocks[stage] = NonLocalBlock2d(
            channels,
            inter_channels=max(1, int(round(channels * ratio))),
            mode=mode,
            fusion=fusion,
            weight_init=weight_init,
            learnable_weight=bool(wcfg.LEARNABLE_WEIGHT),
            norm=norm,
            impl=impl,
            sub_sample=sub_sample,
            zero_init=zero_init,
        )
    if blocks:
        logger.info(
            f"Non-local blocks ({mode}, {fusion}, {impl}, norm={norm}) after "
            + ", ".join(f"{s} (w0={w:g})" for s, w in zip(stages, weights))
        )
    else:
        logger.info("MODEL.WNLB.STAGES is empty: the backbone is the stock ResNet.")
    return blocks


def build_wnlb_bottom_up(cfg, input_shape):
    """Build the stock ResNet from ``cfg`` and add the non-local blocks of ``MODEL.WNLB``."""
    resnet = build_resnet_backbone(cfg, input_shape)
    stage_channels = {name: stage[-1].out_channels for name, stage in zip(resnet.stage_names, resnet.stages)}
    return WNLBResNet.from_resnet(resnet, build_wnlb_blocks(cfg, stage_channels))


@BACKBONE_REGISTRY.register()
def build_resnet_wnlb_backbone(cfg, input_shape: ShapeSpec):
    """ResNet (e.g. C4) with non-local blocks; drop-in for ``build_resnet_backbone``.

    Returns:
        WNLBResNet
    """
    return build_wnlb_bottom_up(cfg, input_shape)
