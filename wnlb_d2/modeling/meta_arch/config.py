"""Config keys of the SOLOv2 meta-architecture, added by :func:`add_solov2_config`."""

from detectron2.config import CfgNode as CN

__all__ = ["add_solov2_config"]


def add_solov2_config(cfg):
    """Add the ``MODEL.SOLOV2`` node (SOLOv2, Wang et al., NeurIPS 2020) to a detectron2 config.

    Defaults are the paper's R50-FPN model (800 px images, COCO). Keys that are already there
    are left alone, so calling it twice (or after another package added the node) is harmless.

    Args:
        cfg (CfgNode): a config from :func:`detectron2.config.get_cfg`; modified in place.
    """
    if "SOLOV2" in cfg.MODEL:
        return
    _C = cfg
    _C.MODEL.SOLOV2 = CN()

    # --- instance branch (category + kernel) ---
    # Backbone features of the instance branch, finest first. The first is down-sampled by 2
    # and the last resized to the one before it (P2 -> stride 8, P6 -> stride 32, as in SOLOv2).
    _C.MODEL.SOLOV2.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # Effective stride of each level after that resizing; masks smaller than it (in 1/4-scale
    # pixels) are dropped at inference.
    _C.MODEL.SOLOV2.FPN_INSTANCE_STRIDES = [8, 8, 16, 32, 32]
    # Object scale sqrt(w * h) in input pixels that each level is responsible for (overlapping).
    _C.MODEL.SOLOV2.FPN_SCALE_RANGES = [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]]
    # Grid size S of each level: S x S cells, one instance per cell.
    _C.MODEL.SOLOV2.NUM_GRIDS = [40, 36, 24, 16, 12]
    # Centre region: cells within SIGMA * half the box (around the mask's centre of mass) are positive.
    _C.MODEL.SOLOV2.SIGMA = 0.2
    # Channels of the stacked convs of the category and kernel branches.
    _C.MODEL.SOLOV2.INSTANCE_CHANNELS = 512
    # Number of stacked 3x3 convs in each of the two branches.
    _C.MODEL.SOLOV2.NUM_INSTANCE_CONVS = 4
    # Normalized x, y coordinates concatenated to the kernel branch's input (CoordConv).
    _C.MODEL.SOLOV2.USE_COORD_CONV = True
    # Number of foreground classes.
    _C.MODEL.SOLOV2.NUM_CLASSES = 80
    # Prior probability of the category branch's initial sigmoid output (focal-loss init).
    _C.MODEL.SOLOV2.PRIOR_PROB = 0.01
    # Norm of the stacked convs of both heads: "GN", "BN", "SyncBN", "" (none), ...
    _C.MODEL.SOLOV2.NORM = "GN"
    # Initial weights of the heads' convs that a norm follows: "normal" (std 0.01, the paper's,
    # tuned for SGD) or "kaiming" (He normal, fan-out). A norm makes such a conv's output blind
    # to its weights' scale, so Adam's steps of about the learning rate change 0.01-std weights
    # by a large fraction each iteration; He-scaled weights take the same steps in proportion.
    # The prediction convs (no norm after them) always start at std 0.01.
    _C.MODEL.SOLOV2.CONV_INIT = "normal"

    # --- mask-feature branch ---
    # Backbone features fused into the unified mask feature map, finest first (at its stride).
    _C.MODEL.SOLOV2.MASK_IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # Channels inside the mask-feature branch.
    _C.MODEL.SOLOV2.MASK_CHANNELS = 128
    # Output channels of the mask features = length of each dynamic 1x1 kernel.
    _C.MODEL.SOLOV2.NUM_KERNELS = 256

    # --- losses ---
    # Sigmoid focal loss of the category branch (Lin et al.), over all grid cells.
    _C.MODEL.SOLOV2.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.SOLOV2.FOCAL_LOSS_GAMMA = 2.0
    _C.MODEL.SOLOV2.FOCAL_LOSS_WEIGHT = 1.0
    # Dice loss of the masks of positive cells (the paper's lambda = 3).
    _C.MODEL.SOLOV2.DICE_LOSS_WEIGHT = 3.0

    # --- inference ---
    # Category score a cell needs to produce a mask candidate.
    _C.MODEL.SOLOV2.SCORE_THRESH_TEST = 0.1
    # Mask probability threshold of the binary masks (maskness, NMS and the output).
    _C.MODEL.SOLOV2.MASK_THRESH_TEST = 0.5
    # Candidates (highest scores) kept before Matrix NMS.
    _C.MODEL.SOLOV2.NMS_PRE_TOPK = 500
    # Matrix NMS decay kernel: "gaussian" (exp(-sigma * iou^2)) or "linear" (1 - iou).
    _C.MODEL.SOLOV2.NMS_KERNEL = "gaussian"
    # Sigma of the Gaussian kernel.
    _C.MODEL.SOLOV2.NMS_SIGMA = 2.0
    # Score a candidate must keep after Matrix NMS decay.
    _C.MODEL.SOLOV2.UPDATE_THRESH_TEST = 0.05
    # Instances returned per image (highest scores).
    _C.MODEL.SOLOV2.DETECTIONS_PER_IMAGE = 100
