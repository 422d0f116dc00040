"""Pictures: predictions drawn side by side, and backbone feature maps before and after each block."""

from .predictions import draw_predictions, label_panel, save_side_by_side

__all__ = ["draw_predictions", "label_panel", "save_side_by_side"]
