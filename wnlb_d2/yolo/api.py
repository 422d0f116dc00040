"""Function-level API: train and evaluate one YOLO row, returning COCOEvaluator-style metrics.

Made for an experiment runner beside the detectron2 rows (same registered datasets, the same
low-light degradation, the same pycocotools scoring)::

    from wnlb_d2.yolo import train_yolo_row, evaluate_yolo, LowLightSpec
    res = train_yolo_row("configs/yolo/yolov8n-seg-wnlb.yaml", "wnlb_demo_train", "wnlb_demo_val",
                         "output/yolo/wnlb", low_light=LowLightSpec("lv2021"), plain_weights="pre.pt")
    res["segm"]["AP"]

Both functions export the registered datasets into Ultralytics' layout (links, under
``<output>/yolo_data`` unless ``data_root`` is given), write a data YAML with the low-light
spec into the run folder, and keep everything Ultralytics writes inside ``output_dir``.
"""

import json
import logging
import os
import time
from pathlib import Path

from ..model_zoo import resolve_config_file
from ..utils.io import atomic_write_json
from .convert import dataset_fingerprint, export_yolo_dataset, load_dataset, read_index
from .data import LowLightSpec, write_data_yaml
from .evaluate import coco_ground_truth, results_to_dataset_ids, score_coco
from .model_yaml import check_model_yaml
from .train import LowLightSegmentationTrainer, LowLightSegmentationValidator, block_weights
from .weights import check_class_names, check_weights_file, is_weights_path, model_class_names

__all__ = ["export_splits", "evaluate_yolo", "train_yolo_row", "DEFAULT_TRAIN_ARGS"]

logger = logging.getLogger(__name__)

#: Ultralytics arguments that train_yolo_row sets unless given: deterministic, quiet, offline.
DEFAULT_TRAIN_ARGS = {
    "optimizer": "AdamW",  # 'auto' would switch optimizer and lr by the iteration count
    "lr0": 2e-3,
    "amp": False,  # Ultralytics' AMP check downloads a model on CUDA; CPU has no AMP
    "plots": False,
    "val": False,  # validate once at the end (the row's number is scored by pycocotools)
    "cache": False,
    "workers": 0,
    "seed": 0,
    "deterministic": True,
    "pretrained": False,
    "exist_ok": True,
    "verbose": False,
}


def _split_name(dataset):
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in dataset)


def export_splits(datasets, data_root, link="symlink"):
    """Export registered datasets (one split each, named after the dataset) unless exported already.

    An export is reused when its index names the dataset, has the same
    :func:`~wnlb_d2.yolo.convert.dataset_fingerprint` and its images are all there.

    Args:
        datasets (sequence of str): registered dataset names.
        data_root (str): the Ultralytics dataset root.
        link (str): ``symlink``, ``hardlink`` or ``copy``.

    Returns:
        dict[str, dict]: dataset name -> export index.
    """
    out = {}
    for name in dict.fromkeys(datasets):
        split = _split_name(name)
        loaded = load_dataset(name)
        try:
            index = read_index(data_root, split)
            # Same dataset content (a regenerated or re-registered set re-exports) and files present.
            fresh = (index.get("dataset") == name and index.get("fingerprint") == dataset_fingerprint(loaded[1])
                     and all(os.path.exists(os.path.join(data_root, r["yolo_file"])) for r in index["images"]))
        except FileNotFoundError:
            fresh = False
        out[name] = index if fresh else export_yolo_dataset(name, data_root, split, link=link, loaded=loaded)
    return out


def _check_model_classes(weights, dataset, caller):
    """Refuse weights that name no local file, or whose class names are not ``dataset``'s."""
    from detectron2.data import MetadataCatalog

    what = f"{caller}: the model"
    if is_weights_path(weights):
        what = f"{caller}: weights {check_weights_file(weights, caller)!r}"
    classes = getattr(MetadataCatalog.get(dataset), "thing_classes", None)
    if classes is not None:
        check_class_names(model_class_names(weights), classes, what, dataset)


def _data_yaml(path, data_root, train, val, index, low_light):
    return write_data_yaml(path, data_root, index["names"], train=_split_name(train), val=_split_name(val),
                           low_light=low_light)


def evaluate_yolo(weights, dataset, output_dir, *, low_light=None, data_root=None, imgsz=640, batch=16,
                  device="cpu", conf=0.001, iou=0.7, max_det=100, link="symlink", bootstrap_samples=0):
    """Validate a YOLO segmentation model on a registered dataset; COCO metrics by pycocotools.

    Args:
        weights (str or torch.nn.Module): an Ultralytics ``.pt`` checkpoint or a model.
        dataset (str): registered detectron2 dataset (COCO-format, with masks).
        output_dir (str): where ``predictions.json``, the data YAML and ``coco_metrics.json`` go.
        low_light (LowLightSpec or dict or None): degrade the images (its ``val`` side, seeded per
            image as the detectron2 evaluation).
        data_root (str or None): export root; default ``<output_dir>/yolo_data``.
        imgsz, batch, device, conf, iou, max_det: Ultralytics' validation arguments
            (``max_det`` 100 as detectron2 and COCOeval's largest maxDets).
        link (str): how images are exported.
        bootstrap_samples (int): image-level bootstrap samples of each task's AP (adds
            ``"AP-ci95-lo"`` / ``"AP-ci95-hi"`` as ``TEST.BOOTSTRAP_SAMPLES`` does; 0: off).

    Returns:
        dict: ``{"segm": {"AP": ..., ...}, "bbox": {...}}`` as detectron2's COCOEvaluator returns.

    Raises:
        FileNotFoundError: ``weights`` names no local file (nothing is downloaded).
        ValueError: the weights' class names differ from the dataset's, or an image of the
            dataset cannot be read (:class:`~wnlb_d2.data.image_io.ImageReadError`, naming it).
    """
    spec = LowLightSpec.from_dict(low_light) if not isinstance(low_light, LowLightSpec) else low_light
    _check_model_classes(weights, dataset, "evaluate_yolo")
    output_dir = os.path.abspath(output_dir)
    data_root = os.path.abspath(data_root or os.path.join(output_dir, "yolo_data"))
    index = export_splits([dataset], data_root, link)[dataset]
    data_yaml = _data_yaml(os.path.join(output_dir, "data_eval.yaml"), data_root, dataset, dataset, index, spec)
    save_dir = Path(output_dir) / "val"
    save_dir.mkdir(parents=True, exist_ok=True)
    pred_file = save_dir / "predictions.json"
    if pred_file.exists():
        pred_file.unlink()  # no stale predictions from an earlier run
    args = dict(task="segment", mode="val", data=data_yaml, imgsz=imgsz, batch=batch, device=device, conf=conf,
                iou=iou, max_det=max_det, save_json=True, plots=False, rect=True, workers=0, verbose=False,
                split="val")
    validator = LowLightSegmentationValidator(save_dir=save_dir, args=args)
    t0 = time.perf_counter()
    stats = validator(model=weights)
    raw = json.loads(pred_file.read_text()) if pred_file.exists() else []
    classes = sorted(index["category_ids"])
    results = score_coco(coco_ground_truth(dataset), results_to_dataset_ids(raw, index),
                         class_names=[index["names"][i] for i in classes],
                         class_ids=[index["category_ids"][i] for i in classes], bootstrap_samples=bootstrap_samples)
    ultra = {k: float(v) * 100 for k, v in stats.items() if k.startswith("metrics/mAP")}
    logger.info(f"{dataset}: pycocotools segm AP {results['segm']['AP']:.1f}, bbox AP {results['bbox']['AP']:.1f} "
                f"(Ultralytics' own mAP50-95: masks {ultra.get('metrics/mAP50-95(M)', float('nan')):.1f}, boxes "
                f"{ultra.get('metrics/mAP50-95(B)', float('nan')):.1f}; not comparable) in "
                f"{time.perf_counter() - t0:.0f} s")
    atomic_write_json(os.path.join(output_dir, "coco_metrics.json"),
                      {"dataset": dataset, "coco": results, "ultralytics_mAP_not_coco": ultra,
                       "predictions": str(pred_file), "low_light": dict(spec)}, indent=1)
    return results


def train_yolo_row(model, train_dataset, val_dataset, output_dir, *, low_light=None, plain_weights=None,
                   data_root=None, epochs=10, imgsz=128, batch=16, device="cpu", link="symlink", eval_batch=32,
                   callbacks=None, wnlb_lr_factor=1.0, wnlb_weight_lr_factor=1.0, **train_args):
    """Train one YOLO segmentation row and score it on ``val_dataset`` with pycocotools.

    Args:
        model (str): a model YAML (``configs/yolo/yolov8n-seg-wnlb.yaml``: outside the repository
            the copy shipped with the package; or a stock name such as ``yolov8n-seg.yaml`` for a
            row without blocks).
        train_dataset, val_dataset (str): registered detectron2 datasets.
        output_dir (str): the row's folder (``train/`` holds Ultralytics' run, ``weights/``).
        low_light (LowLightSpec or dict or None): degradation of training (fresh draws) and
            validation (seeded) images.
        plain_weights: weights of the plain model to start from (``.pt``, model or state dict),
            loaded through the layer map; None trains from scratch.
        data_root (str or None): export root; default ``<output_dir>/yolo_data``.
        epochs, imgsz, batch, device: Ultralytics' training arguments.
        link (str): how images are exported.
        eval_batch (int): batch of the final evaluation.
        callbacks (dict or None): Ultralytics callbacks to add, ``{event: function(trainer)}``.
        wnlb_lr_factor, wnlb_weight_lr_factor (float): learning-rate factors of the blocks'
            parameters and, on top, of their w (see :class:`LowLightSegmentationTrainer`).
        **train_args: further Ultralytics arguments (over :data:`DEFAULT_TRAIN_ARGS`).

    Returns:
        dict: ``{"segm": {...}, "bbox": {...}}`` on ``val_dataset`` (see :func:`evaluate_yolo`).
        ``<output_dir>/row.json`` also records the weights, times, final losses and block w
        (``block_w``: ``{layer index: w}``; ``w_trajectory``: ``[{"iteration": i, <layer index>: w},
        ...]`` at each epoch's end).

    Raises:
        FileNotFoundError: ``plain_weights`` names no local file (nothing is downloaded).
        ValueError: ``model`` is not a valid model YAML, the plain weights' class names differ
            from the training data's, or an image cannot be read (the message names the file).
    """
    spec = LowLightSpec.from_dict(low_light) if not isinstance(low_light, LowLightSpec) else low_light
    # configs/yolo/... from outside the repository is the shipped copy (row.json keeps the name given).
    model_file = resolve_config_file(model)
    # Before anything is written: a bad YAML or weights file fails now, in one line.
    check_model_yaml(model_file)
    if plain_weights is not None:
        _check_model_classes(plain_weights, train_dataset, "train_yolo_row: plain_weights")
    output_dir = os.path.abspath(output_dir)
    data_root = os.path.abspath(data_root or os.path.join(output_dir, "yolo_data"))
    indexes = export_splits([train_dataset, val_dataset], data_root, link)
    if indexes[train_dataset]["names"] != indexes[val_dataset]["names"]:
        raise ValueError(f"train_yolo_row: {train_dataset} and {val_dataset} have different classes")
    data_yaml = _data_yaml(os.path.join(output_dir, "data.yaml"), data_root, train_dataset, val_dataset,
                           indexes[train_dataset], spec)
    # Ultralytics accumulates gradients up to a nominal batch of 64 (nbs): with batch 16 one
    # optimizer step per 4 batches, and none at all in a short run. Default: a step per batch.
    train_args.setdefault("nbs", batch)
    overrides = {**DEFAULT_TRAIN_ARGS, **train_args, "model": str(model_file), "data": data_yaml, "epochs": epochs,
                 "imgsz": imgsz, "batch": batch, "device": device, "project": output_dir, "name": "train"}
    trainer = LowLightSegmentationTrainer(overrides=overrides, plain_weights=plain_weights,
                                          wnlb_lr_factor=wnlb_lr_factor, wnlb_weight_lr_factor=wnlb_weight_lr_factor)
    w_trajectory = []

    def record_w(tr):
        # The weighted blocks' w at the end of each epoch, as detectron2's metrics.json records
        # wnlb/w_<stage> (the model whose weights are saved: the EMA).
        w = block_weights(tr.ema.ema if tr.ema else tr.model)
        if w:
            w_trajectory.append({"iteration": (tr.epoch + 1) * len(tr.train_loader) - 1, **w})

    trainer.add_callback("on_train_epoch_end", record_w)
    for event, fn in (callbacks or {}).items():
        trainer.add_callback(event, fn)
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    weights = trainer.best if trainer.best.exists() else trainer.last
    results = evaluate_yolo(str(weights), val_dataset, output_dir, low_light=spec, data_root=data_root,
                            imgsz=imgsz, batch=eval_batch, device=device)
    row = {
        "model": str(model), "train_dataset": train_dataset, "val_dataset": val_dataset, "weights": str(weights),
        "train_seconds": train_seconds, "epochs": trainer.epoch + 1, "imgsz": imgsz, "batch": batch,
        "final_losses": {k: float(v) for k, v in (trainer.tloss or {}).items()},
        "block_w": block_weights(trainer.ema.ema if trainer.ema else trainer.model),
        "w_trajectory": w_trajectory,
        "wnlb_lr_factor": trainer.wnlb_lr_factor, "wnlb_weight_lr_factor": trainer.wnlb_weight_lr_factor,
        "low_light": dict(spec), "results": results,
    }
    atomic_write_json(os.path.join(output_dir, "row.json"), row, indent=1)
    return results
