"""Pictures of an experiment: AP bar plot and side-by-side predictions of every row."""

import logging
import os

import numpy as np

__all__ = ["plot_results", "save_side_by_side"]

logger = logging.getLogger(__name__)


def plot_results(results, rows, path):
    """Bar plot of segm and bbox AP per row (PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r in results]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(2.1 * len(rows) + 2.5, 3.2))
    for i, task in enumerate(("segm", "bbox")):
        ap = [results[r].get(task, {}).get("AP", float("nan")) for r in rows]
        bars = ax.bar(x + (i - 0.5) * 0.38, ap, width=0.38, label=f"{task} AP")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, rows)
    ax.set_ylabel("AP (low-light test)")
    # Outside the axes: no bar is ever hidden behind it.
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title("Low-light instance segmentation")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=120)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


def save_side_by_side(models, cfg_test, dataset_name, out_dir, num_images=3, low_light=True, score_thresh=0.5):
    """Save PNGs: the (degraded) input, then each row's prediction drawn by detectron2's Visualizer.

    Args:
        models (dict[str, (CfgNode, nn.Module)]): row -> (config, model in eval mode).
        cfg_test (CfgNode): config whose INPUT.LOW_LIGHT decides the degradation of the inputs.
        dataset_name (str): registered dataset to take the first ``num_images`` images from.
        out_dir (str): folder for ``sample_<k>.png``.

    Returns:
        list[str]: paths written.
    """
    import cv2
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.visualizer import Visualizer

    from ..data.mapper import LowLightDatasetMapper

    cfg = cfg_test.clone()
    cfg.defrost()
    cfg.INPUT.LOW_LIGHT.ENABLED = bool(low_light)
    cfg.INPUT.LOW_LIGHT.TEST = bool(low_light)
    mapper = LowLightDatasetMapper(cfg, is_train=False)
    meta = MetadataCatalog.get(dataset_name)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for k, d in enumerate(DatasetCatalog.get(dataset_name)[:num_images]):
        inp = mapper(dict(d))
        img_bgr = inp["image"].permute(1, 2, 0).numpy().astype(np.uint8)
        img_rgb = img_bgr[:, :, ::-1]
        h, w = d["height"], d["width"]
        img_rgb = cv2.resize(img_rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        panels = [_label(cv2.resize(img_rgb, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST), "low-light input")]
        for row, (_, model) in models.items():
            model.eval()
            with torch.no_grad():
                inst = model([inp])[0]["instances"].to("cpu")
            inst = inst[inst.scores >= score_thresh]
            vis = Visualizer(img_rgb, metadata=meta, scale=2.0).draw_instance_predictions(inst)
            panels.append(_label(cv2.resize(vis.get_image(), (2 * w, 2 * h), interpolation=cv2.INTER_AREA), row))
        grid = np.concatenate(panels, axis=1)
        path = os.path.join(out_dir, f"sample_{k}.png")
        cv2.imwrite(path + ".tmp.png", grid[:, :, ::-1])
        os.replace(path + ".tmp.png", path)
        paths.append(path)
    return paths


def _label(img_rgb, text):
    import cv2

    bar = np.full((20, img_rgb.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img_rgb], axis=0)
