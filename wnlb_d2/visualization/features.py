"""Backbone feature maps before and after each non-local block, and a grid picture of them.

Used by ``tools/visualize_features.py`` to draw the analogue of the wNLB paper's Fig. 4: the
shallow-to-deep features of several checkpoints (pre-trained, fine-tuned, wNLB) of one
low-light image, where the features after the blocks should be visibly less noisy.

Forward hooks read each ResNet stage's output (= the block's input, "before") and each block's
output ("after"); nothing in the model is changed.

With the clean counterpart of the image (the image before the synthetic degradation, or the
clean twin of a low-light image), each row also shows the clean image's features and an error
map per stage, and the titles give the normalised feature error (NFE,
:func:`wnlb_d2.analysis.feature_error.normalised_feature_error`) of the dark image's features
against the clean ones: the picture shows denoising, or its absence, directly.
"""

import logging
import os

import numpy as np
import torch

from ..analysis.feature_error import clean_spread, normalised_feature_error, paired_maps
from ..layers import NonLocalBlock2d
from ..naming import WNLB_MODULE
from ..utils.io import atomic_write

__all__ = ["bottom_up_of", "capture_backbone_features", "reduce_feature_map", "plot_feature_grid", "grid_columns",
           "error_map", "stage_feature_errors"]

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


def _clean_of(entry):
    """The clean counterpart ``{"image", "features"}`` of a grid entry, or None (a 3-tuple entry)."""
    return entry[3] if len(entry) > 3 else None


def grid_columns(entries):
    """Column list of the grid: ``("input", None)``, then ``(stage, "before")`` for every stage and
    ``(stage, "after")`` for stages where some checkpoint has a block; with a clean counterpart
    (some entry has one), ``("clean input", None)`` after the input and ``(stage, "clean")``,
    ``(stage, "error")`` after every stage's feature maps."""
    stages = []
    for entry in entries:
        for s in entry[2]:
            if s not in stages:
                stages.append(s)
    stages.sort()
    with_clean = any(_clean_of(e) is not None for e in entries)
    cols = [("input", None)] + ([("clean input", None)] if with_clean else [])
    for s in stages:
        cols.append((s, "before"))
        if any(e[2].get(s, {}).get("after") is not None for e in entries):
            cols.append((s, "after"))
        if with_clean:
            cols += [(s, "clean"), (s, "error")]
    return cols


def _final(info):
    """A stage's output as the rest of the network sees it: after its block, if it has one."""
    return info["after"] if info["after"] is not None else info["before"]


def error_map(dark, clean):
    """Per-position error of the dark image's features against the clean ones, in NFE units.

    ``e(p) = ||F(dark)(p) - F(clean)(p)|| / sqrt(S / (h w))`` with the norm over channels and
    ``S = sum ||F(clean) - mean(F(clean))||^2`` (the NFE's denominator), so the mean of ``e^2``
    over positions is the NFE: where the map is bright, the dark image's features are far from
    the clean ones. A constant clean map (``S = 0``) gives the unnormalised distance.

    Args:
        dark, clean (Tensor): ``(C, h, w)`` feature maps of one place.

    Returns:
        np.ndarray: float64 ``(h, w)``; zero where the maps agree.

    Raises:
        ValueError: the shapes differ.
    """
    dark, clean = paired_maps("error_map", dark, clean)
    distance = (dark - clean).square().sum(0)
    spread = clean_spread(clean)
    positions = clean.shape[1] * clean.shape[2]
    scale = spread / positions if spread > 0 else torch.tensor(1.0, dtype=torch.float64)
    return (distance / scale).sqrt().numpy()


def stage_feature_errors(feats, clean_feats):
    """The NFE of every stage's features before and after its block, against the clean image's.

    Args:
        feats, clean_feats (dict): :func:`capture_backbone_features` of the dark and the clean
            image (same model, same input size).

    Returns:
        dict[str, dict]: stage -> ``{"before": NFE, "after": NFE or None}`` (None: no block).
    """
    out = {}
    for stage, info in feats.items():
        clean = clean_feats[stage]
        after = None
        if info["after"] is not None:
            after = normalised_feature_error(info["after"], clean["after"])
        out[stage] = {"before": normalised_feature_error(info["before"], clean["before"]), "after": after}
    return out


def _after_title(stage, info):
    if info["fusion"] == "weighted":
        return f"{stage} after wNLB\nw = {info['w']:.3f}"
    return f"{stage} after NLB\n(residual)"


def _panel_axes(fig, r, c, fig_w, fig_h, top, cell_h, panel_inches):
    # Placed in inches so every panel is square and the picture's size is exact.
    left = c * panel_inches + 0.05
    bottom = fig_h - top - (r + 1) * cell_h + 0.05
    ax = fig.add_axes([left / fig_w, bottom / fig_h, (panel_inches - 0.1) / fig_w, (panel_inches - 0.1) / fig_h])
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _blank(ax, text):
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="grey", transform=ax.transAxes)


def _stage_maps(info, clean_info, method, normalise):
    """``{"before", "after", "clean"}`` maps of one stage in one projection, scaled to [0, 1].

    The clean map is the clean image's features at the stage's final place (after its block).
    """
    before, basis = reduce_feature_map(info["before"], method)
    maps = {"before": before}
    if info["after"] is not None:
        maps["after"] = reduce_feature_map(info["after"], method, basis)[0]
    if clean_info is not None:
        maps["clean"] = reduce_feature_map(_final(clean_info), method, basis)[0]
    if normalise == "pair":
        return dict(zip(maps, _normalise(list(maps.values()))))
    if normalise == "each":
        return {k: _normalise([m])[0] for k, m in maps.items()}
    raise ValueError(f"plot_feature_grid: normalise must be 'pair' or 'each', got {normalise!r}")


def _error_maps(entries):
    """``[{stage: error map}]`` per entry (empty without a clean counterpart) and the colour-scale
    top per stage, shared by the rows so their errors compare."""
    maps, top = [], {}
    for entry in entries:
        clean = _clean_of(entry)
        row = {}
        if clean is not None:
            for stage, info in entry[2].items():
                row[stage] = error_map(_final(info), _final(clean["features"][stage]))
                top[stage] = max(top.get(stage, 0.0), float(np.percentile(row[stage], 99)))
        maps.append(row)
    return maps, {stage: v if v > 0 else 1.0 for stage, v in top.items()}


def _feature_title(stage, kind, info, shape, nfe):
    """Title of a feature panel; ``nfe`` (:func:`stage_feature_errors` of the stage, or None) adds the
    NFE of the dark image's features at that place."""
    h, w = shape
    if kind == "clean":
        return f"{stage} clean\n{'after block' if info['after'] is not None else f'{h}x{w}'}"
    score = f", NFE {nfe[kind]:.3f}" if nfe else ""
    if kind == "after":
        return _after_title(stage, info) + score
    if info["after"] is not None:
        return f"{stage} before block\n{h}x{w}{score}"
    return f"{stage}\n{h}x{w}{score}"


def plot_feature_grid(entries, path, *, method="mean", normalise="pair", panel_inches=1.7, dpi=100, title=None,
                      cmap="jet", error_cmap="magma"):
    """Save a grid PNG: one row per checkpoint, the input then every stage before/after its block.

    With a clean counterpart, each row also has the clean input and, per stage, the clean image's
    features (after the block, where there is one) and the error map (:func:`error_map`) of the
    stage's final output; the titles give the NFE before and after the block.

    Args:
        entries (list[tuple]): per checkpoint ``(name, input image RGB uint8 (H, W, 3), features
            from capture_backbone_features)``, optionally with a fourth element ``{"image": clean
            image RGB uint8, "features": the clean image's features}`` (None: no counterpart).
        path (str): the PNG to write (atomically).
        method (str): "mean" or "pca" (see :func:`reduce_feature_map`).
        normalise (str): "pair": a stage's before/after (and clean) maps share one colour scale
            and projection (what the block changed, magnitude included, is what differs);
            "each": every map spans the whole colour map (structure only). Error maps share one
            scale per stage across the rows.
        panel_inches (float): side of one panel; the figure is ``cols * panel_inches`` wide and
            ``rows * (panel_inches + 0.45)`` high (0.45 in for the two-line titles) plus 0.4 in
            for ``title``.
        dpi (int): resolution.
        title (str or None): figure title.
        cmap (str): matplotlib colour map of the features.
        error_cmap (str): matplotlib colour map of the error maps.

    Returns:
        dict: ``{"rows", "cols", "width", "height"}`` with the picture's size in pixels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not entries:
        raise ValueError("plot_feature_grid: no checkpoints to draw")
    if normalise not in ("pair", "each"):
        raise ValueError(f"plot_feature_grid: normalise must be 'pair' or 'each', got {normalise!r}")
    cols = grid_columns(entries)
    errors, error_top = _error_maps(entries)
    rows = len(entries)
    cell_h = panel_inches + 0.45
    top = 0.4 if title else 0.0
    fig_w, fig_h = len(cols) * panel_inches, rows * cell_h + top
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / fig_h)
    for r, entry in enumerate(entries):
        name, image_rgb, feats = entry[:3]
        clean = _clean_of(entry)
        nfe = stage_feature_errors(feats, clean["features"]) if clean is not None else {}
        stage_maps = {}
        for c, (stage, kind) in enumerate(cols):
            ax = _panel_axes(fig, r, c, fig_w, fig_h, top, cell_h, panel_inches)
            if kind is None:  # the input images
                shown = image_rgb if stage == "input" else (clean["image"] if clean is not None else None)
                if shown is None:
                    _blank(ax, "no clean image")
                    continue
                ax.imshow(shown)
                ax.set_title(f"{name}\n{stage}", fontsize=7)
                continue
            info = feats.get(stage)
            if info is None or (kind == "after" and info["after"] is None):
                _blank(ax, "no block" if info is not None else "-")
                continue
            if kind in ("clean", "error") and clean is None:
                _blank(ax, "no clean image")
                continue
            if kind == "error":
                ax.imshow(errors[r][stage], cmap=error_cmap, vmin=0, vmax=error_top[stage], interpolation="bilinear")
                final = nfe[stage]["after" if info["after"] is not None else "before"]
                ax.set_title(f"{stage} |dark - clean|\nNFE {final:.3f}", fontsize=7)
                continue
            if stage not in stage_maps:
                stage_maps[stage] = _stage_maps(info, clean["features"][stage] if clean is not None else None,
                                                method, normalise)
            shown = stage_maps[stage][kind]
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="bilinear")
            ax.set_title(_feature_title(stage, kind, info, shown.shape, nfe.get(stage)), fontsize=7)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return {"rows": rows, "cols": len(cols), "width": int(round(fig_w * dpi)), "height": int(round(fig_h * dpi))}
