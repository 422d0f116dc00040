"""Shared test helpers: configs for small, fast CPU models."""

from detectron2.config import get_cfg

import wnlb_d2


def make_cfg(stock_config=None, backbone=None, **wnlb):
    """A detectron2 config from a stock model-zoo config, with wNLB keys and small test inputs.

    Args:
        stock_config (str): model-zoo config name, default Mask R-CNN R50-FPN 3x.
        backbone (str): value of MODEL.BACKBONE.NAME, or None to keep the stock one.
        **wnlb: MODEL.WNLB keys to set (upper-case names).
    """
    cfg = get_cfg()
    wnlb_d2.add_wnlb_config(cfg)
    name = stock_config or "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    wnlb_d2.merge_from_file(cfg, wnlb_d2.MODEL_ZOO_PREFIX + name)
    if backbone:
        cfg.MODEL.BACKBONE.NAME = backbone
    for k, v in wnlb.items():
        cfg.MODEL.WNLB[k] = v
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.MAX_SIZE_TEST = 160
    return cfg
