"""``coco_2017_{train,val}_lowlight``: offline low-light copies of COCO made by the prepare script.

Layout under ``$DETECTRON2_DATASETS`` (what ``datasets/prepare_lowlight_coco.py`` writes with
``--output coco/lowlight/<split>``)::

    coco/lowlight/
      train2017/, val2017/                     low-light images, same file names as COCO's,
                                               and manifest.jsonl (parameters per image)
      annotations/instances_{train,val}2017.json
                                               byte-identical copies of COCO's annotation files,
                                               written last, once every image is rendered

Using the copy (not ``coco/annotations``) makes an unfinished rendering fail loudly instead of
silently training or evaluating on a partial image set; every image the copy lists must exist.

Evaluation: the metadata's ``json_file`` (which COCOEvaluator re-reads as its ground truth) is
set when the dataset is first loaded, and only if loading dropped nothing (no invalid box,
polygon or mask), so that COCOEvaluator scores against COCO's own file exactly as for the stock
``coco_2017_*``. If anything was dropped it stays unset: COCOEvaluator then converts the
cleaned dicts (``convert_to_coco_json``), so training and evaluation see the same ground truth
and pycocotools never meets a polygon it cannot rasterise. (If the evaluator is built before
the dataset is loaded, it sets ``json_file`` to its converted copy itself, which is clean too.)

The on-the-fly variant has no name of its own: it is the stock ``coco_2017_*`` dataset read
through the low-light dataset mapper (``INPUT.LOW_LIGHT.ENABLED True``).
"""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco_instances import load_coco_instances
from .coco_space import coco_metadata
from .paths import require_file

__all__ = ["register_coco_lowlight", "register_all_coco_lowlight", "COCO_LOWLIGHT_SPLITS"]

logger = logging.getLogger(__name__)

#: Registered name -> COCO split folder.
COCO_LOWLIGHT_SPLITS = {
    "coco_2017_train_lowlight": "train2017",
    "coco_2017_val_lowlight": "val2017",
}


def _coco_id_mapper(categories, json_file):
    # The copy is COCO's own file, so COCO's fixed id mapping applies (as for coco_2017_*).
    return coco_metadata()["thing_dataset_id_to_contiguous_id"]


def _load(name, json_file, image_root):
    require_file(
        json_file,
        "Annotation copy of the low-light COCO images (datasets/prepare_lowlight_coco.py writes "
        "it once every image is rendered; run or resume that command)",
    )
    report = {}
    dicts = load_coco_instances(json_file, image_root, _coco_id_mapper, report=report)
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "json_file"):
        if any(report.values()):
            logger.warning(
                f"{name}: {json_file} holds annotations that were dropped ({report}); its "
                "metadata gets no json_file, so COCOEvaluator scores against the cleaned dicts."
            )
        else:
            meta.json_file = json_file
    return dicts


def register_coco_lowlight(name, root, split_dir, lowlight_dir="coco/lowlight"):
    """Register one offline low-light COCO split (lazily: nothing is read now).

    Args:
        name (str): dataset name to register.
        root (str): the datasets root.
        split_dir (str): ``"train2017"`` or ``"val2017"``.
        lowlight_dir (str): folder of the copy under ``root``.
    """
    base = os.path.join(root, lowlight_dir)
    image_root = os.path.join(base, split_dir)
    json_file = os.path.join(base, "annotations", f"instances_{split_dir}.json")
    DatasetCatalog.register(name, lambda: _load(name, json_file, image_root))
    # No json_file yet: set on first load if the file is clean (see the module docstring).
    MetadataCatalog.get(name).set(
        annotation_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        low_light="synthetic",
        low_light_manifest=os.path.join(image_root, "manifest.jsonl"),
        # The copy keeps COCO's image ids: its clean twins (wnlb_d2.analysis.clean_pairs).
        clean_counterpart=f"coco_2017_{split_dir[:-len('2017')]}",
        clean_pairing="image_id",
        **coco_metadata(),
    )


def register_all_coco_lowlight(root):
    """Register ``coco_2017_train_lowlight`` and ``coco_2017_val_lowlight``.

    Args:
        root (str): the datasets root.
    """
    for name, split_dir in COCO_LOWLIGHT_SPLITS.items():
        register_coco_lowlight(name, root, split_dir)
