"""wnlb_d2 in detectron2's LazyConfig (Python configs such as ``configs/new_baselines/*.py``).

Three pieces, each one line in a config (see ``configs/lazy/*.py``)::

    from detectron2 import model_zoo
    from detectron2.config import LazyCall as L
    from wnlb_d2.lazy import wnlb_param_groups, with_wnlb_blocks

    _base = model_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
    model, optimizer = _base.model, _base.optimizer  # (and dataloader, lr_multiplier, train)

    # the backbone swap: non-local blocks after res3, res4, res5 of the config's ResNet
    model.backbone.bottom_up = with_wnlb_blocks(model.backbone.bottom_up, stages=["res3", "res4", "res5"])
    # w without weight decay, its learning rate (and the blocks') scaled
    optimizer.params = L(wnlb_param_groups)(base_lr="${..lr}", weight_decay_norm=0.0, wnlb_weight_lr_factor=1.0)

and, in ``tools/lazyconfig_train_net.py`` (which builds its hooks itself and has no option for
more), one line in the list given to ``trainer.register_hooks``, before the writers, to log w per
stage as ``wnlb/w_<stage>`` (metrics.json, TensorBoard)::

    from wnlb_d2.engine.hooks import WNLBWeightLogger
    ...
            hooks.IterationTimer(),
            WNLBWeightLogger(),
"""

import logging

from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params, reduce_param_groups

from .engine.hooks import WNLBWeightLogger
from .modeling.backbone.wnlb_resnet import WNLBResNet
from .naming import FUSION_WEIGHT
from .utils.optim import scale_block_lrs

__all__ = ["WNLBResNet", "WNLBWeightLogger", "with_wnlb_blocks", "wnlb_param_groups"]

logger = logging.getLogger(__name__)


def with_wnlb_blocks(resnet, **block_args):
    """The LazyConfig node of ``resnet`` with non-local blocks: ``L(WNLBResNet.wrap)(resnet=...)``.

    It also sets ``out_features`` to the ResNet's (``${.resnet.out_features}``), so that FPN's
    ``in_features="${.bottom_up.out_features}"`` in detectron2's configs keeps resolving. The
    ResNet's own settings (depth, norm, freeze_at) then live under ``bottom_up.resnet``.

    Args:
        resnet (DictConfig): the config's ResNet node, e.g. ``model.backbone.bottom_up``.
        **block_args: keyword arguments of :meth:`WNLBResNet.wrap` (``stages``, ``mode``,
            ``fusion``, ``norm``, ``weight_init``, ...).

    Returns:
        DictConfig: a node that instantiates to a :class:`WNLBResNet`.
    """
    if "out_features" in resnet and "out_features" not in block_args:
        block_args["out_features"] = "${.resnet.out_features}"
    return L(WNLBResNet.wrap)(resnet=resnet, **block_args)


def wnlb_param_groups(
    model, *, base_lr=None, wnlb_lr_factor=1.0, wnlb_weight_lr_factor=1.0, wnlb_weight_decay=0.0,
    overrides=None, **kwargs,
):
    """detectron2's ``get_default_optimizer_params``, with the non-local blocks' policy.

    The fusion weights w get ``weight_decay = wnlb_weight_decay`` (0: decay would pull w, a
    gate between the block's path and the identity, towards 0 for no reason of the data) through
    ``overrides``; every block parameter's learning rate is multiplied by ``wnlb_lr_factor`` and
    w's, on top, by ``wnlb_weight_lr_factor`` (``SOLVER.WNLB_LR_FACTOR`` and
    ``SOLVER.WNLB_WEIGHT_LR_FACTOR`` of the yacs trainer). Works with detectron2 v0.6 and main.

    Args:
        model (nn.Module): set by ``lazyconfig_train_net.py`` (``cfg.optimizer.params.model``).
        base_lr (float or None): the optimizer's lr; needed when a factor is not 1, since a group's
            lr is then its own (in a config: ``base_lr="${..lr}"``).
        wnlb_lr_factor (float): multiplies the lr of every non-local block parameter.
        wnlb_weight_lr_factor (float): multiplies, on top, the lr of the fusion weights w.
        wnlb_weight_decay (float or None): weight decay of w; None leaves it to ``overrides`` or
            the optimizer's.
        overrides (dict or None): as ``get_default_optimizer_params``; its ``fusion_weight``
            entry, if any, wins over ``wnlb_weight_decay``.
        **kwargs: the other arguments of ``get_default_optimizer_params`` (``weight_decay_norm``,
            ``bias_lr_factor``, ...; ``lr_factor_func`` exists on detectron2 main only).

    Returns:
        list[dict]: parameter groups for a torch optimizer.

    Raises:
        ValueError: a factor is not 1 but ``base_lr`` is not given.
    """
    overrides = {name: dict(values) for name, values in (overrides or {}).items()}
    if wnlb_weight_decay is not None:
        overrides[FUSION_WEIGHT] = {"weight_decay": float(wnlb_weight_decay), **overrides.get(FUSION_WEIGHT, {})}
    groups = get_default_optimizer_params(model, base_lr=base_lr, overrides=overrides, **kwargs)
    if (wnlb_lr_factor != 1.0 or wnlb_weight_lr_factor != 1.0) and base_lr is None:
        raise ValueError(
            f"wnlb_param_groups(wnlb_lr_factor={wnlb_lr_factor}, wnlb_weight_lr_factor={wnlb_weight_lr_factor}) "
            "needs base_lr (in a LazyConfig: base_lr='${..lr}')"
        )
    scaled = scale_block_lrs(groups, model, wnlb_lr_factor, wnlb_weight_lr_factor, base_lr=base_lr)
    return reduce_param_groups(scaled)
