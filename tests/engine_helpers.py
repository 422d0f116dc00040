"""A tiny registered demo dataset and a tiny training config for engine tests."""

import os

from detectron2.data import DatasetCatalog

from wnlb_d2.data.datasets.demo import register_demo
from wnlb_d2.data.demo_dataset import DemoSpec, ensure_demo_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo", "Base-Demo-R18-FPN.yaml")
TINY_SPEC = DemoSpec(image_size=64, num_train=12, num_val=6)


def register_tiny_demo(root, prefix="tiny_demo"):
    """Generate (once) and register ``<prefix>_{train,val}[_lowlight]`` of 64 px images."""
    ensure_demo_dataset(root, TINY_SPEC, progress=False, workers=1)
    if f"{prefix}_train" not in DatasetCatalog.list():
        register_demo(prefix=prefix, root=root, spec=TINY_SPEC)
    return prefix


def tiny_opts(output_dir, prefix="tiny_demo", iters=2, **extra):
    """Config overrides: the demo recipe shrunk to 64 px, batch 2, a few iterations."""
    opts = {
        "OUTPUT_DIR": output_dir,
        "DATASETS.TRAIN": f"('{prefix}_train',)",
        "DATASETS.TEST": f"('{prefix}_val',)",
        "INPUT.MIN_SIZE_TRAIN": "(64,)",
        "INPUT.MAX_SIZE_TRAIN": "64",
        "INPUT.MIN_SIZE_TEST": "64",
        "INPUT.MAX_SIZE_TEST": "64",
        "SOLVER.IMS_PER_BATCH": "2",
        "SOLVER.MAX_ITER": str(iters),
        "SOLVER.STEPS": "()",
        "SOLVER.WARMUP_ITERS": "1",
        "SOLVER.BASE_LR": "0.002",
        "DATALOADER.NUM_WORKERS": "0",
        "MODEL.DEVICE": "cpu",
        "TEST.EVAL_PERIOD": "0",
    }
    opts.update({k: str(v) for k, v in extra.items()})
    return [x for kv in opts.items() for x in kv]
