"""The normalised feature error and the non-local share of a detectron2 model on a test set.

Places measured (names as in ``results.json``): every ResNet stage's output (``res2`` ...),
each block's output (``res3.after``), and the backbone's other outputs (the FPN levels ``p2``
... ``p6``). Dark and clean images go through the same test-time mapper (resize, format), the
dark one degraded by the evaluation's deterministic degradation when the test set is degraded
on the fly; forward hooks read the features, nothing in the model changes.
"""

import logging

import torch

from ..layers import NonLocalBlock2d
from ..naming import WNLB_MODULE
from .clean_pairs import clean_pairs
from .feature_error import nonlocal_share, normalised_feature_error

__all__ = ["backbone_features", "detectron2_feature_errors"]

logger = logging.getLogger(__name__)


def _bottom_up(model):
    backbone = model.backbone
    return getattr(backbone, "bottom_up", backbone)


def backbone_features(model, image):
    """Every measured feature map of one image, and each block's input and non-local term.

    Args:
        model (nn.Module): a detectron2 meta-architecture with a (wNLB) ResNet backbone.
        image (Tensor): ``(C, H, W)`` in the model's input format and resolution.

    Returns:
        tuple[dict, dict]: ``{place: Tensor (C, h, w)}`` and ``{stage: (x, W_z(y), block)}``
        for every non-local block.
    """
    bottom_up = _bottom_up(model)
    blocks = {k: b for k, b in getattr(bottom_up, WNLB_MODULE, {}).items() if isinstance(b, NonLocalBlock2d)}
    features, terms, handles = {}, {}, []

    def keep(name):
        def hook(module, inputs, output):
            features[name] = output.detach()[0].float()
        return hook

    def keep_term(name):
        def hook(module, inputs, output):
            terms[name] = output.detach()[0].float()
        return hook

    try:
        for name in getattr(bottom_up, "stage_names", ()):
            handles.append(getattr(bottom_up, name).register_forward_hook(keep(name)))
            if name in blocks:
                handles.append(blocks[name].register_forward_hook(keep(f"{name}.after")))
                handles.append(blocks[name].w_z.register_forward_hook(keep_term(name)))
        with torch.no_grad():
            images = model.preprocess_image([{"image": image.to(model.device)}])
            outputs = model.backbone(images.tensor)
    finally:
        for h in handles:
            h.remove()
    for name, value in outputs.items():
        if name not in features:  # the FPN levels (a C4 backbone's output is its stage)
            features[name] = value.detach()[0].float()
    return features, {name: (features[name], terms[name], blocks[name]) for name in terms}


def detectron2_feature_errors(cfg, model, dataset, *, low_light, num_images):
    """Per-image NFE at every place and per-image non-local share of every block.

    Args:
        cfg (CfgNode): the model's config (its test-time input pipeline and degradation).
        model (nn.Module): the model (eval mode is set here and restored).
        dataset (str): the low-light test set.
        low_light (bool): whether its images are degraded on the fly.
        num_images (int): how many images (the first of the dataset).

    Returns:
        dict: ``{"nfe": {place: [float per image]}, "nonlocal_share": {stage: [float per image]},
        "images": n}``.

    Raises:
        NoCleanCounterpartError: the test set's images have no clean counterparts.
    """
    from ..engine.image_stages import build_low_light_mapper

    pairs = clean_pairs(dataset, degraded_on_the_fly=low_light, num_images=num_images)

    def mapper(degrade):
        c = cfg.clone()
        c.defrost()
        c.INPUT.LOW_LIGHT.ENABLED = c.INPUT.LOW_LIGHT.TEST = bool(degrade)
        c.INPUT.ENHANCER.NAME = "none"  # the model's own features, no enhancer in front
        c.freeze()
        return build_low_light_mapper(c, is_train=False)

    dark_mapper, clean_mapper = mapper(low_light), mapper(False)
    nfe, share = {}, {}
    was_training = model.training
    model.eval()
    try:
        for dark_record, clean_record in pairs:
            dark = dark_mapper(dict(dark_record))["image"]
            clean = clean_mapper(dict(clean_record))["image"]
            if dark.shape != clean.shape:
                raise ValueError(f"{dataset}: image {dark_record['file_name']} ({tuple(dark.shape[1:])} at the "
                                 f"model's input) and its clean twin {clean_record['file_name']} "
                                 f"({tuple(clean.shape[1:])}) differ in size")
            dark_features, dark_terms = backbone_features(model, dark)
            clean_features, _ = backbone_features(model, clean)
            for place, value in dark_features.items():
                nfe.setdefault(place, []).append(normalised_feature_error(value, clean_features[place]))
            for stage, (x, term, block) in dark_terms.items():
                w = float(block.fusion_weight.detach()) if block.fusion == "weighted" else None
                share.setdefault(stage, []).append(nonlocal_share(x, term, block.fusion, w))
    finally:
        model.train(was_training)
    return {"nfe": nfe, "nonlocal_share": share, "images": len(pairs)}
