"""Steps the learned enhancers' training loops share: seeded initialisation, random batches, the
non-finite loss check, and the progress bar with its loss history and log lines.

Each loop keeps its own losses, optimisers and augmentations; these helpers make the same
generator calls in the same order as the loops did, so a seed gives the same batches.
"""

import contextlib
import logging

import torch
from tqdm import tqdm

__all__ = ["seeded", "random_batch", "check_finite", "TrainingProgress"]


@contextlib.contextmanager
def seeded(seed):
    """Run the block (a network's construction) with torch's global generator seeded by ``seed``.

    The caller's global random state is restored afterwards (``fork_rng``), so training a network
    does not change the draws of the code around it.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def random_batch(sets, batch_size, crop, gen, *, flip=False):
    """Draw a training batch: random images (with replacement), random crops, random flips.

    Aligned sets (a (dark, clean) pair) get the same images, crop windows and flips.

    Args:
        sets (list[Tensor]): one or more tensors ``(N, C, H, W)`` of one shape.
        batch_size (int): images per batch.
        crop (int): side of the random crop from each drawn image (<= H, W), or 0 for the whole images.
        gen (torch.Generator): the source of every draw, in this order: indices, crop rows, crop
            columns, flips.
        flip (bool): flip each image horizontally with probability 1/2.

    Returns:
        list[Tensor]: one batch per set, ``(batch_size, C, crop, crop)`` (``(batch_size, C, H, W)``
        with crop 0).
    """
    first = sets[0]
    idx = torch.randint(len(first), (batch_size,), generator=gen)
    batches = [t[idx] for t in sets]
    if crop:
        ys = torch.randint(first.shape[-2] - crop + 1, (batch_size,), generator=gen).tolist()
        xs = torch.randint(first.shape[-1] - crop + 1, (batch_size,), generator=gen).tolist()
        batches = [torch.stack([b[:, y:y + crop, x:x + crop] for b, y, x in zip(t, ys, xs)]) for t in batches]
    if flip:
        flips = (torch.rand(batch_size, generator=gen) < 0.5)[:, None, None, None]
        batches = [torch.where(flips, t.flip(-1), t) for t in batches]
    return batches


def check_finite(what, step, *losses):
    """Raise ``FloatingPointError`` unless every loss is finite.

    Args:
        what (str): the loss's name in the message, e.g. ``"Zero-DCE++ loss"``.
        step (int): the training step (0-based).
        losses (Tensor): scalar losses.

    Raises:
        FloatingPointError: ``"<what> became <values> at step <step>; lower --lr"``.
    """
    if not all(torch.isfinite(loss) for loss in losses):
        values = ", ".join(str(loss.item()) for loss in losses)
        raise FloatingPointError(f"{what} became {values} at step {step}; lower --lr")


class TrainingProgress:
    """A training loop's progress bar, per-step loss history and periodic log line.

    Iterate over it for the step numbers ``0 .. iters - 1``; call :meth:`record` once per step::

        progress = TrainingProgress("AGLLNet", iters, log_period=50, progress=True, logger=logger)
        for it in progress:
            ...
            progress.record(it, {"total": loss, "l1": l1})
        return model, progress.history

    Args:
        name (str): the bar's label and the log lines' first word, e.g. ``"Zero-DCE++"``.
        iters (int): number of steps.
        log_period (int): log the losses every this many steps and at the last (0: never).
        progress (bool): show the progress bar.
        logger (logging.Logger): where the lines go (the training module's own logger).
    """

    def __init__(self, name, iters, *, log_period=50, progress=True, logger=None):
        self.name = name
        self.iters = iters
        self.log_period = log_period
        self.logger = logger or logging.getLogger(__name__)
        self.history = []
        self._bar = tqdm(range(iters), desc=name, unit="it", disable=not progress)

    def __iter__(self):
        return iter(self._bar)

    def record(self, step, losses, *, postfix=None, log_suffix=""):
        """Append one step's losses to :attr:`history`, show them on the bar, log them when due.

        Args:
            step (int): the step (0-based).
            losses (dict[str, Tensor | float]): the step's named scalars; ``"total"`` is shown
                on the bar unless ``postfix`` is given.
            postfix (callable or None): ``values -> dict`` of what the bar shows instead.
            log_suffix (str): appended to the log line (e.g. the learning rate).

        Returns:
            dict[str, float]: the recorded values.
        """
        values = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}
        self.history.append(values)
        self._bar.set_postfix(postfix(values) if postfix else {"loss": f"{values['total']:.4f}"})
        if self.log_period and ((step + 1) % self.log_period == 0 or step == self.iters - 1):
            line = ", ".join(f"{k} {v:.4f}" for k, v in values.items())
            self.logger.info(f"{self.name} step {step + 1}/{self.iters}: {line}{log_suffix}")
        return values
