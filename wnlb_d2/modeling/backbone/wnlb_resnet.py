"""ResNet with (weighted) non-local blocks after chosen stages."""

import logging
from collections import abc

from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import ResNet, build_resnet_backbone

from ...layers import NONLOCAL_FUSIONS, NONLOCAL_IMPLS, NONLOCAL_MODES, NONLOCAL_NORMS, NONLOCAL_ZERO_INITS, NonLocalBlock2d

__all__ = ["WNLBResNet", "build_resnet_wnlb_backbone", "build_wnlb_bottom_up", "make_wnlb_blocks", "stage_channels_of",
           "wnlb_config_of"]

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
    def from_resnet(cls, resnet, blocks, out_features=None):
        """Wrap the modules of an already built (and frozen) stock ResNet; nothing is copied.

        ``out_features`` (list[str] or None): the features returned; None keeps the ResNet's.
        """
        return cls(
            resnet.stem,
            [list(stage) for stage in resnet.stages],
            blocks=blocks,
            num_classes=resnet.num_classes,
            out_features=list(resnet.output_shape()) if out_features is None else list(out_features),
            freeze_at=0,  # the stock builder already froze what FREEZE_AT asks for
        )

    @classmethod
    def wrap(
        cls, resnet, *, stages=("res3", "res4", "res5"), mode="embedded", fusion="weighted", weight_init=0.0,
        learnable_weight=True, inter_channels_ratio=0.5, norm="BN", impl="efficient", sub_sample=False,
        zero_init="norm", out_features=None,
    ):
        """A built stock ResNet with non-local blocks after ``stages``: the LazyConfig builder.

        Every argument is a plain value, so it can be written in a LazyConfig, and the blocks'
        channels are read from the ResNet's stages. The defaults are those of ``MODEL.WNLB``, and
        the modules and checkpoint keys are those of the yacs builder
        (``backbone.bottom_up.wnlb.res3...``), so the same checkpoints load. In a config::

            model.backbone.bottom_up = L(WNLBResNet.wrap)(
                resnet=model.backbone.bottom_up, stages=["res3", "res4", "res5"],
                out_features="${.resnet.out_features}")

        (:func:`wnlb_d2.lazy.with_wnlb_blocks` writes that node.)

        Args:
            resnet (ResNet): a stock detectron2 ResNet, already frozen as it should be.
            stages (list[str]): stages after which a block goes (``res2`` ... ``res5``).
            mode, fusion, norm, impl, sub_sample, zero_init, learnable_weight: as
                :class:`NonLocalBlock2d` (``MODEL.WNLB.*``).
            weight_init (float or list[float]): initial w, one value or one per stage.
            inter_channels_ratio (float): theta/phi/g channels as a fraction of the stage's.
            out_features (list[str] or None): features returned; None keeps the ResNet's. It is an
                argument so that FPN's ``in_features="${.bottom_up.out_features}"`` resolves.

        Returns:
            WNLBResNet: sharing the ResNet's modules (nothing is copied).
        """
        if not isinstance(resnet, ResNet) or isinstance(resnet, WNLBResNet):
            raise TypeError(
                f"WNLBResNet.wrap(resnet=...) takes a stock detectron2 ResNet, got {type(resnet).__name__}"
            )
        blocks = make_wnlb_blocks(
            stage_channels_of(resnet), stages=stages, mode=mode, fusion=fusion, norm=norm, impl=impl,
            weight_init=weight_init, inter_channels_ratio=inter_channels_ratio,
            learnable_weight=learnable_weight, sub_sample=sub_sample, zero_init=zero_init,
            key=lambda name: f"WNLBResNet.wrap({name}=...)",
            missing_stage_hint=" (the wrapped ResNet's out_features)",
        )
        return cls.from_resnet(resnet, blocks, out_features)

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


def _yacs_key(name):
    """How the yacs builder names an argument in its errors: ``mode`` -> ``MODEL.WNLB.MODE``."""
    return f"MODEL.WNLB.{name.upper()}"


def _named_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} = {value!r} is invalid; expected one of {tuple(allowed)}")
    return value


def _choice(key, value, allowed):
    """A ``MODEL.WNLB.<key>`` value among ``allowed`` (also used by engine/setup.py's checks)."""
    return _named_choice(f"MODEL.WNLB.{key}", value, allowed)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_list(value):
    # A LazyConfig hands lists over as omegaconf ListConfig, a Sequence but not a list.
    return isinstance(value, abc.Sequence) and not isinstance(value, str)


def _weights_per_stage(value, stages, key=_yacs_key):
    if _is_number(value):
        return [float(value)] * len(stages)
    if _is_list(value):
        value = list(value)
        if len(value) != len(stages):
            raise ValueError(
                f"{key('weight_init')} has {len(value)} values {value} but {key('stages')} "
                f"has {len(stages)} stages {list(stages)}; give one value or one per stage"
            )
        if not all(_is_number(v) for v in value):
            raise ValueError(f"{key('weight_init')} must hold numbers, got {value}")
        return [float(v) for v in value]
    raise ValueError(f"{key('weight_init')} must be a number or a list of numbers, got {value!r}")


def make_wnlb_blocks(
    stage_channels, *, stages, mode, fusion, norm, impl, weight_init, inter_channels_ratio,
    learnable_weight, sub_sample, zero_init, key=_yacs_key, missing_stage_hint="",
):
    """Build one non-local block per stage, from plain arguments (the yacs and LazyConfig builders).

    Args:
        stage_channels (dict[str, int]): channels of each stage the backbone computes.
        stages (list[str]): stages after which a block goes, e.g. ``["res3", "res4", "res5"]``.
        mode, fusion, norm, impl, sub_sample, zero_init: as :class:`NonLocalBlock2d`.
        weight_init (float or list[float]): initial w, one for all stages or one per stage.
        inter_channels_ratio (float): theta/phi/g channels as a fraction of the stage's.
        learnable_weight (bool): whether w is learned.
        key (callable): argument name -> how an error names it (``MODEL.WNLB.MODE``, ``mode``).
        missing_stage_hint (str): appended to the error about a stage the backbone lacks.

    Returns:
        dict[str, NonLocalBlock2d]: stage name -> block.

    Raises:
        ValueError: an argument is not allowed; the message names it and the choices.
    """
    if not _is_list(stages):
        raise ValueError(f"{key('stages')} must be a list of stage names, got {stages!r}")
    stages = list(stages)
    for s in stages:
        _named_choice(f"{key('stages')} entry", s, _STAGE_NAMES)
        if s not in stage_channels:
            raise ValueError(
                f"{key('stages')} contains {s!r}, but this backbone only computes "
                f"{sorted(stage_channels)}{missing_stage_hint}"
            )
    if len(set(stages)) != len(stages):
        raise ValueError(f"{key('stages')} lists a stage twice: {stages}")
    mode = _named_choice(key("mode"), mode, NONLOCAL_MODES)
    fusion = _named_choice(key("fusion"), fusion, NONLOCAL_FUSIONS)
    norm = _named_choice(key("norm"), norm, NONLOCAL_NORMS)
    impl = _named_choice(key("impl"), impl, NONLOCAL_IMPLS)
    ratio = inter_channels_ratio
    if not _is_number(ratio) or not ratio > 0:
        raise ValueError(f"{key('inter_channels_ratio')} must be a positive number, got {ratio!r}")
    weights = _weights_per_stage(weight_init, stages, key)
    zero_init = _named_choice(key("zero_init"), zero_init, NONLOCAL_ZERO_INITS)

    blocks = {}
    for stage, w0 in zip(stages, weights):
        channels = stage_channels[stage]
        if norm == "GN" and channels % 32:
            raise ValueError(f"{key('norm')} = 'GN' needs channels divisible by 32; {stage} has {channels}")
        blocks[stage] = NonLocalBlock2d(
            channels,
            inter_channels=max(1, int(round(channels * ratio))),
            mode=mode,
            fusion=fusion,
            weight_init=w0,
            learnable_weight=bool(learnable_weight),
            norm=norm,
            impl=impl,
            sub_sample=bool(sub_sample),
            zero_init=zero_init,
        )
    if blocks:
        logger.info(
            f"Non-local blocks ({mode}, {fusion}, {impl}, norm={norm}) after "
            + ", ".join(f"{s} (w0={w:g})" for s, w in zip(stages, weights))
        )
    else:
        logger.info(f"{key('stages')} is empty: the backbone is the stock ResNet.")
    return blocks


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
    return make_wnlb_blocks(
        stage_channels,
        stages=list(wcfg.STAGES),
        mode=wcfg.MODE,
        fusion=wcfg.FUSION,
        norm=wcfg.NORM,
        impl=wcfg.IMPL,
        weight_init=wcfg.WEIGHT_INIT,
        inter_channels_ratio=wcfg.INTER_CHANNELS_RATIO,
        learnable_weight=wcfg.LEARNABLE_WEIGHT,
        sub_sample=wcfg.get("SUB_SAMPLE", False),
        zero_init=wcfg.get("ZERO_INIT", "norm"),
        missing_stage_hint=(
            f" (MODEL.RESNETS.OUT_FEATURES = {list(cfg.MODEL.RESNETS.OUT_FEATURES)}; "
            "in C4 models res5 belongs to the ROI head)"
        ),
    )


def build_wnlb_bottom_up(cfg, input_shape):
    """Build the stock ResNet from ``cfg`` and add the non-local blocks of ``MODEL.WNLB``."""
    resnet = build_resnet_backbone(cfg, input_shape)
    return WNLBResNet.from_resnet(resnet, build_wnlb_blocks(cfg, stage_channels_of(resnet)))


def stage_channels_of(resnet):
    """Output channels of each stage a built ResNet computes: ``{"res2": 256, ..., "res5": 2048}``."""
    return {name: stage[-1].out_channels for name, stage in zip(resnet.stage_names, resnet.stages)}


@BACKBONE_REGISTRY.register()
def build_resnet_wnlb_backbone(cfg, input_shape: ShapeSpec):
    """ResNet (e.g. C4) with non-local blocks; drop-in for ``build_resnet_backbone``.

    Returns:
        WNLBResNet
    """
    return build_wnlb_bottom_up(cfg, input_shape)
