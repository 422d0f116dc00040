"""Image-space enhancers for two-stage baselines (enhance the image, then run a detector).

Selected by ``INPUT.ENHANCER.NAME`` (see :func:`wnlb_d2.config.add_enhancer_config`):
gamma correction, CLAHE, histogram equalisation, OpenCV non-local means denoising, their
combinations ("nlm+clahe"), and four learned enhancers that load their authors' released weights
or are trained here (:mod:`wnlb_d2.enhance.trainable`): Zero-DCE++ (zero-reference, on low-light
images alone), RetinexFormer and AGLLNet (supervised, on exact synthetic pairs) and EnlightenGAN
(unpaired).
"""

from .base import ENHANCER_FORMATS, Enhancer, EnhancerChain
from .build import (ENHANCER_REGISTRY, ENHANCERS, build_enhancer, build_enhancer_from_config, enhancer_arguments, enhancer_enabled,
                    enhancer_names, parse_enhancer_name)
from .classical import Clahe, GammaCorrection, HistogramEqualization, NonLocalMeans
from .agllnet import AGLLNet, AGLLNetEnhancer, AGLLNetWeightsError, convert_agllnet_h5, load_agllnet_weights
from .enlightengan import EnlightenGANEnhancer, EnlightenGANWeightsError, UnetResizeConv, load_enlightengan_weights
from .retinexformer import RetinexFormer, RetinexFormerEnhancer, RetinexFormerWeightsError, load_retinexformer_weights
from .zero_dce import (ZERO_DCE_KEYS, ZeroDCEEnhancer, ZeroDCEPP, ZeroDCEWeightsError, apply_le_curve,
                       load_zero_dce_weights)
from .zero_dce_losses import (DEFAULT_LOSS_WEIGHTS, color_constancy_loss, exposure_control_loss,
                              illumination_smoothness_loss, spatial_consistency_loss, zero_reference_loss)
from .zero_dce_train import load_training_images, save_zero_dce_weights, train_zero_dce

__all__ = [
    "Enhancer", "EnhancerChain", "ENHANCER_FORMATS", "ENHANCER_REGISTRY", "ENHANCERS", "enhancer_names", "build_enhancer", "build_enhancer_from_config",
    "enhancer_arguments", "enhancer_enabled", "parse_enhancer_name", "GammaCorrection", "Clahe",
    "HistogramEqualization", "NonLocalMeans", "ZeroDCEEnhancer", "ZeroDCEPP", "ZeroDCEWeightsError",
    "ZERO_DCE_KEYS", "apply_le_curve", "load_zero_dce_weights", "DEFAULT_LOSS_WEIGHTS", "color_constancy_loss",
    "exposure_control_loss", "illumination_smoothness_loss", "spatial_consistency_loss", "zero_reference_loss",
    "load_training_images", "save_zero_dce_weights", "train_zero_dce", "RetinexFormer", "RetinexFormerEnhancer",
    "RetinexFormerWeightsError", "load_retinexformer_weights", "AGLLNet", "AGLLNetEnhancer", "AGLLNetWeightsError",
    "convert_agllnet_h5", "load_agllnet_weights", "UnetResizeConv", "EnlightenGANEnhancer",
    "EnlightenGANWeightsError", "load_enlightengan_weights",
]
