"""Config keys of wnlb_d2, added to a detectron2 config by :func:`add_lowlight_config`.

:func:`add_lowlight_config` adds every node of the package:

* ``MODEL.WNLB``: the non-local blocks (:func:`add_wnlb_model_config`);
* ``SOLVER.FINETUNE_POLICY``, ``OPTIMIZER``, ``WNLB_LR_FACTOR``, ``WNLB_WEIGHT_LR_FACTOR``,
  ``WNLB_WEIGHT_DECAY`` and ``TEST.BOOTSTRAP_SAMPLES``: training and evaluation (:func:`add_training_config`);
* ``INPUT.LOW_LIGHT`` and ``DATALOADER.SKIP_UNREADABLE_IMAGES``: on-the-fly synthesis
  (:func:`add_low_light_input_config`);
* ``INPUT.ENHANCER``: two-stage baselines (:func:`add_enhancer_config`);
* ``MODEL.SOLOV2``: the SOLOv2 meta-architecture.

:func:`add_wnlb_config` is the same function under its first name (kept for existing code).
"""

import ast
import logging
import math
import os

import yaml
from detectron2.config import CfgNode as CN

from .model_zoo.model_zoo import CONFIGS_PREFIX, configs_root, shipped_config_of_path

__all__ = ["add_lowlight_config", "add_wnlb_config", "add_wnlb_model_config", "add_training_config",
           "add_low_light_input_config", "add_enhancer_config", "merge_from_file", "merge_from_list", "set_config_value", "config_value",
           "check_solov2_config", "MODEL_ZOO_PREFIX"]

logger = logging.getLogger(__name__)

#: A ``_BASE_`` (or config path) starting with this prefix names a stock detectron2 config,
#: resolved with :func:`detectron2.model_zoo.get_config_file`, e.g.
#: ``model_zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml``.
MODEL_ZOO_PREFIX = "model_zoo://"


def add_lowlight_config(cfg):
    """Add every config node of wnlb_d2 to a detectron2 config (see the module docstring).

    Args:
        cfg (CfgNode): a config from :func:`detectron2.config.get_cfg`; modified in place.
    """
    add_wnlb_model_config(cfg)
    add_training_config(cfg)
    add_low_light_input_config(cfg)
    add_enhancer_config(cfg)
    from .modeling.meta_arch.config import add_solov2_config

    add_solov2_config(cfg)


#: The first name of :func:`add_lowlight_config` (it adds every node, not only ``MODEL.WNLB``).
add_wnlb_config = add_lowlight_config


def add_wnlb_model_config(cfg):
    """Add the ``MODEL.WNLB`` node (weighted non-local blocks).

    Args:
        cfg (CfgNode): a detectron2 config; modified in place.
    """
    _C = cfg
    _C.MODEL.WNLB = CN()
    # Stages after which a block is placed; any of "res2", "res3", "res4", "res5" that the
    # backbone computes (the C4 backbone stops at res4).
    _C.MODEL.WNLB.STAGES = ["res3", "res4", "res5"]
    # Pairwise function f of the non-local operation (Wang et al. 2018):
    # "embedded" (embedded Gaussian), "gaussian", "dot" (dot product), "concatenate".
    _C.MODEL.WNLB.MODE = "embedded"
    # "weighted": z = w * W_z(y) + (1 - w) * x (wNLB); "residual": z = x + W_z(y) (NLB).
    _C.MODEL.WNLB.FUSION = "weighted"
    # Whether the weight w of the weighted fusion is learned (else kept at WEIGHT_INIT).
    _C.MODEL.WNLB.LEARNABLE_WEIGHT = True
    # Initial w: one float for all stages, or a list with one float per entry of STAGES.
    # 0.0 makes every block the identity at initialisation. yacs would refuse a list here (its
    # type check keeps the default's float): merge_from_file / merge_from_list of this module
    # accept both forms (NUMBER_OR_LIST_KEYS).
    _C.MODEL.WNLB.WEIGHT_INIT = 0.0
    # Channels of theta/phi/g as a fraction of the stage's channels (0.5 as in Wang et al.).
    _C.MODEL.WNLB.INTER_CHANNELS_RATIO = 0.5
    # Norm after the W_z 1x1 conv: "BN", "SyncBN", "GN", "FrozenBN" or "none".
    _C.MODEL.WNLB.NORM = "BN"
    # "efficient": never builds the N x N affinity matrix (exact); "reference": plain O(N^2).
    _C.MODEL.WNLB.IMPL = "efficient"
    # Max-pool phi and g by 2 (Wang et al.'s sub-sampling): 4x fewer pairs, not exact.
    _C.MODEL.WNLB.SUB_SAMPLE = False
    # What of W_z starts at zero: "norm" (the norm's weight and bias; the conv He-initialised, so
    # the non-local path can learn) or "conv_and_norm" (the authors' released wnlb.py: conv too;
    # then the path's conv, norm weight, theta, phi and g never get a gradient).
    _C.MODEL.WNLB.ZERO_INIT = "norm"


def add_training_config(cfg):
    """Add the training and evaluation keys: ``SOLVER.FINETUNE_POLICY``, ``SOLVER.OPTIMIZER``,
    ``SOLVER.WNLB_LR_FACTOR``, ``SOLVER.WNLB_WEIGHT_LR_FACTOR``, ``SOLVER.WNLB_WEIGHT_DECAY``,
    ``TEST.BOOTSTRAP_SAMPLES``.

    Args:
        cfg (CfgNode): a detectron2 config; modified in place.
    """
    _C = cfg
    # Which parameters learn: "all", "backbone" (ResNet + FPN + blocks; the paper's choice)
    # or "wnlb" (the non-local blocks only). MODEL.BACKBONE.FREEZE_AT still applies.
    _C.SOLVER.FINETUNE_POLICY = "all"
    # "SGD" (detectron2's optimizer) or "AdamW" (same parameter groups, for from-scratch
    # training on small data such as the demo). Kept if detectron2 already defines the key.
    if "OPTIMIZER" not in _C.SOLVER:
        _C.SOLVER.OPTIMIZER = "SGD"
    # Learning rate of the non-local blocks' parameters (W_z, theta, phi, g, w) relative to
    # SOLVER.BASE_LR. 1.0 trains them like the rest (the paper). The blocks start as the
    # identity; a factor > 1 lets them move further in a short fine-tune.
    _C.SOLVER.WNLB_LR_FACTOR = 1.0
    # Extra learning-rate factor of the blocks' fusion weights w alone, on top of
    # WNLB_LR_FACTOR (1.0: like the other block parameters). See docs/blocks.md, "Blocks that learn".
    _C.SOLVER.WNLB_WEIGHT_LR_FACTOR = 1.0
    # Weight decay of the fusion weights w. None: SOLVER.WEIGHT_DECAY, as detectron2 decays every
    # weight (the recorded yacs runs trained so); 0.0: none, the default of the LazyConfig
    # (wnlb_param_groups) and YOLO paths, where decay would pull the gate w towards 0 for no
    # reason of the data.
    _C.SOLVER.WNLB_WEIGHT_DECAY = None
    # Image-level bootstrap samples of each COCOEvaluator AP (an interval for the evaluation
    # noise of one run, from the matches COCOeval computed: no re-inference); 0: off.
    _C.TEST.BOOTSTRAP_SAMPLES = 0


def add_low_light_input_config(cfg):
    """Add the ``INPUT.LOW_LIGHT`` node (on-the-fly low-light synthesis in the data mapper).

    Ranges are ``(low, high)`` and drawn uniformly per image unless said otherwise; the
    keys of ``LV2021`` / ``UNPROCESS`` are the pipelines' constructor arguments upper-cased
    (see ``docs/synthesis.md`` for their sources).

    Args:
        cfg (CfgNode): a detectron2 config; modified in place.
    """
    _C = cfg
    _C.INPUT.LOW_LIGHT = CN()
    # Degrade images in LowLightDatasetMapper; False makes it a plain DatasetMapper.
    _C.INPUT.LOW_LIGHT.ENABLED = False
    # Synthesis pipeline: "lv2021" (darkening + in-camera noise) or "unprocess" (sensor model).
    _C.INPUT.LOW_LIGHT.PIPELINE = "lv2021"
    # Degrade training images (a fresh random draw per image, every time it is loaded).
    _C.INPUT.LOW_LIGHT.TRAIN = True
    # Degrade evaluation images (same draw per image in every run); False if already low-light.
    _C.INPUT.LOW_LIGHT.TEST = True
    # Seed of the evaluation degradation (>= 0); with the image id it fixes each test image.
    _C.INPUT.LOW_LIGHT.SEED = 0
    # Seed of the training draws; -1 takes fresh entropy from the OS in every run.
    _C.INPUT.LOW_LIGHT.TRAIN_SEED = -1
    # Where the training images' Gaussian noise comes from: "torch" (torch.randn seeded from the
    # training generator: the same distribution, 2.5x faster) or "numpy" (the generator's own
    # draws, which evaluation always uses). See docs/data.md "Speed".
    _C.INPUT.LOW_LIGHT.TRAIN_NOISE = "torch"
    # Degrade training images on the model's device (GPU): workers ship 8-bit images at native
    # size with their draws and transforms; a forward pre-hook degrades, resizes and flips them
    # there (wnlb_d2/data/device_path.py). Evaluation keeps the CPU degradation.
    _C.INPUT.LOW_LIGHT.ON_DEVICE = False
    # Unreadable images: False stops with an error naming the file; True warns and skips it
    # (training: another image; evaluation: a blank one, its objects count as missed).
    _C.DATALOADER.SKIP_UNREADABLE_IMAGES = False

    _C.INPUT.LOW_LIGHT.LV2021 = CN()
    # Pre-scale alpha of I_out = beta * (alpha * I) ** gamma (Lv et al. 2021).
    _C.INPUT.LOW_LIGHT.LV2021.ALPHA = (0.9, 1.0)
    # Post-scale beta of the darkening (Lv et al. 2021).
    _C.INPUT.LOW_LIGHT.LV2021.BETA = (0.5, 1.0)
    # Exponent gamma of the darkening (Lv et al. 2021).
    _C.INPUT.LOW_LIGHT.LV2021.GAMMA = (1.5, 5.0)
    # Signal-dependent noise level: variance sigma_s**2 * L in the raw domain (CBDNet).
    _C.INPUT.LOW_LIGHT.LV2021.SIGMA_S = (0.0, 0.16)
    # Signal-independent noise level: variance sigma_c**2 (CBDNet).
    _C.INPUT.LOW_LIGHT.LV2021.SIGMA_C = (0.0, 0.06)
    # Exponent of the parametric camera response B = I ** (1 / CRF_GAMMA), used without CRF_FILE.
    _C.INPUT.LOW_LIGHT.LV2021.CRF_GAMMA = (1.8, 2.6)
    # Path of the DoRF dorfCurves.txt; when set, one of its 201 curves is drawn per image.
    _C.INPUT.LOW_LIGHT.LV2021.CRF_FILE = ""

    _C.INPUT.LOW_LIGHT.UNPROCESS = CN()
    # Gamma of the camera's tone curve, undone and re-applied (MAET: U(2, 3.5)).
    _C.INPUT.LOW_LIGHT.UNPROCESS.GAMMA = (2.0, 3.5)
    # Camera matrix: "mix" (convex combination of Brooks' four) or "pick" (one of them, MAET).
    _C.INPUT.LOW_LIGHT.UNPROCESS.CCM_MODE = "mix"
    # Mean of the global white-balance gain g ~ truncated Normal (Brooks et al.).
    _C.INPUT.LOW_LIGHT.UNPROCESS.RGB_GAIN_MEAN = 0.8
    # Standard deviation of g.
    _C.INPUT.LOW_LIGHT.UNPROCESS.RGB_GAIN_STD = 0.1
    # Truncation range of g (keeps it > 0).
    _C.INPUT.LOW_LIGHT.UNPROCESS.RGB_GAIN_RANGE = (0.5, 1.1)
    # Red white-balance gain r (Brooks et al.).
    _C.INPUT.LOW_LIGHT.UNPROCESS.RED_GAIN = (1.9, 2.4)
    # Blue white-balance gain b (Brooks et al.).
    _C.INPUT.LOW_LIGHT.UNPROCESS.BLUE_GAIN = (1.5, 1.9)
    # Mean of the exposure factor d ~ truncated Normal (MAET).
    _C.INPUT.LOW_LIGHT.UNPROCESS.DARKNESS_MEAN = 0.1
    # Standard deviation of d.
    _C.INPUT.LOW_LIGHT.UNPROCESS.DARKNESS_STD = 0.08
    # Truncation range of d.
    _C.INPUT.LOW_LIGHT.UNPROCESS.DARKNESS_RANGE = (0.01, 1.0)
    # Shot-noise scale s, log-uniform (Brooks et al.); noise variance is x * s + r.
    _C.INPUT.LOW_LIGHT.UNPROCESS.SHOT_NOISE = (1e-4, 0.012)
    # Read-noise variance r: ln r = SLOPE * ln s + INTERCEPT + Normal(0, STD**2) (Brooks et al.).
    _C.INPUT.LOW_LIGHT.UNPROCESS.READ_NOISE_SLOPE = 2.18
    # Intercept of ln r.
    _C.INPUT.LOW_LIGHT.UNPROCESS.READ_NOISE_INTERCEPT = 1.20
    # Standard deviation of ln r around the line.
    _C.INPUT.LOW_LIGHT.UNPROCESS.READ_NOISE_STD = 0.26


def add_enhancer_config(cfg):
    """Add the ``INPUT.ENHANCER`` node: an image enhancer in front of the detector (two-stage).

    The enhancer runs in the data mapper after the (optional) low-light degradation; see
    :mod:`wnlb_d2.enhance`. Each enhancer's keys are its constructor arguments upper-cased.

    Args:
        cfg (CfgNode): a detectron2 config; modified in place.
    """
    _C = cfg
    _C.INPUT.ENHANCER = CN()
    # "none", "gamma", "clahe", "histeq", "nlm", "zero_dce", "retinexformer", "agllnet" or
    # "enlightengan", or several joined by "+" and
    # applied left to right, e.g. "nlm+clahe" (denoise, then enhance).
    _C.INPUT.ENHANCER.NAME = "none"
    # Enhance training images (an enhancer in front of a detector that is trained on its output).
    _C.INPUT.ENHANCER.TRAIN = True
    # Enhance evaluation images (the two-stage baselines: enhancer + pre-trained detector).
    _C.INPUT.ENHANCER.TEST = True

    _C.INPUT.ENHANCER.GAMMA = CN()
    # Gamma of I_out = I ** gamma (< 1 brightens); 0 chooses it per image from TARGET_MEAN.
    _C.INPUT.ENHANCER.GAMMA.VALUE = 0.0
    # Mean luminance in (0, 1) that the automatic gamma maps the image's mean to.
    _C.INPUT.ENHANCER.GAMMA.TARGET_MEAN = 0.5

    _C.INPUT.ENHANCER.CLAHE = CN()
    # Contrast limit per tile (OpenCV clipLimit) of CLAHE on the L channel of CIELAB.
    _C.INPUT.ENHANCER.CLAHE.CLIP_LIMIT = 2.0
    # Tiles per image side (OpenCV tileGridSize).
    _C.INPUT.ENHANCER.CLAHE.TILE_GRID_SIZE = 8

    # "histeq" (global equalisation of the luma Y of YCrCb) has no parameters.

    _C.INPUT.ENHANCER.NLM = CN()
    # Luminance filter strength of cv2.fastNlMeansDenoisingColored (more: smoother, less detail).
    _C.INPUT.ENHANCER.NLM.H = 10.0
    # Colour filter strength.
    _C.INPUT.ENHANCER.NLM.H_COLOR = 10.0
    # Side of the compared patches (odd).
    _C.INPUT.ENHANCER.NLM.TEMPLATE_WINDOW_SIZE = 7
    # Side of the window searched for similar patches (odd).
    _C.INPUT.ENHANCER.NLM.SEARCH_WINDOW_SIZE = 21

    _C.INPUT.ENHANCER.ZERO_DCE = CN()
    # Zero-DCE++ state dict: from tools/train_zero_dce.py, or the authors' Epoch99.pth.
    _C.INPUT.ENHANCER.ZERO_DCE.WEIGHTS = ""
    # Curves are estimated on the image downscaled by this factor (the authors test with 12).
    _C.INPUT.ENHANCER.ZERO_DCE.SCALE_FACTOR = 1
    # Iterations of the light-enhancement curve (8 for the published weights).
    _C.INPUT.ENHANCER.ZERO_DCE.ITERATIONS = 8

    _C.INPUT.ENHANCER.RETINEXFORMER = CN()
    # RetinexFormer weights: the authors' BasicSR .pth ({"params": ...}, e.g. LOL_v1.pth), or
    # from tools/train_retinexformer.py.
    _C.INPUT.ENHANCER.RETINEXFORMER.WEIGHTS = ""
    # Feature width, stages and IGAB blocks per level (the authors' released configuration).
    _C.INPUT.ENHANCER.RETINEXFORMER.N_FEAT = 40
    _C.INPUT.ENHANCER.RETINEXFORMER.STAGE = 1
    _C.INPUT.ENHANCER.RETINEXFORMER.NUM_BLOCKS = (1, 2, 2)

    _C.INPUT.ENHANCER.ENLIGHTENGAN = CN()
    # EnlightenGAN generator: the authors' 200_net_G_A.pth, or from tools/train_enlightengan.py.
    _C.INPUT.ENHANCER.ENLIGHTENGAN.WEIGHTS = ""
    # Generator width; 0 reads it from the weights (32 released, 16 trained here by default).
    _C.INPUT.ENHANCER.ENLIGHTENGAN.CHANNELS = 0
    # Decoder up-sampling as the authors' PyTorch 0.3.1 computed it (False: weights trained on >= 0.4).
    _C.INPUT.ENHANCER.ENLIGHTENGAN.ALIGN_CORNERS = True

    _C.INPUT.ENHANCER.AGLLNET = CN()
    # AGLLNet weights: the authors' Keras AgLLNet.h5 (model.save or save_weights layout), a torch
    # state dict from convert_agllnet_h5, or from tools/train_agllnet.py; the widths come from the file.
    _C.INPUT.ENHANCER.AGLLNET.WEIGHTS = ""


def _read_yaml(path):
    if not os.path.isfile(path):
        # A configs/... path from outside the repository: say that the shipped configs were looked in too.
        shipped = f" (nor a config shipped with wnlb_d2, in {configs_root()})" \
            if path.replace(os.sep, "/").startswith(CONFIGS_PREFIX) else ""
        raise FileNotFoundError(f"Config file not found: {path}{shipped}")
    try:
        with open(path, "r") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"Config file {path} cannot be read as text: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError:
        # Stock configs such as Base-RetinaNet.yaml compute values with !!python/object tags;
        # detectron2's own merge_from_file loads them the same way (allow_unsafe=True).
        logger.warning(f"Loading config {path} with yaml.unsafe_load (it has Python tags).")
        data = _parse_yaml(path, text, yaml.unsafe_load)
    except yaml.YAMLError as e:
        raise ValueError(f"Config file {path} is not valid YAML: {_yaml_problem(e)}") from e
    if data is None:
        # yacs would merge nothing (or assert with an empty message): an empty file is a mistake.
        raise ValueError(f"Config file {path} is empty; expected a mapping of config keys (or _BASE_)")
    if not isinstance(data, dict):
        raise ValueError(f"Config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def _yaml_problem(e):
    # One line: the parser's problem and where it is (1-based, as editors count).
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def _parse_yaml(path, text, load):
    try:
        return load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"Config file {path} is not valid YAML: {_yaml_problem(e)}") from e


def resolve_config_path(path, relative_to=None):
    """The file a config path names: ``model_zoo://NAME`` resolved, ``~`` expanded, relative to
    ``relative_to``'s folder when given; a relative ``configs/...`` path that names no file there
    (a command run outside the repository) is the config shipped with wnlb_d2
    (:func:`wnlb_d2.model_zoo.shipped_config_of_path`)."""
    if path.startswith(MODEL_ZOO_PREFIX):
        try:
            from detectron2 import model_zoo
        except ModuleNotFoundError as e:
            # detectron2 (v0.6 and main) imports pkg_resources there, which setuptools >= 81 no
            # longer ships (detectron2 issue #5494): say so instead of a bare traceback.
            if e.name != "pkg_resources":
                raise
            raise ImportError(
                f"Cannot resolve {path!r}: detectron2's model zoo needs pkg_resources, which "
                "setuptools >= 81 removed; run: pip install 'setuptools<81'"
            ) from e

        name = path[len(MODEL_ZOO_PREFIX):]
        try:
            return model_zoo.get_config_file(name)
        except RuntimeError as e:
            raise FileNotFoundError(f"Stock config {path!r} is not in detectron2's model zoo: {e}")
    given = os.path.expanduser(path)
    path = given
    if relative_to is not None and not os.path.isabs(given):
        path = os.path.join(os.path.dirname(relative_to), given)
    if not os.path.exists(path):
        # configs/... from outside the repository (or as a _BASE_ of a config elsewhere): the
        # copy shipped with the package, when it has that config.
        return shipped_config_of_path(given) or path
    return path


def _merge_dicts(src, dst):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge_dicts(v, dst[k])
        else:
            dst[k] = v


def _load_with_bases(path):
    data = _read_yaml(path)
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    merged = _load_with_bases(resolve_config_path(base, relative_to=path))
    _merge_dicts(data, merged)
    return merged


def merge_from_file(cfg, path):
    """Merge a YAML config into ``cfg``, resolving ``_BASE_`` through detectron2's model zoo.

    Works like ``cfg.merge_from_file`` but also accepts ``model_zoo://<name>.yaml`` (as the file
    or as any ``_BASE_`` in its chain), so configs shipped here inherit the stock configs of the
    installed detectron2 without copying them.

    Args:
        cfg (CfgNode): target config, modified in place.
        path (str): a YAML file path or ``model_zoo://...`` name.

    Raises:
        FileNotFoundError: the file, or a base it names, does not exist.
        KeyError: the file sets a key that ``cfg`` does not have.
    """
    resolved = resolve_config_path(path)
    data = _load_with_bases(resolved)
    direct = []
    for full_key in NUMBER_OR_LIST_KEYS:
        *parents, leaf = full_key.split(".")
        node, holder = data, cfg
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
            holder = holder.get(p) if holder is not None else None
        if isinstance(node, dict) and leaf in node and holder is not None and leaf in holder:
            direct.append((full_key, _number_or_list(full_key, node.pop(leaf), f"config file {path}")))
    cfg.merge_from_other_cfg(type(cfg)(data))
    _set_keys(cfg, direct)
    return cfg


#: Keys that take one number or a list of numbers. yacs type-checks every merged value against
#: the default's type (float here), so these are validated here and assigned directly.
NUMBER_OR_LIST_KEYS = ("MODEL.WNLB.WEIGHT_INIT",)


def _number_or_list(full_key, value, where):
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if number(value):
        return float(value)
    if isinstance(value, (list, tuple)) and value and all(number(v) for v in value):
        return [float(v) for v in value]
    raise ValueError(f"{full_key} = {value!r} (in {where}) is invalid; expected a number or a list of numbers")


def set_config_value(cfg, full_key, value):
    """``cfg.A.B.C = value`` for ``full_key = "A.B.C"``, without yacs's string parsing.

    Args:
        cfg (CfgNode): modified in place (must not be frozen).
        full_key (str): dotted key; every parent node must exist.
        value: stored as it is (a list stays a list, a float a float).

    Raises:
        KeyError: a parent node is missing.
    """
    *parents, leaf = full_key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value


def _set_keys(cfg, pairs):
    for full_key, value in pairs:
        set_config_value(cfg, full_key, value)


def merge_from_list(cfg, opts):
    """``cfg.merge_from_list(opts)`` that also takes a list for the keys of ``NUMBER_OR_LIST_KEYS``.

    Args:
        cfg (CfgNode): target config, modified in place.
        opts (list[str]): ``KEY VALUE`` pairs, as on detectron2's command lines, e.g.
            ``["MODEL.WNLB.WEIGHT_INIT", "[0.1, 0.2, 0.3]"]``.

    Raises:
        ValueError: such a key's value is not a number or a list of numbers.
        AssertionError: yacs's own errors for the other keys (unknown key, odd length, type).
    """
    opts = list(opts)
    rest, direct = [], []
    for i in range(0, len(opts) - 1, 2):
        key, value = opts[i], opts[i + 1]
        if key in NUMBER_OR_LIST_KEYS and _has_key(cfg, key):
            if isinstance(value, str):
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    pass  # left a string: _number_or_list names it
            direct.append((key, _number_or_list(key, value, "the command-line overrides")))
        else:
            rest += [key, value]
    if len(opts) % 2:
        rest.append(opts[-1])  # yacs reports the odd length
    cfg.merge_from_list(rest)
    _set_keys(cfg, direct)
    return cfg


_MISSING = object()


def config_value(cfg, full_key, default=None):
    """The value at a dotted key (``"MODEL.SOLOV2.NUM_CLASSES"``), or ``default`` when absent."""
    node = cfg
    for p in full_key.split("."):
        if not hasattr(node, "keys") or p not in node:
            return default
        node = node[p]
    return node


def _has_key(cfg, full_key):
    return config_value(cfg, full_key, _MISSING) is not _MISSING


# --- MODEL.SOLOV2: every value checked up front ----------------------------------------------------

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _invalid(key, value, expected):
    return ValueError(f"MODEL.SOLOV2.{key} = {value!r} is invalid; expected {expected}")


#: Number keys of MODEL.SOLOV2: (test, words for the message). Out of range, each fails late or
#: not at all: SIGMA < 0 leaves no positive cell (loss 0, exit 0), NMS_PRE_TOPK 0,
#: DETECTIONS_PER_IMAGE 0 or MASK_THRESH_TEST >= 1 leave no prediction (AP nan),
#: DETECTIONS_PER_IMAGE -1 keeps every candidate, a grid, class or kernel count <= 0 raises a
#: RuntimeError in the first step, after OUTPUT_DIR is written.
_SOLOV2_NUMBERS = {
    "SIGMA": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "INSTANCE_CHANNELS": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "NUM_INSTANCE_CONVS": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "NUM_CLASSES": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "PRIOR_PROB": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "MASK_CHANNELS": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "NUM_KERNELS": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "FOCAL_LOSS_ALPHA": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "FOCAL_LOSS_GAMMA": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "FOCAL_LOSS_WEIGHT": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "DICE_LOSS_WEIGHT": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    # 1.0 keeps nothing, as asked (tools/demo.py --confidence-threshold 1 sets it for every detector).
    "SCORE_THRESH_TEST": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "MASK_THRESH_TEST": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "NMS_PRE_TOPK": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "NMS_SIGMA": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "UPDATE_THRESH_TEST": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "DETECTIONS_PER_IMAGE": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
}


def _check_solov2_levels(c):
    # One entry per instance level in each per-level key; names are checked against the
    # backbone when the model is built (only it knows its outputs).
    for key in ("IN_FEATURES", "MASK_IN_FEATURES"):
        value = c[key]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(f, str) and f for f in value):
            raise _invalid(key, value, "a non-empty list of backbone feature names, e.g. ['p2', 'p3']")
        if len(set(value)) != len(value):
            raise _invalid(key, value, "each feature once")
    n = len(c.IN_FEATURES)
    for key, test, words in (("NUM_GRIDS", lambda v: _is_int(v) and v >= 1, "integers >= 1"),
                             ("FPN_INSTANCE_STRIDES", lambda v: _is_int(v) and v >= 1, "integers >= 1")):
        value = c[key]
        if not isinstance(value, (list, tuple)) or not all(test(v) for v in value):
            raise _invalid(key, value, f"a list of {words}, one per MODEL.SOLOV2.IN_FEATURES entry")
        if len(value) != n:
            raise _invalid(key, value, f"{n} entries, one per MODEL.SOLOV2.IN_FEATURES entry {list(c.IN_FEATURES)}")
    ranges = c.FPN_SCALE_RANGES
    pair = lambda r: isinstance(r, (list, tuple)) and len(r) == 2 and all(_is_number(v) for v in r) and 0 <= r[0] <= r[1]  # noqa: E731
    if not isinstance(ranges, (list, tuple)) or not all(pair(r) for r in ranges):
        raise _invalid("FPN_SCALE_RANGES", ranges, "a list of [low, high] ranges with 0 <= low <= high")
    if len(ranges) != n:
        raise _invalid("FPN_SCALE_RANGES", ranges, f"{n} ranges, one per MODEL.SOLOV2.IN_FEATURES entry {list(c.IN_FEATURES)}")


def check_solov2_config(cfg):
    """Check every ``MODEL.SOLOV2`` value, whatever ``MODEL.META_ARCHITECTURE`` is.

    Without this, a value out of range trains or evaluates with exit 0 and a meaningless result
    (no positive cell, no prediction, every candidate kept) or raises a RuntimeError in the
    first step, after the output folder was written. Called by
    :func:`wnlb_d2.engine.setup.check_config` (before any output) and when a SOLOv2 model is
    built.

    Args:
        cfg (CfgNode): a config with ``MODEL.SOLOV2`` (else nothing is checked).

    Raises:
        ValueError: a value is out of range; one line naming the key, the value and the range.
    """
    if "SOLOV2" not in cfg.MODEL:
        return
    c = cfg.MODEL.SOLOV2
    _check_solov2_levels(c)
    for key, (test, words) in _SOLOV2_NUMBERS.items():
        if key in c and not test(c[key]):
            raise _invalid(key, c[key], words)
    if not isinstance(c.USE_COORD_CONV, bool):
        raise _invalid("USE_COORD_CONV", c.USE_COORD_CONV, "True or False")
    from .modeling.meta_arch.matrix_nms import MATRIX_NMS_KERNELS
    from .modeling.meta_arch.solov2_heads import CONV_INITS

    for key, allowed in (("NMS_KERNEL", MATRIX_NMS_KERNELS), ("CONV_INIT", CONV_INITS)):
        if c[key] not in allowed:
            raise _invalid(key, c[key], f"one of {tuple(allowed)}")
    _check_solov2_norm(c.NORM)


def _check_solov2_norm(norm):
    from detectron2.layers import get_norm

    words = "a detectron2 norm name: 'GN', 'BN', 'SyncBN', 'FrozenBN' ... or '' (none)"
    if not isinstance(norm, str):
        raise _invalid("NORM", norm, words)
    try:
        get_norm(norm, 32)  # the heads' own lookup: whatever this detectron2 offers
    except (KeyError, ValueError) as e:
        raise _invalid("NORM", norm, words) from e
