"""Registration of the embedded demo dataset (generated on first use; see :mod:`..demo_dataset`)."""

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..demo_dataset import DEMO_CLASSES, DemoSpec, demo_split_paths, ensure_demo_dataset
from .coco_instances import load_coco_instances

__all__ = ["register_demo", "DEMO_NAMES"]

#: Names registered on import: (split, low-light?) per suffix.
DEMO_NAMES = {
    "wnlb_demo_train": ("train", False),
    "wnlb_demo_val": ("val", False),
    "wnlb_demo_train_lowlight": ("train", True),
    "wnlb_demo_val_lowlight": ("val", True),
}


def _load(root, spec, split, lowlight):
    folder = ensure_demo_dataset(root, spec)
    image_root, json_file = demo_split_paths(folder, split, lowlight)
    return load_coco_instances(json_file, image_root, what="Demo dataset annotation file")


def register_demo(prefix="wnlb_demo", root=None, spec=None):
    """Register ``<prefix>_{train,val}`` and ``<prefix>_{train,val}_lowlight`` (lazily).

    The dataset is generated the first time one of them is loaded.

    Args:
        prefix (str): name prefix.
        root (str or None): parent folder of the generated data; None: ``$WNLB_DEMO_DIR`` or
            ``$DETECTRON2_DATASETS/wnlb_demo`` read when the data is first loaded.
        spec (DemoSpec or None): image size, counts, seed, pipeline; default ``DemoSpec()``.
    """
    spec = spec or DemoSpec()
    spec.check()
    for suffix, (split, lowlight) in DEMO_NAMES.items():
        name = prefix + suffix[len("wnlb_demo"):]
        DatasetCatalog.register(name, lambda s=split, low=lowlight: _load(root, spec, s, low))
        # No ``json_file``: the data may not exist yet when an evaluator is built, so
        # COCOEvaluator converts the loaded dicts (polygon areas, as in the JSON).
        MetadataCatalog.get(name).set(
            thing_classes=list(DEMO_CLASSES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(DEMO_CLASSES))},
            evaluator_type="coco",
            low_light="synthetic" if lowlight else "none",
            demo_spec=spec,
            # The low-light copy keeps the normal-light images' ids (wnlb_d2.analysis.clean_pairs).
            **({"clean_counterpart": prefix + f"_{split}", "clean_pairing": "image_id"} if lowlight else {}),
        )
