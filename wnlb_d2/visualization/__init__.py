"""Pictures: predictions drawn side by side, and backbone feature maps before and after each block."""

from .features import bottom_up_of, capture_backbone_features, grid_columns, plot_feature_grid, reduce_feature_map
from .predictions import draw_predictions, label_panel, save_side_by_side, write_side_by_side

__all__ = ["draw_predictions", "label_panel", "save_side_by_side", "write_side_by_side", "bottom_up_of", "capture_backbone_features",
           "grid_columns", "plot_feature_grid", "reduce_feature_map"]
