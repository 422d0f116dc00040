"""Shared test helpers: configs for small, fast CPU models; the command-line scripts as modules."""

import importlib.util
import os
import sys

import torch
from detectron2.config import get_cfg
from detectron2.structures import BitMasks, Boxes, Instances

import wnlb_d2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relpath, name=None, register=False):
    """A command-line script of the repository (``tools/x.py``, ``datasets/x.py``) imported as a module.

    Tests call its functions and ``main(argv)`` in-process; each call executes the file afresh.

    Args:
        relpath (str): the script's path relative to the repository root.
        name (str or None): the module's name (default: the file's stem + ``"_under_test"``).
        register (bool): also put the module in ``sys.modules``, as an import would (needed when
            the script's functions are pickled by module name, e.g. for a process pool).

    Returns:
        module: the executed script.
    """
    path = os.path.join(REPO, relpath)
    name = name or os.path.splitext(os.path.basename(path))[0] + "_under_test"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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


def training_input(height=64, width=96, box=(10, 10, 50, 40), cls=3, seed=0):
    """One training input for a detectron2 model: a random image with one boxed, masked object.

    Returns:
        dict: ``{"image": (3, H, W) float tensor, "instances": Instances}``.
    """
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 255, (3, height, width), generator=g, dtype=torch.uint8).float()
    x0, y0, x1, y1 = box
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor([[float(x0), float(y0), float(x1), float(y1)]]))
    inst.gt_classes = torch.tensor([cls])
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[0, y0:y1, x0:x1] = True
    inst.gt_masks = BitMasks(mask)
    return {"image": image, "instances": inst}
