"""Learning-rate factors per parameter, shared by the detectron2 and the Ultralytics optimizers."""

__all__ = ["group_by_lr_factor", "scale_block_lrs"]


def group_by_lr_factor(params, factors):
    """Split one optimizer group's parameters by their learning-rate factor, keeping their order.

    Args:
        params (iterable[Tensor]): the group's parameters.
        factors (dict[int, float]): ``id(param) -> factor``; a parameter not in it has factor 1.

    Returns:
        dict[float, list[Tensor]]: factor -> its parameters, the factors in first-seen order.
    """
    by_factor = {}
    for p in params:
        by_factor.setdefault(factors.get(id(p), 1.0), []).append(p)
    return by_factor


def scale_block_lrs(groups, model, wnlb_lr_factor=1.0, wnlb_weight_lr_factor=1.0, base_lr=None):
    """detectron2 parameter groups with the non-local blocks' learning rates scaled.

    Each group is split, keeping its order and its other settings, into its parameters of
    factor 1 and a copy per other factor whose ``lr`` is the group's (or ``base_lr``) times that
    factor; detectron2's schedulers scale every group from its own initial lr, so the factor
    holds for the whole run.

    Args:
        groups (list[dict]): from ``get_default_optimizer_params``.
        model (nn.Module): the model the groups' parameters belong to.
        wnlb_lr_factor (float): multiplies the lr of every parameter of a non-local block.
        wnlb_weight_lr_factor (float): multiplies, on top, the lr of the blocks' fusion weights w.
        base_lr (float or None): the lr of groups that carry none.

    Returns:
        list[dict]: the groups (``groups`` itself when both factors are 1).
    """
    from ..naming import is_fusion_weight_key, is_wnlb_key

    if wnlb_lr_factor == 1.0 and wnlb_weight_lr_factor == 1.0:
        return groups
    factors = {id(p): wnlb_lr_factor * (wnlb_weight_lr_factor if is_fusion_weight_key(n) else 1.0)
               for n, p in model.named_parameters() if is_wnlb_key(n)}
    out = []
    for group in groups:
        for factor, params in group_by_lr_factor(group["params"], factors).items():
            scaled = {} if factor == 1.0 else {"lr": group.get("lr", base_lr) * factor}
            out.append({**group, "params": params, **scaled})
    return out
