"""Reading and writing the learned enhancers' weights files: the steps their formats share.

Each enhancer keeps what is its own (RetinexFormer's BasicSR ``{"params": ...}``, AGLLNet's
Keras .h5, EnlightenGAN's DataParallel keys, the key and shape checks against its network);
the file checks, ``torch.load``, the common wrappers and the atomic write are here, so every
enhancer refuses a bad file in the same one-line form::

    <What> weights file not found: '<path>' (<hint>)
    Cannot read <What> weights '<path>': <ErrorType>: <first line>; <expected>
    <What> weights '<path>': got a <type> that is not a state dict of tensors; <expected>
"""

import contextlib
import os

import torch

from ..utils.io import atomic_write

__all__ = ["one_line", "listed", "check_weights_file", "read_torch_file", "state_dict_of_tensors",
           "state_dict_differences", "weights_output", "save_torch_file"]


def one_line(e):
    """``Type: first line of the message`` (torch.load's errors run over many lines)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def listed(items, n):
    """The first ``n`` of ``items`` as a list literal, `` ...`` after it when there are more."""
    return f"{items[:n]}{' ...' if len(items) > n else ''}"


def _tail(expected):
    return f"; {expected}" if expected else ""


def check_weights_file(path, what, error_cls, hint):
    """Raise ``error_cls`` naming ``path`` unless it is a file.

    Args:
        path (str): the weights file.
        what (str): the method's name in messages, e.g. ``"Zero-DCE++"``.
        error_cls (type): the method's error (a ``ValueError`` subclass).
        hint (str): what the file should be or where to get one (in parentheses).
    """
    if not os.path.isfile(path):
        raise error_cls(f"{what} weights file not found: {path!r} ({hint})")


def read_torch_file(path, what, error_cls, hint, expected=""):
    """``torch.load`` a weights file (CPU, ``weights_only``), refusing a bad one in one line.

    Args:
        path (str): the ``.pth`` file.
        what, error_cls, hint: as :func:`check_weights_file`.
        expected (str): appended to a read error after "; " (what the file should be), or "".

    Returns:
        object: what the file holds (a state dict or a wrapper of one; not yet checked).

    Raises:
        error_cls: the file is missing or ``torch.load`` fails on it (pickle, zip and torch
            errors alike); the message names the file and the error's first line.
    """
    check_weights_file(path, what, error_cls, hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike
        raise error_cls(f"Cannot read {what} weights {path!r}: {one_line(e)}{_tail(expected)}") from e


def state_dict_of_tensors(obj, path, what, error_cls, expected="", *, wrappers=("state_dict", "model"),
                          allow_empty=False):
    """The state dict in what a weights file held, without DataParallel's ``module.`` prefix.

    Args:
        obj (object): what :func:`read_torch_file` returned.
        path, what, error_cls, expected: as :func:`read_torch_file` (for the message).
        wrappers (tuple[str]): keys of a training checkpoint's dict whose dict value is taken
            instead of ``obj`` (the first present); ``()`` for a method whose files are bare.
        allow_empty (bool): pass an empty dict on (the caller's key check names what is missing)
            instead of refusing it here.

    Returns:
        dict[str, Tensor]: the state dict; when every key starts with ``module.``, without it.

    Raises:
        error_cls: ``obj`` is not a dict of tensors (or is empty and ``allow_empty`` is False).
    """
    if isinstance(obj, dict):
        for key in wrappers:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or (not obj and not allow_empty) or \
            not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise error_cls(f"{what} weights {path!r}: got a {type(obj).__name__} that is not a state dict of tensors"
                        f"{_tail(expected)}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def state_dict_differences(own, state, optional=()):
    """How a file's state dict differs from a network's.

    Args:
        own (dict[str, Tensor]): the network's ``state_dict()``.
        state (dict[str, Tensor]): the file's.
        optional (set[str]): keys of ``own`` that the file may lack.

    Returns:
        tuple[list[str], list[str], list[str]]: sorted missing keys, unexpected keys, and
        ``"key: file (shape) vs model (shape)"`` for the keys of both whose shapes differ.
    """
    missing = sorted(set(own) - set(state) - set(optional))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(state) if state[k].shape != own[k].shape)
    return missing, unexpected, wrong


@contextlib.contextmanager
def weights_output(path):
    """Context manager yielding a temporary path to write weights to; renamed to ``path`` on success.

    The folder of ``path`` is created; a failed write leaves ``path`` as it was
    (:func:`wnlb_d2.utils.io.atomic_write`).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as tmp:
        yield tmp


def save_torch_file(obj, path):
    """``torch.save(obj)`` to ``path`` atomically (its folder created); returns ``path``."""
    with weights_output(path) as tmp:
        torch.save(obj, tmp)
    return path
