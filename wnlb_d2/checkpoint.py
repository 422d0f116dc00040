"""Loading stock detectron2 checkpoints into wNLB models, with a one-line account of it."""

import logging

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["WNLBCheckpointer", "is_wnlb_key"]

logger = logging.getLogger(__name__)


def is_wnlb_key(key):
    """Whether a state-dict key belongs to a non-local block added by wnlb_d2."""
    return ".wnlb." in f".{key}"


def _block_names(keys):
    # "backbone.bottom_up.wnlb.res3.g.weight" -> "backbone.bottom_up.wnlb.res3"
    names = []
    for k in keys:
        head, _, rest = f".{k}".partition(".wnlb.")
        name = f"{head[1:]}.wnlb.{rest.split('.')[0]}".lstrip(".")
        if name not in names:
            names.append(name)
    return names


class WNLBCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` that says in one line what a checkpoint gave a wNLB model.

    Loading a stock checkpoint (a detectron2 ``.pth``, a model-zoo ``.pkl`` or URL) into a model
    with non-local blocks leaves exactly the blocks' tensors missing. fvcore logs those keys
    among any other problem; this adds one INFO line that says how many tensors were loaded,
    whether every checkpoint tensor was used, and which blocks are new, and a WARNING when
    anything other than wNLB tensors was missing, unused or of the wrong shape.
    """

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        # BatchNorm's num_batches_tracked counters are bookkeeping, not weights, and torch fills
        # them in silently when a checkpoint lacks them: leave them out of every count.
        model_keys = [k for k in self.model.state_dict() if not k.endswith("num_batches_tracked")]
        missing = set(incompatible.missing_keys)
        wrong_shape = {k for k, *_ in incompatible.incorrect_shapes}
        new_wnlb = [k for k in model_keys if k in missing and is_wnlb_key(k)]
        other_missing = sorted(missing - set(new_wnlb))
        loaded = len(model_keys) - len(missing) - len(wrong_shape)
        unused = list(incompatible.unexpected_keys) + sorted(wrong_shape)
        msg = f"Checkpoint loaded {loaded}/{len(model_keys)} model tensors; "
        msg += "every checkpoint tensor was used; " if not unused else f"{len(unused)} checkpoint tensors unused; "
        if new_wnlb:
            msg += (
                f"{len(new_wnlb)} wNLB tensors are new and keep their initialisation: "
                + ", ".join(_block_names(new_wnlb))
            )
        else:
            msg += "no wNLB tensor is new"
        logger.info(msg)
        if other_missing or unused:
            logger.warning(
                "Checkpoint does not match the model beyond the wNLB blocks: "
                f"missing {other_missing[:10]}{' ...' if len(other_missing) > 10 else ''}, "
                f"unused or wrong shape {unused[:10]}{' ...' if len(unused) > 10 else ''}"
            )
        return incompatible
