"""Matrix NMS (SOLOv2, Wang et al. 2020, Sec. 3.4): parallel soft suppression of masks."""

import torch

__all__ = ["MATRIX_NMS_KERNELS", "matrix_nms", "mask_iou_matrix"]

#: Decay kernels f(iou): "gaussian" exp(-sigma * iou^2), "linear" 1 - iou.
MATRIX_NMS_KERNELS = ("gaussian", "linear")


def mask_iou_matrix(masks):
    """IoU of every pair of binary masks.

    Args:
        masks (Tensor): shape ``(N, H, W)`` (or ``(N, H * W)``), bool or {0, 1} float.

    Returns:
        Tensor: ``(N, N)`` float IoU; 0 where both masks are empty.
    """
    flat = masks.reshape(masks.shape[0], -1).float()
    inter = flat @ flat.t()
    area = flat.sum(dim=1)
    union = area[:, None] + area[None, :] - inter
    return inter / union.clamp(min=1.0)


def matrix_nms(masks, labels, scores, *, kernel="gaussian", sigma=2.0, areas=None):
    """Decay the scores of masks by their overlap with higher-scoring masks of the same class.

    For a mask j, with masks sorted by decreasing score,
    ``decay_j = min(1, min_{i < j, same class} f(iou_ij) / f(comp_i))``, where
    ``comp_i = max_{k < i, same class} iou_ki`` estimates how much mask i is itself suppressed.
    All pairs are computed at once (an (N, N) matrix), with no sequential loop.

    The Gaussian kernel follows the SOLOv2 reference implementation, ``exp(-sigma * iou^2)``
    (the paper writes ``exp(-iou^2 / sigma)``; with the released ``sigma = 2.0`` they differ).

    Args:
        masks (Tensor): binary masks, shape ``(N, H, W)``, sorted by decreasing ``scores``.
        labels (Tensor): class of each mask, shape ``(N,)``.
        scores (Tensor): shape ``(N,)``, sorted in decreasing order.
        kernel (str): one of :data:`MATRIX_NMS_KERNELS`.
        sigma (float): Gaussian kernel parameter.
        areas (Tensor or None): pixels of each mask, shape ``(N,)``; computed when None.

    Returns:
        Tensor: the decayed scores, shape ``(N,)``.

    Raises:
        ValueError: unknown kernel, or inputs of different lengths.
    """
    if kernel not in MATRIX_NMS_KERNELS:
        raise ValueError(f"Matrix NMS kernel {kernel!r} is invalid; expected one of {MATRIX_NMS_KERNELS}")
    n = masks.shape[0]
    if labels.shape != (n,) or scores.shape != (n,):
        raise ValueError(
            f"matrix_nms needs one label and one score per mask: masks {tuple(masks.shape)}, "
            f"labels {tuple(labels.shape)}, scores {tuple(scores.shape)}"
        )
    if n == 0:
        return scores
    flat = masks.reshape(n, -1).float()
    inter = flat @ flat.t()
    if areas is None:
        areas = flat.sum(dim=1)
    areas = areas.float()
    union = areas[:, None] + areas[None, :] - inter
    # Only pairs (i higher-scored, j lower-scored) of the same class suppress each other.
    same_class = labels[:, None] == labels[None, :]
    decay_iou = (inter / union.clamp(min=1.0)).triu(diagonal=1) * same_class
    # comp_i: the largest IoU of mask i with any higher-scored mask of its class.
    comp_iou = decay_iou.max(dim=0).values
    comp_iou = comp_iou[:, None].expand(n, n)
    if kernel == "gaussian":
        decay = torch.exp(-sigma * (decay_iou ** 2 - comp_iou ** 2))
    else:
        decay = (1 - decay_iou) / (1 - comp_iou).clamp(min=1e-6)
    # Column j's minimum over rows i (rows i >= j and other classes give values >= 1, and row 0
    # gives <= 1, so the coefficient never exceeds 1).
    coefficient = decay.min(dim=0).values
    return scores * coefficient
