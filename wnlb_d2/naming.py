"""Where wnlb_d2's non-local blocks live in a model and its state dict, and the one-key backbone swap.

The wNLB ResNet keeps the stock stages and puts its blocks beside them in a ``ModuleDict``
named :data:`WNLB_MODULE`, keyed by stage: ``backbone.bottom_up.wnlb.res3.theta.weight``
(FPN models) or ``backbone.wnlb.res4.g.weight`` (C4 models). Every module that reads or writes
those keys (checkpoint loading, fine-tuning policies, feature plots, the study runner,
benchmarks) asks this module instead of parsing key strings itself.
"""

__all__ = ["WNLB_MODULE", "WNLB_BACKBONES", "FUSION_WEIGHT", "is_wnlb_key", "is_fusion_weight_key", "block_name", "block_names", "wnlb_stages",
           "wnlb_mode_from_keys", "wnlb_layout", "wnlb_backbone_name"]

#: Attribute of the wNLB ResNet that holds the blocks (a ``ModuleDict`` keyed by stage name).
WNLB_MODULE = "wnlb"

#: Stock backbone builder -> its wNLB counterpart: the one-key swap of ``MODEL.BACKBONE.NAME``.
WNLB_BACKBONES = {
    "build_resnet_fpn_backbone": "build_resnet_wnlb_fpn_backbone",
    "build_retinanet_resnet_fpn_backbone": "build_retinanet_resnet_wnlb_fpn_backbone",
    "build_resnet_backbone": "build_resnet_wnlb_backbone",
}

#: Name of a block's fusion weight w (a parameter, or a buffer when w is fixed).
FUSION_WEIGHT = "fusion_weight"

_MARK = f".{WNLB_MODULE}."


def is_wnlb_key(key):
    """Whether a state-dict or parameter name belongs to a non-local block added by wnlb_d2."""
    return _MARK in f".{key}"


def is_fusion_weight_key(key):
    """Whether a name is the fusion weight w of a block (``...wnlb.res3.fusion_weight``)."""
    return is_wnlb_key(key) and key.rsplit(".", 1)[-1] == FUSION_WEIGHT


def block_name(key):
    """The block a key belongs to: ``"backbone.bottom_up.wnlb.res3.g.weight"`` -> ``"backbone.bottom_up.wnlb.res3"``."""
    head, _, rest = f".{key}".partition(_MARK)
    return f"{head[1:]}{_MARK}{rest.split('.')[0]}".lstrip(".")


def block_names(keys):
    """The distinct blocks among ``keys`` (wNLB keys only), in first-seen order."""
    names = []
    for k in keys:
        if is_wnlb_key(k):
            name = block_name(k)
            if name not in names:
                names.append(name)
    return names


def wnlb_stages(keys):
    """The stages that have a block, read from state-dict keys: e.g. ``["res3", "res4", "res5"]``."""
    return sorted({block_name(k).rsplit(".", 1)[1] for k in keys if is_wnlb_key(k)})


def wnlb_mode_from_keys(keys):
    """The pairwise function, where the block tensors tell it.

    Concatenation blocks have a ``concat_project``; Gaussian blocks have no ``theta``/``phi``
    embeddings. Embedded Gaussian and dot product store the same tensors, and weighted and
    residual fusions too, so those cannot be told apart.

    Returns:
        str or None: "concatenate", "gaussian", or None (undecidable, or no blocks).
    """
    block_keys = [k for k in keys if is_wnlb_key(k)]
    if any(k.endswith("concat_project.weight") for k in block_keys):
        return "concatenate"
    if block_keys and not any(".theta." in k for k in block_keys):
        return "gaussian"
    return None


def wnlb_layout(keys):
    """Which non-local blocks a state dict holds: ``{"stages": [...], "mode": str or None}``.

    ``mode`` is None when the keys cannot tell (see :func:`wnlb_mode_from_keys`); the fusion
    (weighted or residual) is never in the keys.
    """
    keys = list(keys)
    return {"stages": wnlb_stages(keys), "mode": wnlb_mode_from_keys(keys)}


def wnlb_backbone_name(name):
    """The wNLB builder for a stock backbone builder (a wNLB or unknown name is returned as is)."""
    return WNLB_BACKBONES.get(name, name)
