"""SOLOv2 inference: from grid-cell scores and kernels to instances at the original image size."""

import logging

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from .matrix_nms import matrix_nms

__all__ = ["masks_to_boxes", "point_nms", "solov2_inference_single_image", "solov2_inference_single_image_padded"]

logger = logging.getLogger(__name__)

# Candidate masks are scored in chunks of this many, so memory stays bounded when many cells
# pass the score threshold (up to sum(S^2) = 3872 cells at COCO sizes).
_CHUNK = 256


def masks_to_boxes(masks):
    """Tight XYXY boxes around binary masks (pixel edges: a single pixel (x, y) -> (x, y, x+1, y+1)).

    Args:
        masks (Tensor): bool, shape ``(N, H, W)``.

    Returns:
        Tensor: ``(N, 4)`` float boxes on the masks' device; all zero for an empty mask.
    """
    # No branch on N (a trace would keep the tracing image's; torch.export cannot branch on a
    # data-dependent count): with N = 0 the reductions run over the non-empty W and H axes.
    h, w = masks.shape[1], masks.shape[2]
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # (N, W), (N, H)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x0 = torch.where(cols, xs, w).min(dim=1).values
    x1 = torch.where(cols, xs, -1).max(dim=1).values + 1
    y0 = torch.where(rows, ys, h).min(dim=1).values
    y1 = torch.where(rows, ys, -1).max(dim=1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * cols.any(dim=1, keepdim=True)


def point_nms(heat):
    """Keep only category scores that are local maxima of their 2 x 2 neighbourhood.

    Neighbouring cells often fire for the same instance; this removes the cheap duplicates
    before masks are computed (as the SOLO reference implementation does).

    Args:
        heat (Tensor): sigmoid scores, shape ``(B, C, S, S)``.

    Returns:
        Tensor: same shape, zero where a cell is not a local maximum.
    """
    hmax = F.max_pool2d(heat, kernel_size=2, stride=1, padding=1)[..., :-1, :-1]
    return heat * (hmax == heat)


def _empty(out_size, device, mask_probs=False):
    res = Instances(out_size)
    res.pred_masks = torch.zeros((0,) + tuple(out_size), dtype=torch.bool, device=device)
    if mask_probs:
        res.pred_mask_probs = torch.zeros((0,) + tuple(out_size), device=device)
    res.pred_boxes = Boxes(torch.zeros((0, 4), device=device))
    res.scores = torch.zeros(0, device=device)
    res.pred_classes = torch.zeros(0, dtype=torch.long, device=device)
    return res


def _area_and_maskness(kernels, feats, mask_thresh):
    """Area and maskness of the masks of some kernels, scored in chunks of ``_CHUNK`` (bounded memory).

    Args:
        kernels (Tensor): ``(N, E)`` dynamic kernels.
        feats (Tensor): ``(E, h * w)`` mask features.
        mask_thresh (float): the binary mask is ``sigmoid(kernel @ feats) > mask_thresh``.

    Returns:
        tuple[Tensor, Tensor]: ``(N,)`` area (pixels of the binary mask) and maskness (mean
        probability inside it; 0 for an empty mask).
    """
    areas, masknesses = [], []
    for i in range(0, kernels.shape[0], _CHUNK):  # the trip count depends on N only
        prob = (kernels[i:i + _CHUNK] @ feats).sigmoid()
        binary = prob > mask_thresh
        area = binary.sum(dim=1).float()
        areas.append(area)
        masknesses.append((prob * binary).sum(dim=1) / area.clamp(min=1.0))
    return torch.cat(areas), torch.cat(masknesses)


def _instances_at_output_size(prob, scores, classes, image_size, out_size, mask_stride, mask_thresh, mask_probs):
    """The kept masks as Instances at the output size.

    Up-sample to the padded image, drop the padding, then resize to the original image (bilinear
    on probabilities, then threshold, so edges are not blocky).

    Args:
        prob (Tensor): ``(N, h, w)`` mask probabilities at the mask features' resolution.
        scores, classes (Tensor): ``(N,)``.
        image_size, out_size: ``(height, width)`` of the unpadded input and of the output (ints
            or 0-dim tensors, the traced sizes).
        mask_stride (int), mask_thresh (float), mask_probs (bool): as the inference functions'.

    Returns:
        Instances: ``pred_masks``, ``pred_boxes`` (from the masks), ``scores``, ``pred_classes``
        and, with ``mask_probs``, ``pred_mask_probs``.
    """
    h, w = prob.shape[-2], prob.shape[-1]
    prob = F.interpolate(prob[:, None], size=(mask_stride * h, mask_stride * w), mode="bilinear", align_corners=False)
    prob = prob[:, :, : image_size[0], : image_size[1]]
    prob = F.interpolate(prob, size=(out_size[0], out_size[1]), mode="bilinear", align_corners=False)[:, 0]
    masks = prob > mask_thresh

    res = Instances(tuple(out_size))
    res.pred_masks = masks
    if mask_probs:
        res.pred_mask_probs = prob
    res.pred_boxes = Boxes(masks_to_boxes(masks))
    res.scores = scores
    res.pred_classes = classes
    return res


def solov2_inference_single_image(
    cate_scores, kernels, cell_strides, mask_features, image_size, out_size, *,
    mask_stride=4, score_thresh=0.1, mask_thresh=0.5, nms_pre=500, nms_kernel="gaussian", nms_sigma=2.0,
    update_thresh=0.05, max_per_image=100, mask_probs=False,
):
    """SOLOv2 inference for one image.

    Candidates are cells (and classes) scoring above ``score_thresh``; their masks are the
    kernels applied to the mask features; a mask no larger than its level's stride is
    dropped; scores are multiplied by the maskness (the mean probability inside the binary
    mask); the top ``nms_pre`` go through Matrix NMS; survivors above ``update_thresh``, at
    most ``max_per_image``, are returned with their masks resized to the original image size.

    Args:
        cate_scores (Tensor): ``(M, C)`` sigmoid category scores of all cells (after point NMS).
        kernels (Tensor): ``(M, E)`` dynamic kernels of all cells.
        cell_strides (Tensor): ``(M,)`` stride of each cell's level.
        mask_features (Tensor): ``(E, h, w)`` mask features of the padded image.
        image_size (tuple[int, int]): ``(H, W)`` of the input image before padding.
        out_size (tuple[int, int]): ``(height, width)`` of the requested output (the original
            image size, as in ``detector_postprocess``).
        mask_stride (int): stride of the mask features in the padded image (P2: 4).
        score_thresh, mask_thresh, nms_pre, nms_kernel, nms_sigma, update_thresh,
            max_per_image: the ``MODEL.SOLOV2`` inference keys.
        mask_probs (bool): also return ``pred_mask_probs``, the masks' probabilities before
            ``mask_thresh`` (what an exported model returns: a threshold flips a pixel whose
            probability is within float error of it, so probabilities are what two runtimes
            can be compared on).

    Returns:
        Instances: at ``out_size``, with ``pred_masks`` (bool ``(N, height, width)``),
        ``pred_boxes`` (from the masks), ``scores`` and ``pred_classes``; with ``mask_probs``,
        ``pred_mask_probs`` (float ``(N, height, width)``, ``pred_masks = pred_mask_probs >
        mask_thresh``).
    """
    device = mask_features.device
    e, h, w = mask_features.shape
    cells, classes = (cate_scores > score_thresh).nonzero(as_tuple=True)
    if cells.numel() == 0:
        return _empty(out_size, device, mask_probs)
    scores = cate_scores[cells, classes]
    feats = mask_features.reshape(e, h * w)

    # Pass 1: area and maskness of each candidate cell's mask, chunk by chunk.
    uniq, inverse = torch.unique(cells, return_inverse=True)
    area, maskness = _area_and_maskness(kernels[uniq], feats, mask_thresh)
    area, maskness = area[inverse], maskness[inverse]
    keep = area > cell_strides[cells].float()
    if not keep.any():
        return _empty(out_size, device, mask_probs)
    cells, classes, area = cells[keep], classes[keep], area[keep]
    scores = scores[keep] * maskness[keep]

    order = torch.argsort(scores, descending=True)[:nms_pre]
    cells, classes, area, scores = cells[order], classes[order], area[order], scores[order]
    # Pass 2: the masks of the (at most nms_pre) candidates left.
    prob = (kernels[cells] @ feats).sigmoid().reshape(-1, h, w)
    scores = matrix_nms(prob > mask_thresh, classes, scores, kernel=nms_kernel, sigma=nms_sigma, areas=area)
    keep = scores >= update_thresh
    prob, classes, scores = prob[keep], classes[keep], scores[keep]
    order = torch.argsort(scores, descending=True)[:max_per_image]
    prob, classes, scores = prob[order], classes[order], scores[order]
    if scores.numel() == 0:
        return _empty(out_size, device, mask_probs)

    return _instances_at_output_size(prob, scores, classes, image_size, out_size, mask_stride, mask_thresh,
                                     mask_probs)


def solov2_inference_single_image_padded(
    cate_scores, kernels, cell_strides, mask_features, image_size, out_size, *,
    mask_stride=4, score_thresh=0.1, mask_thresh=0.5, nms_pre=500, nms_kernel="gaussian", nms_sigma=2.0,
    update_thresh=0.05, max_per_image=100, mask_probs=False,
):
    """:func:`solov2_inference_single_image` as tensor operations only, for tracing and export.

    The same instances, in the same order, with no Python branch on tensor values or on the
    number of candidates, so a traced or exported graph is right for every image (any size,
    any number of detections, zero included):

    - the area and maskness of *every* cell's mask (``M = sum S^2`` cells, a constant of the
      config, in fixed chunks), so the candidates' rescored scores are those of the eager path;
    - candidates failing the score threshold or the stride-size mask filter get score -1 instead
      of being dropped; the top ``K = min(nms_pre, M * C)`` of all cell x class scores (a fixed
      count) go through Matrix NMS, where the invalid ones (score -1, sorted last) have empty
      masks and zero area, so they decay no one: the valid ones' decay is the eager path's;
    - the top ``min(max_per_image, K)`` of the decayed scores of the valid candidates at or above
      ``update_thresh`` are taken, and boolean indexing (``nonzero`` / ``gather`` in a graph) keeps
      only those: the one data-dependent shape, which TorchScript and ONNX carry dynamically.

    Cost: pass 1 scores all ``M`` masks rather than the eager path's candidates only, in chunks,
    so memory stays bounded as in the eager path. The demo's 1,440 cells at 32 x 32 are nothing;
    COCO's 3,872 at 1/4 of 800 x 1333 with 256 kernels are about 67 GFLOP (measured on one CPU
    thread, 500 candidates: 7.3 s against the eager path's 2.7 s). Equal scores may be ordered
    differently from the eager path (another sort).

    Args and Returns: as :func:`solov2_inference_single_image`; ``image_size`` and ``out_size``
    may hold 0-dim tensors (the traced sizes).
    """
    m, c = cate_scores.shape
    m, c = int(m), int(c)  # constants of the config (grid cells, classes), not of the image
    feats = mask_features.flatten(1)  # (E, h * w)

    # Pass 1: area and maskness of every cell's mask; the trip count depends on M only.
    area, maskness = _area_and_maskness(kernels, feats, mask_thresh)  # (M,)
    valid = (cate_scores > score_thresh) & (area > cell_strides.float())[:, None]  # (M, C)
    scores = torch.where(valid, cate_scores * maskness[:, None], torch.full_like(cate_scores, -1.0))

    # The top K of all cell x class scores: the valid ones first (their scores are > 0: the
    # category score > score_thresh >= 0, the maskness > mask_thresh), by decreasing score, as
    # the eager path's sorted candidates.
    k = min(nms_pre, m * c)
    scores, index = scores.flatten().topk(k)
    valid = valid.flatten()[index]
    cells, classes = torch.div(index, c, rounding_mode="floor"), index % c
    # Pass 2: the K candidates' masks; invalid ones emptied so they cannot decay anyone.
    prob = (kernels[cells] @ feats).sigmoid()  # (K, h * w)
    binary = (prob > mask_thresh) & valid[:, None]
    decayed = matrix_nms(binary, classes, scores, kernel=nms_kernel, sigma=nms_sigma, areas=area[cells] * valid)
    keep = valid & (decayed >= update_thresh)
    decayed = torch.where(keep, decayed, torch.full_like(decayed, -1.0))
    decayed, order = decayed.topk(min(max_per_image, k))
    kept = keep[order]  # the only data-dependent shape: the detections kept
    scores, order = decayed[kept], order[kept]
    classes, prob = classes[order], prob[order]

    h, w = mask_features.shape[1], mask_features.shape[2]
    return _instances_at_output_size(prob.reshape(-1, h, w), scores, classes, image_size, out_size, mask_stride,
                                     mask_thresh, mask_probs)
