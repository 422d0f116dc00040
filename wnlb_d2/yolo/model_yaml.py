"""Model YAMLs with non-local blocks, generated from Ultralytics' stock YAMLs.

:func:`insert_nonlocal_blocks` takes a stock model (``"yolov8n-seg.yaml"``), the backbone
stages (``P3``, ``P4``, ``P5`` ...) and the block options, and returns the model dict with one
:class:`~wnlb_d2.yolo.modules.YOLONonLocalBlock2d` row after each stage's output layer and
every ``from`` index shifted, so that a block's output is both the stage's feature for the
neck and the next stage's input (as after the ResNet stages of the detectron2 models). The
YAMLs in ``configs/yolo/`` are written by :func:`write_shipped_yamls` (``python
tools/make_yolo_configs.py``) and tested against this function.

Why the generated dict holds a single scale: Ultralytics takes the scale from the file *name*
(``yolov8m-seg-wnlb.yaml`` -> m) and passes unknown modules' arguments unscaled, so a block
row carries the channel count of one scale. A single-entry ``scales`` builds that scale
whatever the file is called (Ultralytics falls back to the first entry), instead of silently
building scale n with the channels of another scale.

Every model YAML given to this package is read by :func:`read_model_yaml` and, before a run,
built once by :func:`check_model_yaml`, so that a wrong file (not YAML, a missing key, a row
that is not ``[from, repeats, module, args]``, an unknown module, arguments its module does not
take) is refused in one line naming the file, the layer and what is wrong, instead of
Ultralytics' traceback in the middle of a run.
"""

import copy
import logging
import math
import os

import yaml

from ..model_zoo import resolve_config_file
from .modules import BLOCK_OPTIONS, YOLONonLocalBlock2d

__all__ = ["STAGES", "DEFAULT_STAGES", "SHIPPED_MODELS", "read_model_yaml", "check_model_yaml", "load_stock_yaml",
           "stage_layers", "insert_nonlocal_blocks", "model_yaml_name", "dump_model_yaml", "write_model_yaml",
           "write_shipped_yamls", "plain_layer_map"]

logger = logging.getLogger(__name__)

#: Stage names: ``P<k>`` is the backbone output at stride 2**k (P3-P5 ~ ResNet res3-res5).
STAGES = ("P2", "P3", "P4", "P5")
#: The detectron2 default (``MODEL.WNLB.STAGES: [res3, res4, res5]``).
DEFAULT_STAGES = ("P3", "P4", "P5")
#: ``{fusion: name suffix}`` of the generated files.
FUSION_SUFFIX = {"weighted": "wnlb", "residual": "nlb"}
#: (stock model, fusion) pairs written to configs/yolo/.
SHIPPED_MODELS = tuple((f"yolov8{s}-seg.yaml", fusion) for s in "nsm" for fusion in ("weighted", "residual"))

BLOCK_MODULE = YOLONonLocalBlock2d.__name__

# Modules that change the stride: stride = args[index] (default 1), or a fixed stride.
_STRIDE_ARG = {"Conv": 2, "GhostConv": 2, "DWConv": 2, "SCDown": 2}
_FIXED_STRIDE = {"ADown": 2, "AConv": 2, "Focus": 2}
# Modules that keep the stride (the blocks of the v5/v8/v9/v10/11 backbones).
_SAME_STRIDE = {"C1", "C2", "C2f", "C3", "C3x", "C3k2", "C3Ghost", "C3TR", "C2fCIB", "C2PSA", "C2fPSA", "PSA",
                "A2C2f", "RepC3", "RepNCSPELAN4", "ELAN1", "SPP", "SPPF", "SPPELAN", "Bottleneck",
                "BottleneckCSP", "GhostBottleneck"}


def _make_divisible(x, divisor):
    # ultralytics.utils.ops.make_divisible, restated so that YAML generation needs no torch import.
    return math.ceil(x / divisor) * divisor


def _one_line(e):
    """An exception's message on one line (YAML and Ultralytics messages span several)."""
    return " ".join(str(e).split()) or type(e).__name__


def _yaml_problem(e):
    # PyYAML says what and where: "did not find expected ',' or ']' (line 2, column 3)".
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return _one_line(e)


def _check_yaml_text(path, name):
    """Parse a local file as YAML first: Ultralytics' own errors are several lines (and a link)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"model YAML {name!r} is not a text file (not UTF-8)") from None
    except OSError as e:
        raise ValueError(f"model YAML {name!r} cannot be read: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"model YAML {name!r} is not valid YAML: {_yaml_problem(e)}") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"model YAML {name!r} holds a {type(data).__name__}, not a mapping of model keys "
                         "(backbone, head, nc, scales ...)")


def _resolves(module):
    """Whether Ultralytics' ``parse_model`` can find a module by this name."""
    import torch
    from ultralytics.nn import tasks

    if module.startswith("nn."):
        return hasattr(torch.nn, module[3:])
    if module.startswith("torchvision.ops."):
        import torchvision

        return hasattr(torchvision.ops, module[16:])
    return module in vars(tasks)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_row(name, section, j, i, row):
    """One layer row ``[from, repeats, module, args]`` (layer ``i`` overall, row ``j`` of ``section``)."""
    where = f"model YAML {name!r}: {section} row {j} (layer {i})"
    if not isinstance(row, list) or len(row) != 4:
        raise ValueError(f"{where} must be [from, repeats, module, args], got {row!r}")
    f, n, m, args = row
    sources = f if isinstance(f, list) else [f]
    if not sources or not all(_is_int(x) for x in sources):
        raise ValueError(f"{where}: 'from' must be a layer index or a list of them, got {f!r}")
    for x in sources:
        # -1 is the previous layer (the image for layer 0); an absolute index must come before.
        if (x < 0 and i + x < -1) or x >= i > 0 or (i == 0 and x != -1):
            raise ValueError(f"{where}: takes input from layer {x}, which does not come before it")
    if not _is_int(n) or n < 1:
        raise ValueError(f"{where}: repeats must be an integer >= 1, got {n!r}")
    if not isinstance(m, str) or not _resolves(m):
        raise ValueError(f"{where}: unknown module {m!r} (neither an Ultralytics module, nn.<torch module> nor "
                         "torchvision.ops.<op>)")
    if not isinstance(args, list):
        raise ValueError(f"{where}: the arguments of {m} must be a list, got {args!r}")


def _check_model_dict(d, name):
    """What Ultralytics' ``parse_model`` needs of a model dict, each failure a one-line ValueError."""
    for section in ("backbone", "head"):
        if section not in d:
            keys = sorted(k for k in d if k not in ("scale", "yaml_file"))  # those two Ultralytics adds
            raise ValueError(f"model YAML {name!r} has no {section!r} list of layers (its keys: {keys})")
        if not isinstance(d[section], list) or not d[section]:
            raise ValueError(f"model YAML {name!r}: {section!r} must be a non-empty list of layer rows, "
                             f"got {d[section]!r}")
    rows = [("backbone", j, row) for j, row in enumerate(d["backbone"])] + \
           [("head", j, row) for j, row in enumerate(d["head"])]
    for i, (section, j, row) in enumerate(rows):
        _check_row(name, section, j, i, row)
    nc = d.get("nc")
    if nc is not None and (not _is_int(nc) or nc < 1):
        raise ValueError(f"model YAML {name!r}: nc must be a positive integer, got {nc!r}")
    scales = d.get("scales")
    if scales is None:
        return
    if not isinstance(scales, dict) or not scales:
        raise ValueError(f"model YAML {name!r}: scales must map a scale letter to [depth, width, max_channels], "
                         f"got {scales!r}")
    for key, value in scales.items():
        if not isinstance(value, list) or len(value) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
            raise ValueError(f"model YAML {name!r}: scale {key!r} must be [depth, width, max_channels] (positive "
                             f"numbers), got {value!r}")
    if d.get("scale") and d["scale"] not in scales:
        raise ValueError(f"model YAML {name!r}: its file name says scale {d['scale']!r} (Ultralytics reads the scale "
                         f"from the name), but it defines only {sorted(scales)}")


def read_model_yaml(name):
    """A model YAML read as Ultralytics reads it (scale from the name), checked for what building it needs.

    Args:
        name (str or os.PathLike): a path (``configs/yolo/...`` that is not in the working folder:
            the copy shipped with the package) or a stock name (``"yolov8n-seg.yaml"``, resolved
            in Ultralytics' ``cfg/models``).

    Returns:
        dict: the model dict, ``scale`` and ``yaml_file`` set by Ultralytics.

    Raises:
        ValueError: not a ``.yaml`` name, no such file, not YAML, not a mapping, a missing or
            malformed key or layer row, an unknown module; one line naming the file.
    """
    from ultralytics.nn.tasks import yaml_model_load

    # configs/yolo/... from outside the repository: the copy shipped with the package.
    name = resolve_config_file(name)
    name = os.fspath(name) if isinstance(name, os.PathLike) else name
    if not isinstance(name, str) or not name.lower().endswith((".yaml", ".yml")):
        raise ValueError(f"expected a model YAML such as 'yolov8n-seg.yaml' or configs/yolo/yolov8n-seg-wnlb.yaml, "
                         f"got {name!r}")
    if os.path.isdir(name):
        raise ValueError(f"model YAML {name!r} is a folder")
    if os.path.isfile(name):  # Ultralytics reads a local file before its own model names
        _check_yaml_text(name, name)
    try:
        d = yaml_model_load(name)
    except FileNotFoundError:
        raise ValueError(f"model YAML {name!r} does not exist (neither a file nor a model YAML of Ultralytics)") \
            from None
    except (ValueError, OSError, AssertionError) as e:  # Ultralytics' own checks of its model YAMLs
        raise ValueError(f"model YAML {name!r} is not a valid model YAML: {_one_line(e)}") from e
    _check_model_dict(d, name)
    return d


def _failed_layer(e):
    """``(layer index, module name)`` where building a model raised ``e``, from its traceback, or None."""
    found = None
    tb = e.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "parse_model" and "i" in frame.f_locals:
            m = frame.f_locals.get("m")
            found = (frame.f_locals["i"], m if isinstance(m, str) else getattr(m, "__name__", str(m)))
        elif frame.f_code.co_name == "_predict_once" and hasattr(frame.f_locals.get("m"), "i"):
            m = frame.f_locals["m"]
            found = (m.i, getattr(m, "type", type(m).__name__))
        tb = tb.tb_next
    return found


def check_model_yaml(name):
    """Read a model YAML (:func:`read_model_yaml`) and build its segmentation model once, on the CPU.

    Run before training, so that a YAML whose layers cannot be built (arguments a module does
    not take, channels that do not fit) or that is not a segmentation model fails in one line
    at the start, not as a traceback from inside Ultralytics' trainer.

    Args:
        name (str or os.PathLike): a model YAML path or stock name.

    Returns:
        dict: the model dict (as :func:`read_model_yaml`).

    Raises:
        ValueError: the message names the file, the layer and what is wrong.
    """
    from ultralytics.nn.modules import Conv
    from ultralytics.nn.modules.head import Segment
    from ultralytics.nn.tasks import SegmentationModel

    d = read_model_yaml(name)
    default_act = Conv.default_act  # parse_model sets the YAML's activation process-wide, restored only on success
    try:
        model = SegmentationModel(copy.deepcopy(d), verbose=False)
    except Exception as e:  # parse_model and the modules raise KeyError, TypeError, IndexError, RuntimeError ...
        layer = _failed_layer(e)
        where = f" layer {layer[0]} ({layer[1]})" if layer else ""
        raise ValueError(f"model YAML {name!r}:{where} cannot be built: {type(e).__name__}: {_one_line(e)}") from e
    finally:
        Conv.default_act = default_act
    if not isinstance(model.model[-1], Segment):
        raise ValueError(f"model YAML {name!r} is not a segmentation model: its last layer is "
                         f"{type(model.model[-1]).__name__}, not Segment (use a -seg YAML)")
    return d


def load_stock_yaml(name):
    """A stock Ultralytics model dict, as Ultralytics itself reads it (scale from the name).

    Args:
        name (str): e.g. ``"yolov8n-seg.yaml"`` (resolved in Ultralytics' ``cfg/models``) or a path.

    Returns:
        dict: with ``scale`` set from the name.

    Raises:
        ValueError: the name has no scale letter or names no valid model YAML (see
            :func:`read_model_yaml`), in one line naming the file.
    """
    d = read_model_yaml(name)
    if d.get("scales") and not d.get("scale"):
        raise ValueError(f"model YAML {name!r} names no scale (n/s/m/l/x), e.g. 'yolov8n-seg.yaml'")
    return d


def stage_layers(model_dict):
    """Which backbone layer gives each stage's output, and its channel count.

    A stage's output is the last backbone layer at its stride (for YOLOv8: P2 -> 2, P3 -> 4,
    P4 -> 6, P5 -> 9, the SPPF whose output the neck takes).

    Args:
        model_dict (dict): a stock model dict with ``scale`` set (see :func:`load_stock_yaml`).

    Returns:
        dict: ``{"P3": (layer index, channels), ...}`` for every stage in :data:`STAGES` the
        backbone has.

    Raises:
        ValueError: a backbone layer whose stride effect is unknown, or a backbone that is not
            a chain (a layer not taking the previous one's output).
    """
    width, max_channels = model_dict.get("width_multiple", 1.0), float("inf")
    if model_dict.get("scales"):
        _, width, max_channels = model_dict["scales"][model_dict["scale"]]
    stride, out = 1, {}
    for i, (f, _n, m, args) in enumerate(model_dict["backbone"]):
        if i > 0 and f != -1:
            raise ValueError(f"stage_layers: backbone layer {i} ({m}) takes 'from' {f}; only chained backbones "
                             "are supported")
        if m in _FIXED_STRIDE:
            stride *= _FIXED_STRIDE[m]
        elif m in _STRIDE_ARG:
            k = _STRIDE_ARG[m]
            stride *= args[k] if len(args) > k else 1
        elif m not in _SAME_STRIDE:
            raise ValueError(f"stage_layers: backbone layer {i} is {m!r}, whose effect on the stride is unknown")
        level = int(round(math.log2(stride)))
        name = f"P{level}"
        if name in STAGES:
            channels = _make_divisible(min(args[0], max_channels) * width, 8)
            out[name] = (i, channels)
    return out


def _check_stages(stages, available):
    stages = tuple(stages)
    if not stages:
        raise ValueError(f"insert_nonlocal_blocks: stages is empty; expected some of {STAGES}")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"insert_nonlocal_blocks: unknown stage(s) {bad}; expected some of {STAGES}")
    missing = [s for s in stages if s not in available]
    if missing:
        raise ValueError(f"insert_nonlocal_blocks: the backbone has no stage(s) {missing} (has {sorted(available)})")
    if len(set(stages)) != len(stages):
        raise ValueError(f"insert_nonlocal_blocks: stages repeat: {list(stages)}")
    return tuple(s for s in STAGES if s in stages)


def _shift(f, i, new_index, out_index):
    """The ``from`` of old layer ``i`` in the new layer list (absolute stays absolute, relative relative)."""
    def one(x):
        if x >= 0:
            return out_index[x]
        return out_index[i + x] - new_index[i]

    return [one(x) for x in f] if isinstance(f, list) else one(f)


def insert_nonlocal_blocks(stock, stages=DEFAULT_STAGES, fusion="weighted", **block_options):
    """The model dict of ``stock`` with a non-local block after each chosen backbone stage.

    Args:
        stock (str or dict): a stock model YAML name or path (``"yolov8m-seg.yaml"``), or a
            model dict with ``scale`` set.
        stages (sequence of str): stages from :data:`STAGES`; default P3, P4, P5.
        fusion (str): ``"weighted"`` (wNLB: z = w W_z(y) + (1 - w) x) or ``"residual"``
            (NLB: z = x + W_z(y)).
        **block_options: further options of :class:`wnlb_d2.layers.NonLocalBlock2d`
            (``mode``, ``norm``, ``weight_init``, ...); only non-default ones are written.

    Returns:
        dict: the new model dict (a single scale; a ``wnlb`` entry records the base model,
        stages, options and the layer index of every block).

    Raises:
        ValueError: unknown stage or option, or a backbone this function cannot read.
    """
    base = load_stock_yaml(stock) if isinstance(stock, (str, os.PathLike)) else copy.deepcopy(stock)
    unknown = sorted(set(block_options) - set(BLOCK_OPTIONS))
    if unknown:
        raise ValueError(f"insert_nonlocal_blocks: unknown block option(s) {unknown}; "
                         f"expected some of {list(BLOCK_OPTIONS)}")
    options = {"fusion": fusion, **block_options}
    # Built once to validate every option now, not when the model is built.
    YOLONonLocalBlock2d(8, options)
    available = stage_layers(base)
    stages = _check_stages(stages, available)
    after = {available[s][0]: (s, available[s][1]) for s in stages}

    layers = base["backbone"] + base["head"]
    n_backbone = len(base["backbone"])
    new_index, out_index, k = {}, {}, 0
    for i in range(len(layers)):
        new_index[i] = k
        k += 1
        out_index[i] = k if i in after else new_index[i]
        k += i in after

    backbone, head, block_layers = [], [], {}
    for i, (f, n, m, args) in enumerate(layers):
        row = [_shift(f, i, new_index, out_index) if i > 0 else f, n, m, copy.deepcopy(args)]
        (backbone if i < n_backbone else head).append(row)
        if i in after:
            stage, channels = after[i]
            backbone.append([-1, 1, BLOCK_MODULE, [channels, dict(options)]])
            block_layers[stage] = out_index[i]

    scale = base.get("scale") or ""
    out = {k: copy.deepcopy(v) for k, v in base.items() if k not in ("backbone", "head", "scale", "yaml_file")}
    if base.get("scales"):
        out["scales"] = {scale: list(base["scales"][scale])}
    named = stock if isinstance(stock, (str, os.PathLike)) else "model"
    stock_name = os.path.basename(str(base.get("yaml_file") or named))
    out["wnlb"] = {
        "base": stock_name,
        "scale": scale,
        "stages": list(stages),
        "block_layers": block_layers,
        "options": dict(options),
    }
    out["backbone"] = backbone
    out["head"] = head
    return out


def model_yaml_name(stock_name, fusion="weighted", stages=DEFAULT_STAGES):
    """File name of a generated YAML: ``yolov8n-seg-wnlb.yaml``, ``yolov8n-seg-nlb-p2.yaml`` ...

    The scale letter stays where Ultralytics' ``guess_model_scale`` reads it.
    """
    stem = os.path.splitext(os.path.basename(stock_name))[0]
    suffix = FUSION_SUFFIX[fusion]
    tag = "" if tuple(stages) == DEFAULT_STAGES else "-" + "".join(s.lower() for s in stages)
    return f"{stem}-{suffix}{tag}.yaml"


def _flow(value):
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()


def dump_model_yaml(model_dict):
    """The model dict as YAML text in Ultralytics' layout (one layer row per line).

    Args:
        model_dict (dict): e.g. from :func:`insert_nonlocal_blocks`.

    Returns:
        str: YAML that ``yaml.safe_load`` reads back to an equal dict.
    """
    meta = model_dict.get("wnlb", {})
    lines = [
        "# Generated by wnlb_d2.yolo.model_yaml.insert_nonlocal_blocks; do not edit (regenerate with",
        "# `python tools/make_yolo_configs.py`).",
        f"# {meta.get('base', 'model')} with {meta.get('options', {}).get('fusion', '?')}-fusion non-local blocks "
        f"after {', '.join(meta.get('stages', []))}.",
        "# Derived from Ultralytics' yolov8-seg.yaml: licensed under the AGPL-3.0 (https://ultralytics.com/license),",
        "# unlike the rest of wnlb_d2 (Apache-2.0).",
    ]
    for key, value in model_dict.items():
        if key in ("backbone", "head"):
            lines.append(f"{key}:")
            lines.extend(f"  - {_flow(row)}" for row in value)
        else:  # scalars as `key: value`, mappings block style with flow-style leaves
            style = None if isinstance(value, (dict, list)) else False
            lines.append(yaml.safe_dump({key: value}, default_flow_style=style, width=10_000, sort_keys=False).strip())
    return "\n".join(lines) + "\n"


def write_model_yaml(path, model_dict):
    """Write :func:`dump_model_yaml` of ``model_dict`` to ``path`` (atomically)."""
    from ..utils.io import atomic_write_text

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, dump_model_yaml(model_dict))
    return path


def plain_layer_map(model_dict):
    """``{plain layer index: layer index in the model with blocks}`` for every stock layer.

    Args:
        model_dict (dict): a model dict with blocks (its ``backbone`` and ``head`` rows).

    Returns:
        dict[int, int]
    """
    rows = model_dict["backbone"] + model_dict["head"]
    kept = [i for i, row in enumerate(rows) if row[2] != BLOCK_MODULE]
    return dict(enumerate(kept))


def write_shipped_yamls(folder):
    """Write every YAML of :data:`SHIPPED_MODELS` into ``folder`` (``configs/yolo``).

    Returns:
        list[str]: the paths written.
    """
    paths = []
    for stock, fusion in SHIPPED_MODELS:
        path = os.path.join(folder, model_yaml_name(stock, fusion))
        paths.append(write_model_yaml(path, insert_nonlocal_blocks(stock, fusion=fusion)))
    return paths
