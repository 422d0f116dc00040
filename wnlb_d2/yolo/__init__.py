"""YOLOv8 (Ultralytics) integration: the same non-local blocks, low-light data and COCO scoring.

An optional extra (``pip install wnlb_d2[yolo]``): Ultralytics is AGPL-3.0, so nothing in the
core package imports it; only this subpackage does. Importing it

1. sets Ultralytics' environment defaults for offline, reproducible runs
   (:func:`~wnlb_d2.yolo.env.configure_ultralytics_env`: ``YOLO_OFFLINE=1``,
   ``YOLO_AUTOINSTALL=0``, ``YOLO_CONFIG_DIR`` outside the home folder), before the first
   ``import ultralytics``;
2. registers :class:`~wnlb_d2.yolo.modules.YOLONonLocalBlock2d` so model YAMLs can name it;
3. turns Ultralytics' telemetry off.

Entry points: :func:`insert_nonlocal_blocks` (model YAMLs), :func:`export_yolo_dataset`
(detectron2 dataset -> Ultralytics layout), :func:`train_yolo_row` and :func:`evaluate_yolo`
(COCO metrics dicts like detectron2's ``COCOEvaluator``); the ``wnlb-yolo`` command
(:mod:`wnlb_d2.yolo.cli`: Ultralytics' ``yolo`` with the block registered) and
:func:`wnlb_d2.yolo.export.export_difference` (an exported file against the eager model).

Example (from the repository's root; ``tests/test_yolo_cli.py`` runs these lines as written)::

    import wnlb_d2.yolo
    from ultralytics import YOLO
    model = YOLO("configs/yolo/yolov8n-seg-wnlb.yaml")
    results = model("path/to/image.jpg")
"""

from .env import configure_ultralytics_env, disable_telemetry, restore_pil_open

configure_ultralytics_env()

try:
    import ultralytics  # noqa: E402
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("wnlb_d2.yolo needs the optional Ultralytics dependency: pip install 'wnlb_d2[yolo]' "
                      "(Ultralytics is AGPL-3.0)") from e

from .modules import YOLONonLocalBlock2d, register_yolo_modules  # noqa: E402

register_yolo_modules()
disable_telemetry()
restore_pil_open()

from .model_yaml import DEFAULT_STAGES, STAGES, insert_nonlocal_blocks, model_yaml_name  # noqa: E402
from .weights import load_plain_weights  # noqa: E402
from .convert import export_yolo_dataset  # noqa: E402
from .data import LowLightSpec, LowLightYOLODataset, write_data_yaml  # noqa: E402
from .evaluate import score_coco  # noqa: E402
from .train import LowLightSegmentationTrainer, LowLightSegmentationValidator  # noqa: E402
from .api import evaluate_yolo, train_yolo_row  # noqa: E402

__all__ = ["configure_ultralytics_env", "YOLONonLocalBlock2d", "register_yolo_modules", "insert_nonlocal_blocks",
           "model_yaml_name", "STAGES", "DEFAULT_STAGES", "ULTRALYTICS_VERSION", "load_plain_weights",
           "export_yolo_dataset", "LowLightSpec", "LowLightYOLODataset", "write_data_yaml", "score_coco",
           "LowLightSegmentationTrainer", "LowLightSegmentationValidator", "evaluate_yolo", "train_yolo_row"]

ULTRALYTICS_VERSION = ultralytics.__version__
