"""Backbone feature maps before and after each non-local block, and a grid picture of them.

Used by ``tools/visualize_features.py`` to draw the analogue of the wNLB paper's Fig. 4: the
shallow-to-deep features of several checkpoints (pre-trained, fine-tuned, wNLB) of one
low-light image, where the features after the blocks should be visibly less noisy.

Forward hooks read each ResNet stage's output (= the block's input, "before") and each block's
output ("after"); nothing in the model is changed.
"""

import logging
import os

import numpy as np
import torch

from ..layers import NonLocalBlock2d
from ..naming import WNLB_MODULE
from ..utils.io import atomic_write

__all__ = ["bottom_up_of", "capture_backbone_features", "reduce_feature_map", "plot_feature_grid", "grid_columns"]

logger = logging.getLogger(__name__)


def bottom_up_of(model):
    """The ResNet of a detectron2 model: ``backbone.bottom_up`` (FPN) or ``backbone`` (C4)."""
    backbone = model.backbone
    bottom_up = getattr(backbone, "bottom_up", backbone)
    if not hasattr(bottom_up, "stage_names"):
        raise ValueError(f"Expected a ResNet backbone (with stage_names), got {type(bottom_up).__name__}")
    return bottom_up


def capture_backbone_features(model, image_tensor):
    """Run the backbone once and return every stage's features before and after its block.

    Args:
        model (nn.Module): a detectron2 meta-architecture (GeneralizedRCNN, RetinaNet ...).
        image_tensor (Tensor): one image, ``(C, H, W)`` in the model's input format and
            resolution (as given to ``model([{"image": ...}])``).

    Returns:
        dict[str, dict]: stage name -> ``{"before": Tensor (C, h, w), "after": Tensor or None,
        "w": float or None, "fusion": str or None}``, in stage order; ``after`` is None for a
        stage without a block, ``w`` the block's fusion weight.
    """
    bottom_up = bottom_up_of(model)
    blocks = getattr(bottom_up, WNLB_MODULE, {})
    captured = {name: {"before": None, "after": None, "w": None, "fusion": None} for name in bottom_up.stage_names}
    handles = []

    def stage_hook(name):
        def hook(module, inputs, output):
            captured[name]["before"] = output.detach()[0].float().cpu()
        return hook

    def block_hook(name):
        def hook(module, inputs, output):
            # The block's input is the stage's output: the same tensor as "before".
            captured[name]["after"] = output.detach()[0].float().cpu()
        return hook

    try:
        for name in bottom_up.stage_names:
            handles.append(getattr(bottom_up, name).register_forward_hook(stage_hook(name)))
            if name in blocks:
                handles.append(blocks[name].register_forward_hook(block_hook(name)))
        with torch.no_grad():
            images = model.preprocess_image([{"image": image_tensor.to(model.device)}])
            model.backbone(images.tensor)
    finally:
        for h in handles:
            h.remove()
    for name in list(captured):
        if name in blocks and isinstance(blocks[name], NonLocalBlock2d):
            block = blocks[name]
            captured[name]["fusion"] = block.fusion
            captured[name]["w"] = float(block.fusion_weight.detach()) if block.fusion == "weighted" else None
        if captured[name]["before"] is None:
            del captured[name]  # a stage the backbone does not compute (e.g. res5 of C4)
    return captured


def reduce_feature_map(feature, method="mean", basis=None):
    """One (h, w) map from a ``(C, h, w)`` feature map.

    Args:
        feature (Tensor): ``(C, h, w)``.
        method (str): "mean" (channel mean) or "pca" (projection on the first principal
            component over positions).
        basis (tuple or None): for "pca", ``(mean (C,), component (C,))`` to project on (so a
            block's output is shown in the same projection as its input); None: computed here.

    Returns:
        tuple[np.ndarray, tuple or None]: float64 map ``(h, w)`` and the PCA basis used.
    """
    c, h, w = feature.shape
    x = feature.reshape(c, -1).double()
    if method == "mean":
        return x.mean(0).reshape(h, w).numpy(), None
    if method != "pca":
        raise ValueError(f"reduce_feature_map: method must be 'mean' or 'pca', got {method!r}")
    if basis is None:
        mu = x.mean(1)
        centred = (x - mu[:, None]).t()  # (N, C)
        if h * w < 2:
            comp = torch.ones(c, dtype=torch.float64) / c ** 0.5
        else:
            comp = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        proj = centred @ comp
        # An eigenvector's sign is arbitrary: orient it like the channel mean, so bright means
        # strong activation in both reductions.
        if torch.dot(proj, centred.mean(1)) < 0:
            comp = -comp
        basis = (mu, comp)
    mu, comp = basis
    return ((x - mu[:, None]).t() @ comp).reshape(h, w).numpy(), basis


def _normalise(maps):
    # Shared 1st-99th percentile range, so the maps of one pair stay comparable.
    values = np.concatenate([m.ravel() for m in maps])
    lo, hi = np.percentile(values, [1, 99])
    if hi - lo < 1e-12:
        hi = lo + 1e-12
    return [np.clip((m - lo) / (hi - lo), 0, 1) for m in maps]


def grid_columns(entries):
    """Column list of the grid: ``("input", None)``, then ``(stage, "before")`` for every stage and
    ``(stage, "after")`` for stages where some checkpoint has a block."""
    stages = []
    for _, _, feats in entries:
        for s in feats:
            if s not in stages:
                stages.append(s)
    stages.sort()
    cols = [("input", None)]
    for s in stages:
        cols.append((s, "before"))
        if any(feats.get(s, {}).get("after") is not None for _, _, feats in entries):
            cols.append((s, "after"))
    return cols


def _after_title(stage, info):
    if info["fusion"] == "weighted":
        return f"{stage} after wNLB\nw = {info['w']:.3f}"
    return f"{stage} after NLB\n(residual)"


def plot_feature_grid(entries, path, *, method="mean", normalise="pair", panel_inches=1.7, dpi=100, title=None,
                      cmap="jet"):
    """Save a grid PNG: one row per checkpoint, the input then every stage before/after its block.

    Args:
        entries (list[tuple[str, np.ndarray, dict]]): ``(name, input image RGB uint8 (H, W, 3),
            features from capture_backbone_features)`` per checkpoint.
        path (str): the PNG to write (atomically).
        method (str): "mean" or "pca" (see :func:`reduce_feature_map`).
        normalise (str): "pair": a stage's before/after maps share one colour scale (what the
            block changed, magnitude included, is what differs); "each": every map spans the
            whole colour map (structure only).
        panel_inches (float): side of one panel; the figure is ``cols * panel_inches`` wide and
            ``rows * (panel_inches + 0.45)`` high (0.45 in for the two-line titles) plus 0.4 in
            for ``title``.
        dpi (int): resolution.
        title (str or None): figure title.
        cmap (str): matplotlib colour map of the features.

    Returns:
        dict: ``{"rows", "cols", "width", "height"}`` with the picture's size in pixels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not entries:
        raise ValueError("plot_feature_grid: no checkpoints to draw")
    cols = grid_columns(entries)
    rows = len(entries)
    cell_h = panel_inches + 0.45
    top = 0.4 if title else 0.0
    fig_w, fig_h = len(cols) * panel_inches, rows * cell_h + top
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / fig_h)
    for r, (name, image_rgb, feats) in enumerate(entries):
        for c, (stage, kind) in enumerate(cols):
            # Place axes in inches so every panel is square and the size is exact.
            left = c * panel_inches + 0.05
            bottom = fig_h - top - (r + 1) * cell_h + 0.05
            ax = fig.add_axes([left / fig_w, bottom / fig_h, (panel_inches - 0.1) / fig_w, (panel_inches - 0.1) / fig_h])
            ax.set_xticks([])
            ax.set_yticks([])
            if stage == "input":
                ax.imshow(image_rgb)
                ax.set_title(f"{name}\ninput", fontsize=7)
                continue
            info = feats.get(stage)
            if info is None or (kind == "after" and info["after"] is None):
                ax.axis("off")
                ax.text(0.5, 0.5, "no block" if info is not None else "-", ha="center", va="center", fontsize=7,
                        color="grey", transform=ax.transAxes)
                continue
            before, basis = reduce_feature_map(info["before"], method)
            maps = [before]
            if info["after"] is not None:
                maps.append(reduce_feature_map(info["after"], method, basis)[0])
            if normalise == "pair":
                norm = _normalise(maps)
            elif normalise == "each":
                norm = [_normalise([m])[0] for m in maps]
            else:
                raise ValueError(f"plot_feature_grid: normalise must be 'pair' or 'each', got {normalise!r}")
            shown = norm[0] if kind == "before" else norm[1]
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="bilinear")
            h, w = shown.shape
            if kind == "after":
                label = _after_title(stage, info)
            elif info["after"] is not None:
                label = f"{stage} before block\n{h}x{w}"
            else:
                label = f"{stage}\n{h}x{w}"
            ax.set_title(label, fontsize=7)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return {"rows": rows, "cols": len(cols), "width": int(round(fig_w * dpi)), "height": int(round(fig_h * dpi))}
