"""Training hooks of wnlb_d2."""

import contextlib
import functools
import logging
import math
import sys

from detectron2.engine import HookBase

from ..layers import NonLocalBlock2d

__all__ = ["WNLBWeightLogger", "LogFileWatch", "wnlb_weights"]


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


def _log_file(handler):
    """The path a logging handler writes to, or None for the terminal and other streams."""
    name = getattr(getattr(handler, "stream", None), "name", None)
    if isinstance(handler, logging.StreamHandler) and isinstance(name, str) and not name.startswith("<"):
        return name
    return None


class LogFileWatch(HookBase):
    """Ends training at the first failed write of a log file (``log.txt``), with an error naming it.

    :mod:`logging` reports a handler's failed write by printing a traceback ("--- Logging
    error ---") and goes on: on a full disk every later line of the run prints one more, and the
    run ends as a success with a truncated log. While training runs, this hook takes over that
    report for the file handlers of ``loggers``: the first failure is kept, the file is closed (its
    unwritable buffer dropped, so nothing fails again at exit) and its handlers detached (the
    terminal still shows every line), and the error is raised after the step, or at the end of
    training for lines logged by the other hooks' ``after_train`` (the final evaluation).

    Put it last among the hooks, so that its checks follow every other hook's writes.

    Attributes:
        error (OSError or None): the first failed write, naming the file.
    """

    def __init__(self, loggers=("detectron2", "fvcore", "wnlb_d2")):
        self._logger_names = tuple(loggers)
        self._watched = []  # (logger, handler)
        self._raised = False
        self.error = None

    def before_train(self):
        self.start()

    def start(self):
        """Take over the reports of failed log writes (the trainer calls it before its first log
        line; again from :meth:`before_train`, which changes nothing then)."""
        for name in self._logger_names:
            log = logging.getLogger(name)
            for handler in list(log.handlers):
                if _log_file(handler) is not None and (log, handler) not in self._watched:
                    # An instance attribute: logging calls self.handleError(record) on a failed emit.
                    handler.handleError = functools.partial(self._failed_emit, handler)
                    self._watched.append((log, handler))

    def after_step(self):
        self.check()

    def after_train(self):
        self.stop()
        self.check()

    def stop(self):
        """Give the reports of failed log writes back to :mod:`logging`."""
        for _, handler in self._watched:
            handler.__dict__.pop("handleError", None)
        self._watched = []

    def check(self):
        """Raise the failed write of a log file, if there was one (once)."""
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def _failed_emit(self, handler, record):
        e = sys.exc_info()[1]
        if self.error is None and isinstance(e, OSError):
            self.error = OSError(e.errno, e.strerror or str(e), e.filename or _log_file(handler))
            self._stop_writing(handler.stream)
        elif self.error is None:  # not a failed write (e.g. a bad format string): logging's report
            logging.Handler.handleError(handler, record)

    def _stop_writing(self, stream):
        # Every handler of this file (detectron2 shares one stream between its loggers).
        for log, handler in self._watched:
            if handler.stream is stream:
                log.removeHandler(handler)
        with contextlib.suppress(OSError, ValueError):
            stream.close()  # closes the file even though flushing its buffer fails
