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
"""

import copy
import logging
import math
import os

import yaml

from .modules import BLOCK_OPTIONS, YOLONonLocalBlock2d

__all__ = ["STAGES", "DEFAULT_STAGES", "SHIPPED_MODELS", "load_stock_yaml", "stage_layers",
           "insert_nonlocal_blocks", "model_yaml_name", "dump_model_yaml", "write_model_yaml",
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


def load_stock_yaml(name):
    """A stock Ultralytics model dict, as Ultralytics itself reads it (scale from the name).

    Args:
        name (str): e.g. ``"yolov8n-seg.yaml"`` (resolved in Ultralytics' ``cfg/models``) or a path.

    Returns:
        dict: with ``scale`` set from the name.

    Raises:
        ValueError: the name has no scale letter or names no YAML.
    """
    from ultralytics.nn.tasks import yaml_model_load

    if not str(name).endswith((".yaml", ".yml")):
        raise ValueError(f"load_stock_yaml: expected a model YAML name such as 'yolov8n-seg.yaml', got {name!r}")
    try:
        d = yaml_model_load(name)
    except FileNotFoundError as e:
        raise ValueError(f"load_stock_yaml: no Ultralytics model YAML {name!r} ({e})") from e
    if d.get("scales") and not d.get("scale"):
        raise ValueError(f"load_stock_yaml: {name!r} names no scale (n/s/m/l/x), e.g. 'yolov8n-seg.yaml'")
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(dump_model_yaml(model_dict))
    os.replace(tmp, path)
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
