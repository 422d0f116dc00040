"""Writing files so that a killed process never leaves a half-written one, and cleaning up after it.

Every file the package writes (checkpoints, images, tables, manifests, pictures) goes through
:func:`atomic_write`: the data goes to a temporary name in the same folder, which is renamed
over the final name (``os.replace``, atomic on POSIX) only once it is complete. A temporary
left by a process that was killed is recognised by its name, which carries the writer's pid,
and :func:`remove_stale_temporaries` deletes those whose process is gone.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "temporary_name",
           "temporary_folder", "publish_folder", "is_temporary", "remove_stale_temporaries", "pid_alive", "remove_tree",
           "FolderLockedError", "folder_lock", "os_error_message", "writing", "main_reporting_os_errors"]

logger = logging.getLogger(__name__)

# ".<final name>.tmp.<pid><extension of the final name>": hidden, names its writer, and keeps the
# extension last so writers that choose the format by extension (cv2.imwrite, savefig) still work.
_TEMPORARY = re.compile(r"^\.(?P<final>.+)\.tmp\.(?P<pid>\d+)(?P<ext>\.[^.]*)?$")


def temporary_name(path, pid=None):
    """The temporary path :func:`atomic_write` uses for ``path`` in process ``pid`` (default: this one)."""
    folder, base = os.path.split(path)
    ext = os.path.splitext(base)[1]
    return os.path.join(folder, f".{base}.tmp.{os.getpid() if pid is None else pid}{ext}")


def temporary_folder(parent, name):
    """A new, empty folder ``.<name>.tmp.<pid>.<random>`` in ``parent``, to be renamed when complete.

    :func:`remove_stale_temporaries` recognises it like a temporary file.
    """
    return tempfile.mkdtemp(prefix=f".{name}.tmp.{os.getpid()}.", dir=parent)


def publish_folder(tmp, final):
    """Give a complete folder made in :func:`temporary_folder` its final name, atomically.

    Readers see either no ``final`` or the whole folder. When another process published a
    (non-empty) folder under that name first, ``tmp`` is left in place for the caller to
    remove, and False comes back.

    Args:
        tmp (str): the complete temporary folder.
        final (str): its final path, in the same parent folder.

    Returns:
        bool: True when ``tmp`` became ``final``; False when ``final`` existed already.

    Raises:
        OSError: any other failure of the rename.
    """
    try:
        os.replace(tmp, final)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and os.path.isdir(final):
            return False
        raise
    return True


def is_temporary(name):
    """Whether a file name is one of :func:`atomic_write`'s temporaries; returns its pid or None."""
    m = _TEMPORARY.match(os.path.basename(name))
    return int(m.group("pid")) if m else None


@contextlib.contextmanager
def atomic_write(path, durable=False):
    """Context manager yielding a temporary path to write; renamed to ``path`` on success.

    On an exception the temporary is removed and ``path`` is left as it was (the old file, or
    none), so a reader never sees a partial file. ``durable`` also flushes the file to disk
    before the rename, so that even a power cut (not only a killed process) leaves either the
    old state or the complete file.

    Example::

        with atomic_write("model.pth") as tmp:
            torch.save(state, tmp)

    Args:
        path (str): the final path; its folder must exist.

    Yields:
        str: the temporary path, in the same folder (same file system, so the rename is atomic).
    """
    tmp = temporary_name(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data, durable=False):
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write` for ``durable``)."""
    with atomic_write(path, durable=durable) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, **kwargs):
    """Write ``obj`` as JSON to ``path`` atomically (``kwargs`` go to ``json.dumps``)."""
    atomic_write_text(path, json.dumps(obj, **kwargs))


def pid_alive(pid):
    """Whether a process with this pid exists (on this machine)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder, recursive=False):
    """Delete the temporaries (files and folders) of :func:`atomic_write` and
    :func:`temporary_folder` whose writing process is gone.

    Args:
        folder (str): where to look (missing folders are fine).
        recursive (bool): also look in every sub-folder.

    Returns:
        list[str]: the paths removed (each is logged).
    """
    removed = []
    if not os.path.isdir(folder):
        return removed
    for root, dirs, files in os.walk(folder):
        for name in list(files) + list(dirs):
            pid = is_temporary(name)
            if pid is None or pid_alive(pid):
                continue
            path = os.path.join(root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(name)
                logger.info(f"Removed {path}/, left by process {pid} that is gone")
            else:
                with contextlib.suppress(FileNotFoundError):
                    size = os.path.getsize(path)
                    os.remove(path)
                    logger.info(f"Removed {path} ({size} bytes), left by process {pid} that is gone")
            removed.append(path)
        if not recursive:
            break
    return removed


def remove_tree(path):
    """Delete a file or a folder with everything in it (nothing when it is missing)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class FolderLockedError(RuntimeError):
    """Another process holds the lock of a folder (:func:`folder_lock`)."""


# Lock files this process holds: {real path: (open file, depth)}, so a nested folder_lock of the
# same folder (the runner inside the command that also draws pictures) does not lock itself out:
# flock locks belong to an open file, and a second open of the same file would conflict.
_HELD_LOCKS = {}


@contextlib.contextmanager
def folder_lock(folder, name=".lock"):
    """Hold an exclusive lock on ``folder`` for the duration of the block.

    The lock is ``fcntl.flock`` on ``<folder>/<name>``: the kernel releases it when the process
    ends, however it ends (kill -9 included), so a lock is never left stale. The file records its
    holder (pid, host, start time, command line), which a second process names in its error.
    Re-entrant within one process.

    Raises:
        FolderLockedError: another process holds the lock (the message names it).
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.realpath(os.path.join(folder, name))
    if path in _HELD_LOCKS:
        f, depth = _HELD_LOCKS[path]
        _HELD_LOCKS[path] = (f, depth + 1)
        try:
            yield
        finally:
            f, depth = _HELD_LOCKS[path]
            _HELD_LOCKS[path] = (f, depth - 1)
        return
    # "a+": never truncates the holder's record before the lock is ours.
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise FolderLockedError(f"{folder} is in use by {holder}; wait for it to finish or choose another folder") \
            from None
    try:
        # The lock file is rewritten in place (not renamed): the lock belongs to this file.
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {started} ({' '.join(sys.argv)})\n")
        f.flush()
        _HELD_LOCKS[path] = (f, 1)
        yield
    finally:
        _HELD_LOCKS.pop(path, None)
        with contextlib.suppress(OSError):
            f.seek(0)
            f.truncate()
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def os_error_message(e):
    """One line for an OSError of a write or read: what went wrong and with which file.

    ``OSError(ENOSPC, ..., "out/model.pth")`` -> ``"out/model.pth: No space left on device"``.
    """
    reason = e.strerror or str(e) or type(e).__name__
    names = [n for n in (e.filename, e.filename2) if n]
    return f"{' -> '.join(map(str, names))}: {reason}" if names else f"{type(e).__name__}: {reason}"


@contextlib.contextmanager
def writing(path):
    """Name ``path`` in an :class:`OSError` raised inside the block that names no file.

    A full disk shows at the flush of a buffered write, whose error carries no file name
    (``[Errno 28] No space left on device``); a one-line error has to say which file it was.
    Errors that name a file already, or carry no errno (an error with its own message), pass
    unchanged; so does everything when ``path`` is None.
    """
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None or path is None:
            raise
        raise OSError(e.errno, e.strerror or str(e), path) from e


def main_reporting_os_errors(tool, main, argv=None):
    """Run a command's ``main(argv)``; an OSError it does not handle itself (a full disk, a
    refused write, a missing file) ends the command with one line naming the file and the reason
    and exit status 1, instead of a traceback.

    Example (the end of a tool)::

        if __name__ == "__main__":
            from wnlb_d2.utils.io import main_reporting_os_errors
            sys.exit(main_reporting_os_errors("study_blocks.py", main))
    """
    try:
        return main(argv)
    except OSError as e:
        sys.exit(f"{tool}: error: {os_error_message(e)}")
