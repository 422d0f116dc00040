"""Loading stock detectron2 checkpoints into wNLB models, with a one-line account of it."""

import logging
import os
import re
import zipfile

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from .naming import block_names, is_wnlb_key
from .utils.io import atomic_write, atomic_write_text, is_temporary
from .utils.io import remove_stale_temporaries as _remove_stale

__all__ = ["WNLBCheckpointer", "CheckpointMismatchError", "CheckpointReadError", "check_checkpoint_path",
           "checkpoint_read_error", "remove_stale_temporaries", "read_model_state_dict", "wnlb_layout_of_checkpoint",
           "architecture_of_keys", "is_head_key", "is_foreign_head_key"]

logger = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: its backbone (another depth, or not a detection
    model), or its heads (those of another meta-architecture)."""


class CheckpointReadError(ValueError):
    """A checkpoint cannot be read (missing, empty, truncated, not a checkpoint, not downloadable)
    or holds weights that are not finite."""


def check_checkpoint_path(path):
    """Raise :class:`CheckpointReadError` when a local checkpoint path names no usable file.

    URLs (``detectron2://``, ``https://`` ...) are left to the download.

    Args:
        path (str): ``MODEL.WEIGHTS`` or a checkpoint path.
    """
    if not path or "://" in path:
        return
    if os.path.isdir(path):
        raise CheckpointReadError(f"Checkpoint {path!r} is a folder; expected a .pth or .pkl file")
    if not os.path.exists(path):
        raise CheckpointReadError(f"Checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointReadError(f"Checkpoint {path!r} is empty (0 bytes): a failed copy or download?")


def _reason(e):
    # What went wrong, in words and on one line; the exception's own text as the detail.
    detail = (str(e).strip().splitlines() or [""])[0][:200]
    from urllib.error import URLError

    if isinstance(e, URLError):
        return f"could not be downloaded (no network, or a wrong URL?): {detail}"
    if isinstance(e, PermissionError):
        return "permission denied (the file is not readable by this user)"
    if isinstance(e, OSError):
        # The file is there but reading it failed (I/O error, a folder in the way ...): say so,
        # rather than blaming the content.
        return f"it cannot be read ({e.strerror or type(e).__name__})"
    if isinstance(e, EOFError) or "Ran out of input" in detail:
        return "the file ends early (truncated?)"
    if "zip archive" in detail or "central directory" in detail or isinstance(e, zipfile.BadZipFile):
        return f"not a complete torch checkpoint (truncated or corrupt: {detail})"
    # torch's and pickle's unpicklers fail on other bytes in many ways (UnpicklingError,
    # IndexError, KeyError ...): they all mean the same to the user.
    return f"it is not a torch or pickle checkpoint ({type(e).__name__}: {detail})"


def checkpoint_read_error(path, e):
    """:class:`CheckpointReadError` that names ``path`` and says in one line what ``e`` means."""
    return CheckpointReadError(f"Checkpoint {path!r} cannot be loaded: {_reason(e)}")


#: Top-level modules of the heads of detectron2's meta-architectures and of SOLOv2 (this
#: package), for naming the architecture a checkpoint comes from.
_HEAD_MODULES = ("proposal_generator", "roi_heads", "instance_head", "mask_head", "sem_seg_head")
#: RetinaNet's head is a module named ``head``; a classifier of an ImageNet checkpoint may be too
#: (pycls ``head.fc``, timm ``head``): only these sub-modules make it RetinaNet's.
_RETINANET_HEAD = ("head.cls_subnet.", "head.bbox_subnet.", "head.cls_score.", "head.bbox_pred.")
#: Modules of the classifiers of ImageNet checkpoints (torchvision ``fc``, Caffe2 ``fc1000``,
#: pycls / timm ``head`` ...; detectron2's torchvision converter files ``fc`` as ``stem.fc``):
#: left over when such a backbone initialises a detector, and no head of another detector.
_CLASSIFIER_MODULES = ("fc", "fc1000", "linear", "classifier", "last_linear", "logits", "head")
#: Top-level modules of classification backbones whose leftovers are no head either.
_BACKBONE_MODULE = re.compile(r"^(stem|conv1|bn1|features|layer\d+|res\d+|s\d+)$")
#: A model that gets fewer than this fraction of its head tensors from a checkpoint that holds
#: another detector's heads was given weights of another architecture.
_MIN_HEAD_FRACTION = 0.1


def _top_module(key):
    return key.split(".", 1)[0]


def is_head_key(key):
    """Whether a state-dict key belongs to a detector's head (anything but the backbone, the
    non-local blocks and BatchNorm's bookkeeping)."""
    return not key.startswith("backbone.") and not is_wnlb_key(key) and not key.endswith("num_batches_tracked")


def is_foreign_head_key(key):
    """Whether a checkpoint key the model did not take is a detector head's tensor.

    Keys without a module path (Caffe2 blob names, ``pixel_mean``), the classifiers of ImageNet
    checkpoints (:data:`_CLASSIFIER_MODULES`) and stray backbone stages (``stem``, ``res5`` ...)
    are not: they are what a classification backbone brings along.
    """
    if not is_head_key(key) or "." not in key:
        return False
    if key.startswith(_RETINANET_HEAD) or _top_module(key) in _HEAD_MODULES:
        return True
    modules = key.split(".")[:-1]
    return not _BACKBONE_MODULE.match(modules[0]) and not any(m in _CLASSIFIER_MODULES for m in modules)


def architecture_of_keys(keys):
    """The meta-architecture that state-dict keys come from, in words, or None if unknown.

    Examples: ``roi_heads.mask_head.*`` -> ``"Mask R-CNN (GeneralizedRCNN)"``,
    ``instance_head.*`` -> ``"SOLOv2"``, ``head.cls_subnet.*`` -> ``"RetinaNet"``.

    Args:
        keys (Iterable[str]): state-dict keys (a model's or a checkpoint's).

    Returns:
        str or None
    """
    keys = list(keys)
    tops = {_top_module(k) for k in keys}
    if "instance_head" in tops:
        return "SOLOv2"
    if any(k.startswith(_RETINANET_HEAD) for k in keys):
        return "RetinaNet"
    if "roi_heads" in tops:
        if any(k.startswith("roi_heads.keypoint_head.") for k in keys):
            kind = "Keypoint R-CNN"
        elif any(k.startswith("roi_heads.mask_head.") for k in keys):
            kind = "Mask R-CNN"
        else:
            kind = "Faster R-CNN"
        return f"{kind} ({'PanopticFPN' if 'sem_seg_head' in tops else 'GeneralizedRCNN'})"
    if "proposal_generator" in tops:
        return "RPN (ProposalNetwork)"
    if "sem_seg_head" in tops:
        return "SemanticSegmentor"
    return None


def _describe_checkpoint_heads(keys):
    # The architecture in words, else the head modules the keys sit in.
    name = architecture_of_keys(keys)
    if name:
        return name
    modules = sorted({_top_module(k) for k in keys})
    return f"another architecture (its heads: {', '.join(m + '.*' for m in modules[:5])})"


def remove_stale_temporaries(folder):
    """Remove the half-written checkpoints of processes that are gone (and any other temporary
    of :func:`wnlb_d2.utils.io.atomic_write` they left in ``folder``).

    A run killed during :meth:`WNLBCheckpointer.save` leaves its temporary file (up to a whole
    checkpoint) beside the real ones; nothing else ever removes it. Files of live processes on
    this machine are kept (they may be saving right now).

    Args:
        folder (str): the checkpoint folder (``OUTPUT_DIR``).

    Returns:
        list[str]: the names removed.
    """
    if not folder or not os.path.isdir(folder):
        return []
    sizes = {}
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if is_temporary(name) is not None and os.path.isfile(path):
            sizes[name] = os.path.getsize(path)
    removed = sorted(os.path.basename(p) for p in _remove_stale(folder))
    if removed:
        size = sum(sizes.get(n, 0) for n in removed)
        logger.info(
            f"Removed {len(removed)} stale checkpoint temporaries of dead processes from {folder} "
            f"({size / 2**20:.1f} MiB): {', '.join(removed)}"
        )
    return removed


class WNLBCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` that says in one line what a checkpoint gave a wNLB model.

    Loading a stock checkpoint (a detectron2 ``.pth``, a model-zoo ``.pkl`` or URL) into a model
    with non-local blocks leaves exactly the blocks' tensors missing. fvcore logs those keys
    among any other problem; this adds one INFO line that says how many tensors were loaded,
    whether every checkpoint tensor was used, and which blocks are new, and a WARNING when
    anything other than wNLB tensors was missing, unused or of the wrong shape.

    It also saves atomically (temporary file + rename, for the checkpoint and the
    ``last_checkpoint`` tag) and refuses to save weights that are not finite.

    Args:
        strict_backbone (bool): raise :class:`CheckpointMismatchError` when the checkpoint does
            not fit the model: it gives none of the bottom-up ResNet's tensors, or some of them
            with the wrong shape; it holds non-local blocks the model lacks; or it holds the
            heads of another meta-architecture and (almost) none of the model's (a SOLOv2
            checkpoint into a Mask R-CNN: the heads would keep their random initialisation).
            Still fine: heads of another class count (fvcore skips them with a warning), a
            classification backbone without any head (the heads initialise), a stock
            checkpoint into a model with non-local blocks (the blocks initialise).
        other arguments: as :class:`DetectionCheckpointer`.
    """

    def __init__(self, model, save_dir="", *, strict_backbone=False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.strict_backbone = strict_backbone
        self._loading = None

    def load(self, path, *args, **kwargs):
        """Same as :meth:`DetectionCheckpointer.load`, with one-line errors that name the file.

        Raises:
            CheckpointReadError: the file is missing, empty, truncated, not a checkpoint, cannot
                be downloaded, or holds NaN/Inf weights (nothing is loaded into the model).
            CheckpointMismatchError: with ``strict_backbone``, the checkpoint does not fit.
        """
        if not path:
            return super().load(path, *args, **kwargs)  # fvcore: "initializing from scratch"
        check_checkpoint_path(path)
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        except (CheckpointReadError, CheckpointMismatchError):
            raise
        except Exception as e:  # fvcore/torch/pickle/urllib errors do not say which file
            raise checkpoint_read_error(path, e) from e
        finally:
            self._loading = None

    def save(self, name, **kwargs):
        """Same as :meth:`fvcore.common.checkpoint.Checkpointer.save`, but atomic and checked.

        Raises:
            FloatingPointError: a model tensor holds NaN or Inf (nothing is written).
        """
        if not self.save_dir or not self.save_to_disk:
            return
        bad = [k for k, v in self.model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise FloatingPointError(
                f"Refusing to save checkpoint {name!r}: {len(bad)} model tensors hold NaN/Inf "
                f"(first: {bad[:3]}); the previous checkpoints in {self.save_dir} are kept."
            )
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        # Written beside the target and renamed: a run killed mid-save never leaves a broken file
        # under the real name, and the previous checkpoint stays intact until the new one is whole.
        with atomic_write(save_file) as tmp:
            torch.save(data, tmp)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def _check_backbone(self, model_keys, missing, wrong_shape):
        resnet = [k for k in model_keys if ".bottom_up." in f".{k}" and not is_wnlb_key(k)]
        if not resnet:
            resnet = [k for k in model_keys if k.startswith("backbone.") and not is_wnlb_key(k)]
        absent = [k for k in resnet if k in missing]
        shape = [k for k in resnet if k in wrong_shape]
        if resnet and (len(absent) == len(resnet) or shape):
            raise CheckpointMismatchError(
                f"Checkpoint {self._loading!r} does not match the model's backbone: "
                f"{len(absent)}/{len(resnet)} backbone tensors missing, {len(shape)} of the wrong shape "
                f"(e.g. {(shape or absent)[:3]}). Check MODEL.WEIGHTS against MODEL.RESNETS.DEPTH and "
                "the config the checkpoint was trained with."
            )

    def _model_architecture(self, model_keys):
        model = getattr(self.model, "module", self.model)  # DistributedDataParallel wraps it
        return architecture_of_keys(model_keys) or type(model).__name__

    def _check_heads(self, model_keys, missing, unexpected):
        """Raise :class:`CheckpointMismatchError` for the heads of another architecture.

        A checkpoint that gives (almost) none of the model's head tensors while holding another
        detector's head tensors comes from another meta-architecture: loading it would leave
        every head at its random initialisation (AP 0, exit 0).
        """
        if not any(k.startswith("backbone.") for k in model_keys):
            return  # no detectron2 layout: the heads cannot be told from the backbone
        heads = [k for k in model_keys if is_head_key(k)]
        foreign = [k for k in unexpected if is_foreign_head_key(k)]
        if not heads or not foreign:
            return  # no heads to fill, or a classification backbone: the heads initialise
        given = [k for k in heads if k not in missing]  # a wrong shape (class count) is given
        if len(given) >= _MIN_HEAD_FRACTION * len(heads):
            return
        source = _describe_checkpoint_heads(foreign)
        raise CheckpointMismatchError(
            f"Checkpoint {self._loading!r} holds the heads of {source} ({len(foreign)} tensors the "
            f"model cannot take, e.g. {foreign[:2]}), but the model is {self._model_architecture(model_keys)}: "
            f"it gives only {len(given)}/{len(heads)} of the model's head tensors (its heads would stay random). "
            "Use the config the checkpoint was trained with (MODEL.META_ARCHITECTURE), or weights of this architecture."
        )

    def _check_finite(self, checkpoint):
        state = checkpoint.get("model")
        if not isinstance(state, dict):
            raise CheckpointReadError(
                f"Checkpoint {self._loading!r} holds no state dict of tensors (its 'model' is a "
                f"{type(state).__name__})"
            )
        bad = []
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                finite = bool(torch.isfinite(v).all())
            elif isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
                finite = bool(np.isfinite(v).all())
            else:
                continue
            if not finite:
                bad.append(k)
        if bad:
            # Loaded, such weights give NaN scores and every AP is nan: refuse them up front.
            raise CheckpointReadError(
                f"Checkpoint {self._loading!r} holds NaN/Inf in {len(bad)} tensors (first: {bad[:3]}); "
                "refusing to load it"
            )

    def _load_model(self, checkpoint):
        self._check_finite(checkpoint)
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
        if self.strict_backbone:
            self._check_backbone(model_keys, missing, wrong_shape)
            self._check_heads(model_keys, missing, incompatible.unexpected_keys)
            dropped = [k for k in unused if is_wnlb_key(k)]
            if dropped:
                # The model lacks (or has other) blocks: loading would silently evaluate or
                # fine-tune a different model than the checkpoint's.
                raise CheckpointMismatchError(
                    f"Checkpoint {self._loading!r} holds non-local blocks the model cannot take "
                    f"({len(dropped)} wNLB tensors unused or of the wrong shape: {', '.join(block_names(dropped))}). "
                    "Set MODEL.BACKBONE.NAME to a wNLB backbone and MODEL.WNLB.STAGES / MODE to "
                    "those the checkpoint was trained with."
                )
        msg = f"Checkpoint loaded {loaded}/{len(model_keys)} model tensors; "
        msg += "every checkpoint tensor was used; " if not unused else f"{len(unused)} checkpoint tensors unused; "
        if new_wnlb:
            msg += (
                f"{len(new_wnlb)} wNLB tensors are new and keep their initialisation: "
                + ", ".join(block_names(new_wnlb))
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


def read_model_state_dict(path):
    """The model state dict in a checkpoint file, read as detectron2's checkpointer reads it.

    Public means only: detectron2 main asserts that ``DetectionCheckpointer._load_file`` is called
    from ``load`` alone. ``.pkl`` files (model zoo, Detectron1, pycls) are pickles with latin1
    strings holding ``model`` or ``blobs``; anything else is a ``torch.save`` file whose weights
    sit under ``model`` (DetectionCheckpointer) or at the top.

    Args:
        path (str): a local file, or anything detectron2's ``PathManager`` resolves.

    Returns:
        dict: key -> tensor or array.

    Raises:
        ValueError: the file cannot be read, or holds no state dict (the message names it).
    """
    import pickle

    from detectron2.utils.file_io import PathManager

    local = PathManager.get_local_path(path)
    try:
        if local.endswith(".pkl"):
            with PathManager.open(local, "rb") as f:
                data = pickle.load(f, encoding="latin1")
        else:
            with PathManager.open(local, "rb") as f:
                data = torch.load(f, map_location=torch.device("cpu"))
    except Exception as e:  # unreadable, truncated, not a checkpoint: say which file
        raise ValueError(f"Cannot read checkpoint {path!r}: {type(e).__name__}: {e}") from e
    for key in ("model", "blobs"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict):
        raise ValueError(f"Checkpoint {path!r} holds a {type(data).__name__}, not a state dict")
    return data


def wnlb_layout_of_checkpoint(path):
    """Which non-local blocks a checkpoint file holds (:func:`wnlb_d2.naming.wnlb_layout` of its keys).

    Returns:
        dict: ``{"stages": ["res3", ...], "mode": "concatenate" | "gaussian" | None}``.
    """
    from .naming import wnlb_layout

    return wnlb_layout(read_model_state_dict(path).keys())
