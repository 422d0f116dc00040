"""The enhancers with weights, and how the study trains them when the user gives none.

Each is trained on the images of a registered dataset (the study's fine-tuning set), seeded:

* ``zero_dce`` (Zero-DCE++): the low-light images alone (zero-reference losses);
* ``retinexformer`` and ``agllnet``: exact (dark, clean) pairs, the clean images degraded by the
  training pipeline (:func:`~wnlb_d2.enhance.training_pairs.load_training_pairs`);
* ``enlightengan``: unpaired, alternate images dark (the low-light set) or clean (the
  normal-light set), so no image is seen both ways.

Clean images come from degrading the dataset on the fly, or, for a dataset that is dark
already, from its registered clean counterpart (an offline synthetic copy's source, LIS's
normal twins; :func:`~wnlb_d2.analysis.clean_pairs.clean_pairs`).

The weights are written in each method's released format, so the enhancer loads them as it
loads the authors' files.
"""

import importlib
import logging
from dataclasses import dataclass

from detectron2.data import DatasetCatalog

__all__ = ["TrainableEnhancer", "TRAINABLE_ENHANCERS", "trainable_parts", "train_enhancer_on_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainableEnhancer:
    """A registered enhancer that needs weights.

    Attributes:
        name (str): its ``ENHANCER_REGISTRY`` name.
        supervision (str): "zero-reference" (low-light images), "paired" or "unpaired".
        train (str): ``module:function`` of its training function.
        save (str): ``module:function`` writing its weights in the released format.
        weights_file (str): the file name the study writes.
    """

    name: str
    supervision: str
    train: str
    save: str
    weights_file: str

    def function(self, which):
        module, name = getattr(self, which).split(":")
        return getattr(importlib.import_module(module), name)


_E = "wnlb_d2.enhance."
#: Method name -> how it is trained here.
TRAINABLE_ENHANCERS = {
    "zero_dce": TrainableEnhancer("zero_dce", "zero-reference", _E + "zero_dce_train:train_zero_dce",
                                  _E + "zero_dce_train:save_zero_dce_weights", "zero_dce_pp.pth"),
    "retinexformer": TrainableEnhancer("retinexformer", "paired", _E + "retinexformer_train:train_retinexformer",
                                       _E + "retinexformer_train:save_retinexformer_weights", "retinexformer.pth"),
    "agllnet": TrainableEnhancer("agllnet", "paired", _E + "agllnet_train:train_agllnet",
                                 _E + "agllnet_train:save_agllnet_weights", "agllnet.h5"),
    "enlightengan": TrainableEnhancer("enlightengan", "unpaired", _E + "enlightengan_train:train_enlightengan",
                                      _E + "enlightengan_train:save_enlightengan_weights", "enlightengan_G_A.pth"),
}


def trainable_parts(enhancer_name):
    """The methods with weights in an enhancer name, e.g. ``"nlm+retinexformer"`` -> ``["retinexformer"]``."""
    from .build import parse_enhancer_name

    return [p for p in parse_enhancer_name(enhancer_name, "enhancer") if p in TRAINABLE_ENHANCERS]


def train_enhancer_on_dataset(method, dataset_name, low_light_cfg, out_path, *, degrade, iters, seed=0, size=128,
                              max_images=400, progress=True):
    """Train one enhancer on a registered dataset's images (labels are not used) and save it.

    Args:
        method (str): a key of :data:`TRAINABLE_ENHANCERS`.
        dataset_name (str): the training images (the study's fine-tuning set).
        low_light_cfg (CfgNode): its ``INPUT.LOW_LIGHT`` degrades the images.
        out_path (str): where the weights go (the method's released format).
        degrade (bool): the dataset is normal-light and degraded on the fly; else paired and
            unpaired methods take its registered clean counterparts.
        iters (int): optimisation steps.
        seed (int): seeds the degradation, the initialisation and the batches.
        size (int): side of the square training images.
        max_images (int): at most this many images of the dataset.

    Returns:
        str: ``out_path``.

    Raises:
        ValueError: an unknown method, or a paired/unpaired method on a dark dataset without
            clean counterparts.
    """
    from ..analysis.clean_pairs import NoCleanCounterpartError, clean_pairs
    from ..data.synthesis import build_pipeline_from_config
    from .training_pairs import load_registered_pairs, load_training_pairs
    from .zero_dce_train import load_training_images

    if method not in TRAINABLE_ENHANCERS:
        raise ValueError(f"No training for enhancer {method!r}; trainable: {sorted(TRAINABLE_ENHANCERS)}")
    spec = TRAINABLE_ENHANCERS[method]
    records = DatasetCatalog.get(dataset_name)[:max_images]
    files = [d["file_name"] for d in records]
    pipeline = build_pipeline_from_config(low_light_cfg) if degrade else None
    train = spec.function("train")
    logger.info(f"Training {method} ({spec.supervision}) for {iters} steps on {len(files)} images of {dataset_name}"
                f"{' (degraded on the fly)' if degrade else ''}, seed {seed}")
    if spec.supervision == "zero-reference":
        images, _ = load_training_images(files, size=size, pipeline=pipeline, seed=seed, progress=progress)
        model, _ = train(images, iters=iters, seed=seed, progress=progress)
        return spec.function("save")(model, out_path)
    if degrade:
        dark, clean, _ = load_training_pairs(files, pipeline, size=size, seed=seed, progress=progress)
    else:
        # Already dark: the pairs that exist as files (an offline copy's source, LIS's twins).
        try:
            pairs = clean_pairs(dataset_name, degraded_on_the_fly=False, num_images=max_images)
        except NoCleanCounterpartError as e:
            raise ValueError(f"{method} trains on {spec.supervision} clean and dark images: {e}; give the enhancer's "
                             "weights instead") from e
        dark, clean, _ = load_registered_pairs(pairs, size=size, progress=progress)
    if spec.supervision == "paired":
        model, _ = train((dark, clean), iters=iters, seed=seed, progress=progress)
    else:
        # Unpaired: alternate images are the low-light and the normal-light set, never both.
        model, _ = train(dark[0::2], clean[1::2], iters=iters, seed=seed, progress=progress)
    return spec.function("save")(model, out_path)
