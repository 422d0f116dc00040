"""Learning-rate factors per parameter, shared by the detectron2 and the Ultralytics optimizers."""

__all__ = ["group_by_lr_factor"]


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
