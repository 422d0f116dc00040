"""Training's failed writes as one line naming the file: checkpoints, event writers, the loop's log.

A full disk or a refused write while training must end the run with one line that says which
file and why (``train_net.py`` prints it), not with a cascade of tracebacks; see
:class:`wnlb_d2.engine.LowLightTrainer` for where each piece is used.
"""

import contextlib
import errno
import logging
import os
import shutil
import threading

from detectron2.utils.events import EventWriter

from ..checkpoint import WNLBCheckpointer
from ..utils.io import writing

__all__ = ["TrainingCheckpointer", "FileNamingWriter", "OneLineWriteErrors", "quiet_tensorboard_writer_threads"]


def _torch_write_failure(e):
    """Whether a RuntimeError of ``torch.save`` is its file writer failing (disk full ...).

    torch's C++ writer turns the system error into a RuntimeError without errno
    ("PytorchStreamWriter failed writing file", "unexpected pos", "iostream error").
    """
    while e is not None:
        text = str(e)
        if isinstance(e, RuntimeError) and any(
            w in text for w in ("PytorchStreamWriter", "inline_container", "iostream", "file write failed")
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


class TrainingCheckpointer(WNLBCheckpointer):
    """:class:`WNLBCheckpointer` whose failed saves are :class:`OSError` naming the file.

    The save is atomic (``atomic_write``: the temporary is removed on failure, the previous
    checkpoint and ``last_checkpoint`` stay as they were); this only makes the error say which
    file could not be written, and why, in one line.
    """

    def save(self, name, **kwargs):
        path = os.path.join(self.save_dir, f"{name}.pth")
        try:
            with writing(path):
                return super().save(name, **kwargs)
        except RuntimeError as e:
            if not _torch_write_failure(e):
                raise
            raise self._write_error(path, e) from e

    def tag_last_checkpoint(self, last_filename_basename):
        with writing(os.path.join(self.save_dir, "last_checkpoint")):
            return super().tag_last_checkpoint(last_filename_basename)

    def _write_error(self, path, e):
        # torch says "unexpected pos 2963456 vs 2963352": say whether the disk is full instead.
        weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
        if free < weights:
            reason = f"{os.strerror(errno.ENOSPC)} (the weights alone take {weights / 2**20:.1f} MiB)"
            return OSError(errno.ENOSPC, reason, path)
        detail = (str(e).strip().splitlines() or [""])[0]
        return OSError(errno.EIO, f"torch could not write it ({detail}); {free / 2**20:.0f} MiB are free", path)


def _event_writer_file(writer):
    """The file (metrics.json) or folder (TensorBoard's) an event writer writes, or None."""
    handle = getattr(writer, "_file_handle", None)  # JSONWriter
    if handle is not None:
        return getattr(handle, "name", None)
    args = getattr(writer, "_writer_args", None)  # TensorboardXWriter of detectron2 main
    if isinstance(args, dict):
        return args.get("log_dir")
    summary = vars(writer).get("_writer")  # v0.6 (vars: main makes it on first access)
    return getattr(summary, "log_dir", None)


def quiet_tensorboard_writer_threads():
    """Let TensorBoard's writer thread fail without printing a traceback of its own.

    A failed write (disk full) ends TensorBoard's background thread, whose exception the
    ``threading`` module prints in full; TensorBoard raises the same error again in the thread
    that writes next (there :class:`FileNamingWriter` names the file), so that print is only
    noise. Other threads' exceptions are printed as before. Installed once per process.
    """
    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard", False):
        return

    def excepthook(args):
        if isinstance(args.exc_value, OSError) and type(args.thread).__module__.startswith("tensorboard."):
            return
        previous(args)

    excepthook.quiet_tensorboard = True
    threading.excepthook = excepthook


class FileNamingWriter(EventWriter):
    """An event writer (metrics.json, TensorBoard) whose failed writes are :class:`OSError` naming
    its file. After a failure it is closed, dropping what it could not write, and does nothing
    more: the failure path writes no second error, and nothing fails again at exit."""

    def __init__(self, writer):
        self._writer = writer
        self._failed = False
        self.path = _event_writer_file(writer)

    def write(self):
        if self._failed:
            return
        try:
            with writing(self.path):
                self._writer.write()
        except OSError:
            self._failed = True
            with contextlib.suppress(OSError, ValueError):
                self._writer.close()
            raise

    def close(self):
        if not self._failed:
            with writing(self.path):
                self._writer.close()


class OneLineWriteErrors(logging.Filter):
    """detectron2's training loop logs every exception with its traceback ("Exception during
    training:"); for a failed write (disk full, permission), one line naming the file says it all."""

    def filter(self, record):
        e = record.exc_info[1] if record.exc_info else None
        if isinstance(e, OSError):
            record.msg, record.args = f"{record.getMessage()} {type(e).__name__}: {e}", ()
            record.exc_info = record.exc_text = None
        return True
