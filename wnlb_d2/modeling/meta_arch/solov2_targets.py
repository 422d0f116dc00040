"""SOLOv2 training targets: which grid cell of which level predicts which ground-truth instance.

SOLO (Wang et al., ECCV 2020, Sec. 3.1; SOLOv2 keeps it): an image is divided into an S x S
grid per FPN level. An instance belongs to every level whose scale range contains
``sqrt(w * h)`` of its box; on such a level, the cells covered by its *centre region* (the box
shrunk by ``sigma`` around the mask's centre of mass), limited to the 3 x 3 cells around the cell
holding the centre, are positives: each predicts the instance's class and its mask.
"""

import logging
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Instances, PolygonMasks
from detectron2.structures.masks import polygons_to_bitmask

__all__ = ["gt_mask_tensor", "center_of_mass", "assign_level_targets", "SOLOv2Targets", "build_targets"]

logger = logging.getLogger(__name__)


def gt_mask_tensor(instances, padded_size):
    """The ground-truth masks of one image as a bool tensor on the padded image grid.

    Args:
        instances (Instances): with ``gt_masks`` (:class:`PolygonMasks`, :class:`BitMasks` or a
            ``(G, h, w)`` tensor) at ``instances.image_size``.
        padded_size (tuple[int, int]): ``(Hp, Wp)`` of the batched (padded) image tensor.

    Returns:
        Tensor: bool, shape ``(G, Hp, Wp)``, on the device of ``instances``; zero in the padding.

    Raises:
        ValueError: no ``gt_masks`` field, or masks larger than the padded image.
    """
    if not instances.has("gt_masks"):
        raise ValueError(
            "SOLOv2 trains on instance masks, but the ground truth has no 'gt_masks' field: set "
            "MODEL.MASK_ON True so that the dataset mapper loads them (fields present: "
            f"{list(instances.get_fields())})"
        )
    h, w = instances.image_size
    hp, wp = padded_size
    masks = instances.gt_masks
    device = instances.gt_classes.device if instances.has("gt_classes") else torch.device("cpu")
    if isinstance(masks, PolygonMasks):
        if len(masks) == 0:
            dense = torch.zeros((0, h, w), dtype=torch.bool, device=device)
        else:
            dense = torch.from_numpy(
                np.stack([polygons_to_bitmask(p, h, w) for p in masks.polygons]).astype(bool)
            ).to(device)
    elif isinstance(masks, BitMasks):
        dense = masks.tensor
    elif isinstance(masks, torch.Tensor):
        dense = masks.bool()
    else:
        raise ValueError(f"gt_masks of type {type(masks).__name__} is not supported; expected PolygonMasks or BitMasks")
    if dense.shape[-2] > hp or dense.shape[-1] > wp:
        raise ValueError(f"gt_masks of shape {tuple(dense.shape)} do not fit the padded image {padded_size}")
    return F.pad(dense, (0, wp - dense.shape[-1], 0, hp - dense.shape[-2]))


def center_of_mass(masks):
    """Centre of mass ``(x, y)`` of each mask in pixel coordinates (pixel centres at +0.5).

    Args:
        masks (Tensor): bool or float, shape ``(G, H, W)``.

    Returns:
        tuple[Tensor, Tensor]: ``(G,)`` x and y; NaN for an empty mask.
    """
    m = masks.float()
    area = m.sum(dim=(1, 2))
    ys = torch.arange(m.shape[1], dtype=torch.float32, device=m.device) + 0.5
    xs = torch.arange(m.shape[2], dtype=torch.float32, device=m.device) + 0.5
    cx = (m.sum(dim=1) * xs).sum(dim=1) / area
    cy = (m.sum(dim=2) * ys).sum(dim=1) / area
    return cx, cy


def _cell(coord, extent, num_grid):
    # The grid spans the padded image; a point exactly on the far edge belongs to the last cell.
    return min(max(int(coord / extent * num_grid), 0), num_grid - 1)


def assign_level_targets(boxes, centers, padded_size, num_grid, sigma):
    """Positive cells of one level for the instances assigned to it.

    Args:
        boxes (Tensor): ``(G, 4)`` XYXY boxes in input-image pixels.
        centers (Tensor): ``(G, 2)`` mask centres of mass ``(x, y)``.
        padded_size (tuple[int, int]): ``(Hp, Wp)``; the grid covers this area.
        num_grid (int): S.
        sigma (float): centre-region scale (0.2 in SOLO).

    Returns:
        list[list[int]]: for each instance, the flat indices ``row * S + col`` of its cells.
    """
    hp, wp = padded_size
    out = []
    for (x0, y0, x1, y1), (cx, cy) in zip(boxes.tolist(), centers.tolist()):
        half_w, half_h = 0.5 * (x1 - x0) * sigma, 0.5 * (y1 - y0) * sigma
        row, col = _cell(cy, hp, num_grid), _cell(cx, wp, num_grid)
        # Centre region, clipped to the 3 x 3 cells around the centre cell (as SOLO does).
        top = max(_cell(cy - half_h, hp, num_grid), row - 1)
        bottom = min(_cell(cy + half_h, hp, num_grid), row + 1)
        left = max(_cell(cx - half_w, wp, num_grid), col - 1)
        right = min(_cell(cx + half_w, wp, num_grid), col + 1)
        out.append([r * num_grid + c for r in range(top, bottom + 1) for c in range(left, right + 1)])
    return out


class SOLOv2Targets:
    """Targets of one batch, flattened over levels and grid cells (level-major, row-major).

    Attributes:
        labels (Tensor): ``(B, M)`` long class per cell, ``num_classes`` for background;
            ``M = sum(S_l ** 2)``.
        pos_image (Tensor): ``(P,)`` image index of each positive cell.
        pos_cell (Tensor): ``(P,)`` flat cell index (into M) of each positive cell.
        pos_masks (Tensor): ``(P, h, w)`` float target mask of each positive cell at the mask
            feature resolution (area-averaged, so values in [0, 1]).
    """

    def __init__(self, labels, pos_image, pos_cell, pos_masks):
        self.labels = labels
        self.pos_image = pos_image
        self.pos_cell = pos_cell
        self.pos_masks = pos_masks

    @property
    def num_pos(self):
        return int(self.pos_cell.numel())


@torch.no_grad()
def build_targets(
    gt_instances: List[Instances],
    padded_size: Tuple[int, int],
    mask_size: Tuple[int, int],
    *,
    num_grids: Sequence[int],
    scale_ranges: Sequence[Tuple[float, float]],
    sigma: float,
    num_classes: int,
):
    """Assign every ground-truth instance of a batch to grid cells.

    Where instances claim the same cell, the smaller one wins (instances are written in
    decreasing area): a small object overlapping a large one has few cells to lose, the large
    one has many.

    Args:
        gt_instances (list[Instances]): per image, with ``gt_classes``, ``gt_masks`` and
            (optionally) ``gt_boxes``, in input-image pixels.
        padded_size (tuple[int, int]): ``(Hp, Wp)`` of the batched image tensor.
        mask_size (tuple[int, int]): ``(h, w)`` of the mask features (about ``Hp / 4``).
        num_grids (list[int]): S per level.
        scale_ranges (list[tuple[float, float]]): per level, the inclusive range of
            ``sqrt(w * h)`` it handles.
        sigma (float): centre-region scale.
        num_classes (int): foreground classes; also the background label.

    Returns:
        SOLOv2Targets
    """
    device = gt_instances[0].gt_classes.device if len(gt_instances) else torch.device("cpu")
    num_cells = [s * s for s in num_grids]
    offsets = np.cumsum([0] + num_cells[:-1]).tolist()
    labels = torch.full((len(gt_instances), sum(num_cells)), num_classes, dtype=torch.long, device=device)
    pos_image, pos_cell, pos_masks = [], [], []
    for b, inst in enumerate(gt_instances):
        if len(inst) == 0:
            continue
        masks = gt_mask_tensor(inst, padded_size)
        areas = masks.sum(dim=(1, 2))
        boxes = inst.gt_boxes.tensor if inst.has("gt_boxes") else _boxes_of(masks)
        cx, cy = center_of_mass(masks)
        scale = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
        # Mask targets at the mask-feature resolution: the fraction of each cell's pixels inside.
        small = F.interpolate(masks[:, None].float(), size=mask_size, mode="area")[:, 0]
        cell_owner = torch.full((sum(num_cells),), -1, dtype=torch.long)
        valid = areas > 0  # an empty mask (e.g. cropped away) has nothing to learn
        order = torch.argsort(areas, descending=True).tolist()
        for level, (s, (lo, hi)) in enumerate(zip(num_grids, scale_ranges)):
            idx = [g for g in order if valid[g] and lo <= scale[g] <= hi]
            if not idx:
                continue
            centers = torch.stack([cx[idx], cy[idx]], dim=1)
            cells = assign_level_targets(boxes[idx], centers, padded_size, s, sigma)
            for g, gcells in zip(idx, cells):
                cell_owner[[offsets[level] + c for c in gcells]] = g
        pos = (cell_owner >= 0).nonzero().flatten()
        if pos.numel() == 0:
            continue
        owner = cell_owner[pos].to(device)
        pos = pos.to(device)
        labels[b, pos] = inst.gt_classes[owner]
        pos_image.append(torch.full_like(pos, b))
        pos_cell.append(pos)
        pos_masks.append(small[owner])
    if pos_cell:
        return SOLOv2Targets(labels, torch.cat(pos_image), torch.cat(pos_cell), torch.cat(pos_masks))
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return SOLOv2Targets(labels, empty, empty, torch.zeros((0,) + tuple(mask_size), device=device))


def _boxes_of(masks):
    from .postprocess import masks_to_boxes

    return masks_to_boxes(masks)
