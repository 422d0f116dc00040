"""Two-stage rows of the study (the paper's Table II): an image enhancer, then the pre-trained detector.

Row ``"<enhancer>+pretrained"`` evaluates the pre-trained (normal-light) model on the low-light
test images after the enhancer, e.g. ``"nlm+clahe+pretrained"``. Zero-DCE++ needs weights: the
user's (``zero_dce_weights``, e.g. the authors' ``Epoch99.pth``), or ones trained here on the
low-light training images alone (no labels, no normal-light references) by
:func:`train_zero_dce_on_dataset`, an explicit step of the runner.
"""

import logging
import os

from detectron2.data import DatasetCatalog
from detectron2.utils import comm

from ..enhance import parse_enhancer_name

__all__ = ["ENHANCER_ROW_SUFFIX", "enhancer_row_name", "enhancer_rows", "needs_zero_dce",
           "train_zero_dce_on_dataset", "zero_dce_weights_for", "enhancer_overrides"]

logger = logging.getLogger(__name__)

#: Row names are ``<enhancer name> + ENHANCER_ROW_SUFFIX``.
ENHANCER_ROW_SUFFIX = "+pretrained"


def enhancer_row_name(enhancer):
    """``"nlm+clahe"`` -> ``"nlm+clahe+pretrained"``."""
    return enhancer + ENHANCER_ROW_SUFFIX


def enhancer_rows(results):
    """The two-stage row names present in ``results``, in insertion order."""
    return [k for k in results if isinstance(k, str) and k.endswith(ENHANCER_ROW_SUFFIX)]


def needs_zero_dce(enhancers):
    """Whether any of the enhancer names uses Zero-DCE++."""
    return any("zero_dce" in parse_enhancer_name(n, "experiment enhancer") for n in enhancers)


def train_zero_dce_on_dataset(low_light_cfg, dataset_name, out_path, *, degrade, iters=300, size=128,
                              max_images=400, seed=0):
    """Train Zero-DCE++ on the images of a registered dataset (labels are not used).

    Args:
        low_light_cfg (CfgNode): its ``INPUT.LOW_LIGHT`` gives the degradation when ``degrade``.
        dataset_name (str): a registered dataset (the low-light training set).
        out_path (str): where the weights go (the authors' layout).
        degrade (bool): degrade the images first (a normal-light dataset degraded on the fly).
        iters, size, max_images, seed: training length, image side, images used, seed.

    Returns:
        str: ``out_path``.
    """
    from ..data.synthesis import build_pipeline_from_config
    from ..enhance.zero_dce_train import load_training_images, save_zero_dce_weights, train_zero_dce

    files = [d["file_name"] for d in DatasetCatalog.get(dataset_name)][:max_images]
    pipeline = build_pipeline_from_config(low_light_cfg) if degrade else None
    images, _ = load_training_images(files, size=size, pipeline=pipeline, seed=seed)
    logger.info(f"Training Zero-DCE++ for {iters} steps on {len(images)} images of {dataset_name}"
                f"{' (degraded on the fly)' if degrade else ''}")
    model, _ = train_zero_dce(images, iters=iters, seed=seed)
    return save_zero_dce_weights(model, out_path)


def zero_dce_weights_for(spec, low_light_cfg, write=True):
    """The Zero-DCE++ weights the two-stage rows use: the spec's, or trained in ``<output>/zero_dce``.

    Weights trained by an earlier run of the same training (its ``run.json`` identity: data,
    degradation, steps) are kept; anything else there is trained afresh.

    Args:
        spec (ExperimentSpec): the study.
        low_light_cfg (CfgNode): its ``INPUT.LOW_LIGHT`` degrades the training images.
        write (bool): whether this process trains and writes (the main process).

    Returns:
        tuple[str, dict]: the weights path ("" when no row needs Zero-DCE++) and what identifies
        them (recorded with every evaluation that uses them).
    """
    from .records import RunRecord

    if not needs_zero_dce(spec.enhancers):
        return "", {}
    if spec.zero_dce_weights:
        return spec.zero_dce_weights, {"weights": spec.zero_dce_weights}
    folder = os.path.join(spec.output_dir, "zero_dce")
    identity = {"dataset": spec.finetune_data, "degrade": bool(spec.low_light_train),
                "low_light": low_light_cfg.INPUT.LOW_LIGHT.dump() if spec.low_light_train else "",
                "iters": spec.zero_dce_iters}
    record = RunRecord(folder, identity, write=write)
    weights = os.path.join(folder, "zero_dce_pp.pth")
    if record.trained is not None:
        logger.info(f"Using the Zero-DCE++ weights trained by an earlier run of this training: {weights}")
        return weights, identity
    record.start(can_resume=False)
    if write:
        train_zero_dce_on_dataset(low_light_cfg, spec.finetune_data, weights, degrade=spec.low_light_train,
                                  iters=spec.zero_dce_iters)
    comm.synchronize()
    record.finish(weights=weights)
    return weights, identity


def enhancer_overrides(name, zero_dce_weights):
    """The config overrides that put enhancer ``name`` in front of the detector at test time."""
    return {"INPUT.ENHANCER.NAME": name, "INPUT.ENHANCER.TEST": True,
            "INPUT.ENHANCER.ZERO_DCE.WEIGHTS": zero_dce_weights}
