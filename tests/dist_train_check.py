"""Run under torchrun: a few training iterations on CPU with gloo, then report per rank.

Writes ``<out>/rank<k>.json`` with the image ids this rank trained on and a digest of its
weights. Usage: TINY_DEMO_ROOT=... torchrun --nproc_per_node 2 tests/dist_train_check.py OUT
"""

import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

from engine_helpers import DEMO_CONFIG, register_tiny_demo, tiny_opts  # noqa: E402

register_tiny_demo(os.environ["TINY_DEMO_ROOT"])

from detectron2.utils import comm  # noqa: E402

from wnlb_d2.engine import LowLightTrainer, launch, setup_cfg  # noqa: E402

SEEN = []


class RecordingTrainer(LowLightTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        loader = super().build_train_loader(cfg)

        def record():
            for batch in loader:
                SEEN.extend(int(d["image_id"]) for d in batch)
                yield batch

        return record()


def main(out):
    opts = tiny_opts(os.path.join(out, "run"), iters=3, **{"MODEL.BACKBONE.NAME": "build_resnet_wnlb_fpn_backbone"})
    cfg = setup_cfg(DEMO_CONFIG, opts)
    trainer = RecordingTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = getattr(trainer.model, "module", trainer.model)
    digest = hashlib.sha256()
    # Parameters only: BatchNorm running statistics are per rank (broadcast_buffers=False, as
    # in detectron2; SyncBN would share them).
    for k, v in sorted(model.named_parameters()):
        digest.update(k.encode())
        digest.update(v.detach().cpu().numpy().tobytes())
    with open(os.path.join(out, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump({"world_size": comm.get_world_size(), "images": SEEN, "weights": digest.hexdigest(),
                   "ddp": type(trainer.model).__name__}, f)


if __name__ == "__main__":
    launch(main, num_gpus_per_machine=1, args=(sys.argv[1],))
