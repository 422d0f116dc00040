"""Two-stage rows of the experiment table (the paper's Table II): enhancer + pre-trained detector.

Row ``"<enhancer>+pretrained"`` evaluates the pre-trained (normal-light) model on the low-light
test images after the enhancer, e.g. ``"nlm+clahe+pretrained"``. Zero-DCE++ needs weights: the
user's (``zero_dce_weights``, e.g. the authors' ``Epoch99.pth``), or ones trained here on the
low-light training images alone (no labels, no normal-light references).
"""

import logging
import os

from detectron2.data import DatasetCatalog

from .build import parse_enhancer_name

__all__ = ["ENHANCER_ROW_SUFFIX", "enhancer_row_name", "enhancer_rows", "check_enhancer_names",
           "enhancer_row_configs", "train_zero_dce_on_dataset"]

logger = logging.getLogger(__name__)

#: Row names are ``<enhancer name> + ENHANCER_ROW_SUFFIX``.
ENHANCER_ROW_SUFFIX = "+pretrained"


def enhancer_row_name(enhancer):
    """``"nlm+clahe"`` -> ``"nlm+clahe+pretrained"``."""
    return enhancer + ENHANCER_ROW_SUFFIX


def enhancer_rows(results):
    """The two-stage row names present in ``results``, in insertion order."""
    return [k for k in results if isinstance(k, str) and k.endswith(ENHANCER_ROW_SUFFIX)]


def check_enhancer_names(names):
    """Raise ``ValueError`` naming the bad entry unless every name is a valid, non-"none" enhancer."""
    for name in names:
        if not parse_enhancer_name(name, "experiment enhancer"):
            raise ValueError(f"experiment enhancer {name!r}: 'none' is the pretrained row itself; "
                             "give an enhancer such as 'clahe' or 'nlm+clahe'")


def train_zero_dce_on_dataset(cfg, dataset_name, out_path, *, degrade, iters=300, size=128, max_images=400, seed=0):
    """Train Zero-DCE++ on the images of a registered dataset (labels are not used).

    Args:
        cfg (CfgNode): its ``INPUT.LOW_LIGHT`` gives the degradation when ``degrade``.
        dataset_name (str): a registered dataset (the low-light training set).
        out_path (str): where the weights go (the authors' layout).
        degrade (bool): degrade the images first (a normal-light dataset degraded on the fly).
        iters, size, max_images, seed: training length, image side, images used, seed.

    Returns:
        str: ``out_path``.
    """
    from ..data.synthesis import build_pipeline_from_config
    from .zero_dce_train import load_training_images, save_zero_dce_weights, train_zero_dce

    files = [d["file_name"] for d in DatasetCatalog.get(dataset_name)][:max_images]
    pipeline = build_pipeline_from_config(cfg) if degrade else None
    images, _ = load_training_images(files, size=size, pipeline=pipeline, seed=seed)
    logger.info(f"Training Zero-DCE++ for {iters} steps on {len(images)} images of {dataset_name}"
                f"{' (degraded on the fly)' if degrade else ''}")
    model, _ = train_zero_dce(images, iters=iters, seed=seed)
    return save_zero_dce_weights(model, out_path)


def enhancer_row_configs(spec, cfg, train_data):
    """Configs of the two-stage rows: ``cfg`` with ``INPUT.ENHANCER`` set, one per enhancer.

    Args:
        spec (ExperimentSpec): ``enhancers``, ``zero_dce_weights``, ``zero_dce_iters``,
            ``output_dir``, ``low_light_train`` are read.
        cfg (CfgNode): the pre-trained row's config.
        train_data (str): low-light training dataset for Zero-DCE++ when no weights are given.

    Returns:
        tuple[list[tuple[str, CfgNode]], str]: ``(row name, config)`` pairs, and the Zero-DCE++
        weights used ("" when no row needs them).
    """
    check_enhancer_names(spec.enhancers)
    weights = spec.zero_dce_weights
    if not weights and any("zero_dce" in parse_enhancer_name(n) for n in spec.enhancers):
        weights = os.path.join(spec.output_dir, "zero_dce", "zero_dce_pp.pth")
        if os.path.isfile(weights):
            logger.info(f"Using the Zero-DCE++ weights trained by an earlier run: {weights}")
        else:
            train_zero_dce_on_dataset(cfg, train_data, weights, degrade=spec.low_light_train,
                                      iters=spec.zero_dce_iters)
    rows = []
    for name in spec.enhancers:
        row = enhancer_row_name(name)
        c = cfg.clone()
        c.defrost()
        c.INPUT.ENHANCER.NAME = name
        c.INPUT.ENHANCER.TEST = True
        c.INPUT.ENHANCER.ZERO_DCE.WEIGHTS = weights
        c.OUTPUT_DIR = os.path.join(spec.output_dir, row)
        c.freeze()
        rows.append((row, c))
    return rows, weights
