"""SOLOv2: dynamic, fast instance segmentation (Wang et al., NeurIPS 2020) as a detectron2
meta-architecture, on any registered FPN backbone (``MODEL.BACKBONE.NAME``)."""

import logging
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import ImageList
from fvcore.nn import sigmoid_focal_loss
from torch import nn

from .losses import dice_loss
from .matrix_nms import MATRIX_NMS_KERNELS
from .postprocess import point_nms, solov2_inference_single_image, solov2_inference_single_image_padded
from .solov2_heads import SOLOv2InstanceHead, SOLOv2MaskHead
from .solov2_targets import build_targets

__all__ = ["SOLOv2"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class SOLOv2(nn.Module):
    """SOLOv2: each cell of an S x S grid per FPN level predicts a class and a dynamic 1x1
    kernel; the kernel convolved with shared mask features gives the cell's instance mask.

    Training returns ``{"loss_cate": focal loss, "loss_mask": Dice loss}``; inference returns,
    per image, ``{"instances": Instances}`` with ``pred_masks``, ``pred_boxes`` (from the masks),
    ``scores`` and ``pred_classes`` at the original image size, as detectron2's other
    meta-architectures do, so ``COCOEvaluator`` (segm and bbox) and ``Visualizer`` work unchanged.
    """

    @configurable
    def __init__(
        self, *, backbone, instance_head, mask_head, in_features, mask_in_features,
        instance_strides, scale_ranges, sigma, num_classes, pixel_mean, pixel_std,
        focal_alpha=0.25, focal_gamma=2.0, focal_weight=1.0, dice_weight=3.0,
        score_thresh=0.1, mask_thresh=0.5, nms_pre=500, nms_kernel="gaussian", nms_sigma=2.0,
        update_thresh=0.05, max_per_image=100,
    ):
        """
        Args:
            backbone (Backbone): e.g. an FPN; must output ``in_features`` and ``mask_in_features``.
            instance_head (SOLOv2InstanceHead): category and kernel branches.
            mask_head (SOLOv2MaskHead): mask-feature branch.
            in_features (list[str]): backbone features of the instance head, finest first.
            mask_in_features (list[str]): backbone features of the mask head, finest first.
            instance_strides (list[int]): effective stride per instance level.
            scale_ranges (list[tuple[float, float]]): ``sqrt(w * h)`` range per level.
            sigma (float): centre-region scale of the target assignment.
            num_classes (int): foreground classes.
            pixel_mean, pixel_std (list[float]): input normalisation, one value per channel.
            focal_alpha, focal_gamma, focal_weight: sigmoid focal loss of the category branch.
            dice_weight (float): weight of the Dice mask loss.
            score_thresh, mask_thresh, nms_pre, nms_kernel, nms_sigma, update_thresh,
                max_per_image: inference (see :func:`solov2_inference_single_image`).
        """
        super().__init__()
        n = len(in_features)
        for name, value in (("FPN_INSTANCE_STRIDES", instance_strides), ("FPN_SCALE_RANGES", scale_ranges),
                            ("NUM_GRIDS", instance_head.num_grids)):
            if len(value) != n:
                raise ValueError(
                    f"MODEL.SOLOV2.{name} has {len(value)} entries but MODEL.SOLOV2.IN_FEATURES "
                    f"has {n} ({list(in_features)}); give one per level"
                )
        for lo_hi in scale_ranges:
            if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1]:
                raise ValueError(f"MODEL.SOLOV2.FPN_SCALE_RANGES entry {list(lo_hi)} is not a range (low, high)")
        if nms_kernel not in MATRIX_NMS_KERNELS:
            raise ValueError(f"MODEL.SOLOV2.NMS_KERNEL = {nms_kernel!r} is invalid; expected one of {MATRIX_NMS_KERNELS}")
        shapes = backbone.output_shape()
        missing = [f for f in list(in_features) + list(mask_in_features) if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.SOLOV2.IN_FEATURES / MASK_IN_FEATURES name {missing}, which the backbone "
                f"{type(backbone).__name__} does not output (it gives {sorted(shapes)})"
            )
        self.backbone = backbone
        self.instance_head = instance_head
        self.mask_head = mask_head
        self.in_features = list(in_features)
        self.mask_in_features = list(mask_in_features)
        self.mask_stride = shapes[self.mask_in_features[0]].stride
        self.instance_strides = list(instance_strides)
        self.scale_ranges = [tuple(r) for r in scale_ranges]
        self.sigma = sigma
        self.num_classes = num_classes
        self.focal_alpha, self.focal_gamma, self.focal_weight = focal_alpha, focal_gamma, focal_weight
        self.dice_weight = dice_weight
        self.test_opts = dict(
            score_thresh=score_thresh, mask_thresh=mask_thresh, nms_pre=nms_pre, nms_kernel=nms_kernel,
            nms_sigma=nms_sigma, update_thresh=update_thresh, max_per_image=max_per_image,
        )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ValueError(f"MODEL.PIXEL_MEAN {pixel_mean} and MODEL.PIXEL_STD {pixel_std} have different lengths")

    @classmethod
    def from_config(cls, cfg):
        if "SOLOV2" not in cfg.MODEL:
            raise KeyError("MODEL.SOLOV2 is missing: call wnlb_d2.add_lowlight_config(cfg) (or add_solov2_config) first")
        from ...config import check_solov2_config

        check_solov2_config(cfg)  # setup_cfg checked already; a config built by hand was not
        if not cfg.MODEL.MASK_ON:
            # The stock DatasetMapper loads gt_masks, and the evaluator scores segm, only then.
            raise ValueError("MODEL.META_ARCHITECTURE = 'SOLOv2' predicts masks: set MODEL.MASK_ON True")
        c = cfg.MODEL.SOLOV2
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        for key in ("IN_FEATURES", "MASK_IN_FEATURES"):
            missing = [f for f in c[key] if f not in shapes]
            if missing:
                raise ValueError(
                    f"MODEL.SOLOV2.{key} names {missing}, which the backbone {cfg.MODEL.BACKBONE.NAME} "
                    f"does not output (it gives {sorted(shapes)})"
                )
        return {
            "backbone": backbone,
            "instance_head": SOLOv2InstanceHead(cfg, [shapes[f] for f in c.IN_FEATURES]),
            "mask_head": SOLOv2MaskHead(cfg, [shapes[f] for f in c.MASK_IN_FEATURES]),
            "in_features": list(c.IN_FEATURES),
            "mask_in_features": list(c.MASK_IN_FEATURES),
            "instance_strides": list(c.FPN_INSTANCE_STRIDES),
            "scale_ranges": [tuple(r) for r in c.FPN_SCALE_RANGES],
            "sigma": c.SIGMA,
            "num_classes": c.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "focal_alpha": c.FOCAL_LOSS_ALPHA,
            "focal_gamma": c.FOCAL_LOSS_GAMMA,
            "focal_weight": c.FOCAL_LOSS_WEIGHT,
            "dice_weight": c.DICE_LOSS_WEIGHT,
            "score_thresh": c.SCORE_THRESH_TEST,
            "mask_thresh": c.MASK_THRESH_TEST,
            "nms_pre": c.NMS_PRE_TOPK,
            "nms_kernel": c.NMS_KERNEL,
            "nms_sigma": c.NMS_SIGMA,
            "update_thresh": c.UPDATE_THRESH_TEST,
            "max_per_image": c.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs):
        """Normalise and batch the images, padded to the backbone's size divisibility."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]], mask_probs: bool = False):
        """
        Args:
            batched_inputs (list[dict]): detectron2's format: ``"image"`` ``(C, H, W)``, and
                ``"instances"`` (with ``gt_classes``, ``gt_masks``, optionally ``gt_boxes``) in
                training; optional ``"height"``, ``"width"`` (output size) at inference.
            mask_probs (bool): at inference, the instances also carry ``pred_mask_probs``
                (float ``(N, height, width)``, the masks' probabilities before
                ``MODEL.SOLOV2.MASK_THRESH_TEST``): what :class:`wnlb_d2.export.FlatDetector`
                returns. ``pred_masks`` is the same either way.

        Returns:
            dict[str, Tensor] in training (losses), else list[dict] with ``"instances"``.
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        cate_logits, kernels = self.instance_head([features[f] for f in self.in_features])
        mask_features = self.mask_head([features[f] for f in self.mask_in_features])
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError("SOLOv2 training needs 'instances' (ground truth) in every input dict")
            gt = [x["instances"].to(self.device) for x in batched_inputs]
            return self.losses(cate_logits, kernels, mask_features, gt, tuple(images.tensor.shape[-2:]))
        return self.inference(cate_logits, kernels, mask_features, images, batched_inputs, mask_probs)

    @staticmethod
    def _flatten(per_level):
        # (B, K, S, S) per level -> (B, sum S^2, K), level-major then row-major (the targets' order).
        return torch.cat([x.flatten(2).transpose(1, 2) for x in per_level], dim=1)

    def _check_gt_classes(self, gt_instances):
        # A class >= num_classes would silently become background (no error, no positive cell):
        # the dataset has more classes than MODEL.SOLOV2.NUM_CLASSES.
        classes = [x.gt_classes for x in gt_instances if len(x)]
        if not classes:
            return
        classes = torch.cat(classes)
        bad = classes[(classes < 0) | (classes >= self.num_classes)]
        if bad.numel():
            raise ValueError(
                f"Ground-truth class {int(bad[0])} is out of range for MODEL.SOLOV2.NUM_CLASSES = {self.num_classes} "
                f"(classes 0..{self.num_classes - 1}): set MODEL.SOLOV2.NUM_CLASSES to the dataset's class count"
            )

    def losses(self, cate_logits, kernels, mask_features, gt_instances, padded_size):
        """Focal loss over all grid cells and Dice loss over the positive cells' masks.

        Both are normalised by the number of positive cells in the batch (at least 1), so a
        batch without any positive (no instances, or none in range) still gives finite losses
        whose gradients reach every head (zero for the mask branch).

        Returns:
            dict[str, Tensor]: ``loss_cate``, ``loss_mask`` (scalars).
        """
        self._check_gt_classes(gt_instances)
        targets = build_targets(
            gt_instances, padded_size, tuple(mask_features.shape[-2:]),
            num_grids=self.instance_head.num_grids, scale_ranges=self.scale_ranges,
            sigma=self.sigma, num_classes=self.num_classes,
        )
        cate = self._flatten(cate_logits)  # (B, M, C)
        one_hot = torch.zeros_like(cate)
        fg = targets.labels < self.num_classes
        one_hot[fg, targets.labels[fg]] = 1.0
        num_pos = max(targets.num_pos, 1)
        loss_cate = sigmoid_focal_loss(
            cate, one_hot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        ) / num_pos

        kernels = self._flatten(kernels)  # (B, M, E)
        if targets.num_pos == 0:
            # Keeps both branches in the graph (DistributedDataParallel needs every parameter used).
            loss_mask = 0.0 * (kernels.sum() + mask_features.sum())
        else:
            logits = []
            for b in range(kernels.shape[0]):  # per image: (P_b, E) @ (E, h * w), no (P, E, h * w) copy
                sel = targets.pos_image == b
                logits.append(kernels[b, targets.pos_cell[sel]] @ mask_features[b].flatten(1))
            logits = torch.cat(logits).view_as(targets.pos_masks)
            loss_mask = dice_loss(logits.sigmoid(), targets.pos_masks).mean()
        return {"loss_cate": self.focal_weight * loss_cate, "loss_mask": self.dice_weight * loss_mask}

    def inference(self, cate_logits, kernels, mask_features, images, batched_inputs, mask_probs=False):
        """Per image: candidates, maskness rescoring, Matrix NMS, masks at the output size (and
        their probabilities with ``mask_probs``)."""
        from ...layers.nonlocal_ops import is_exporting

        # Traced or exported: the tensor-only path (same instances; no Python branch on the
        # number of candidates, which a trace would record for one image and replay for all).
        infer = solov2_inference_single_image_padded if is_exporting() else solov2_inference_single_image
        cate = self._flatten([point_nms(c.sigmoid()) for c in cate_logits])
        kernels = self._flatten(kernels)
        strides = torch.cat([
            torch.full((s * s,), stride, device=self.device)
            for s, stride in zip(self.instance_head.num_grids, self.instance_strides)
        ])
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            out_size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            inst = infer(
                cate[i], kernels[i], strides, mask_features[i], image_size, out_size,
                mask_stride=self.mask_stride, mask_probs=mask_probs, **self.test_opts,
            )
            results.append({"instances": inst})
        return results
