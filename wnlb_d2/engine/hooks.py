"""Training hooks of wnlb_d2."""

import math

from detectron2.engine import HookBase

from ..layers import NonLocalBlock2d

__all__ = ["WNLBWeightLogger", "wnlb_weights"]


def wnlb_weights(model):
    """The fusion weight w of every weighted non-local block.

    Args:
        model (nn.Module): a model, possibly wrapped in DistributedDataParallel.

    Returns:
        dict[str, float]: e.g. ``{"res3": 0.12, "res4": 0.08}`` (stage name -> w).
    """
    model = getattr(model, "module", model)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, NonLocalBlock2d) and m.fusion == "weighted":
            out[name.rsplit(".", 1)[-1]] = float(m.fusion_weight.detach())
    return out


class WNLBWeightLogger(HookBase):
    """Puts ``wnlb/w_<stage>`` into the event storage after every step.

    detectron2's writers then record it every ``period`` iterations in ``metrics.json`` and
    TensorBoard, so the user sees how much each scale denoises as training goes.
    """

    def after_step(self):
        for stage, w in wnlb_weights(self.trainer.model).items():
            if not math.isfinite(w):
                raise FloatingPointError(f"wNLB weight w of {stage} became {w} at iteration {self.trainer.iter}")
            self.trainer.storage.put_scalar(f"wnlb/w_{stage}", w, smoothing_hint=False)
