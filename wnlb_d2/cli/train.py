"""``wnlb-train`` (``train_net.py``): train and evaluate low-light instance segmentation models
(wNLB) with detectron2.

Examples (wnlb-train, or python train_net.py in a checkout)::

    # train (any stock config, or one of configs/)
    wnlb-train --config-file configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_wnlb.yaml \\
        --num-gpus 8 MODEL.WEIGHTS detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl
    # evaluate
    wnlb-train --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    # several CPU processes (gloo)
    torchrun --nproc_per_node 2 train_net.py --config-file ...

``main(args)`` is what :func:`wnlb_d2.engine.launch` runs in each process (as in detectron2's
``tools/train_net.py``); :func:`command` parses the command line and launches it.
"""

import logging
import sys

from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import wnlb_d2  # noqa: F401  (registers backbones and datasets)
from wnlb_d2.checkpoint import CheckpointMismatchError, CheckpointReadError, check_checkpoint_path, checkpoint_read_error
from wnlb_d2.data.mapper import worker_error_message
from wnlb_d2.engine import LowLightTrainer, launch, setup_cfg
from wnlb_d2.utils.io import writing
from wnlb_d2.engine.predictor import backbone_opts_for_checkpoint
from wnlb_d2.utils.io import os_error_message

from . import tool_name

logger = logging.getLogger("wnlb_d2.train_net")
#: The name this command's messages start with: ``train_net.py``, or ``wnlb-train`` when run as that.
TOOL = tool_name("train_net.py")


class Trainer(LowLightTrainer):
    """The trainer; subclass here to change loaders, evaluators or hooks."""


def setup(args):
    """The config of a run; a stock backbone gets the non-local blocks that MODEL.WEIGHTS holds.

    Without that, a wNLB checkpoint evaluated (or fine-tuned) with a stock config would lose
    its blocks: tools/demo.py does the same.
    """
    cfg = setup_cfg(args.config_file, args.opts)
    weights = cfg.MODEL.WEIGHTS
    check_checkpoint_path(weights)
    try:
        extra = backbone_opts_for_checkpoint(cfg, weights)
    except Exception as e:  # unreadable file: name it, in one line
        raise checkpoint_read_error(weights, e.__cause__ or e) from e
    # default_setup writes config.yaml (and log.txt) in OUTPUT_DIR: a full disk names no file.
    with writing(cfg.OUTPUT_DIR):
        if not extra:
            return setup_cfg(args.config_file, args.opts, args=args)
        # Before args.opts: what the user set wins (and is then checked by the checkpointer).
        cfg = setup_cfg(args.config_file, extra + list(args.opts), args=args)
    logger.warning(f"{weights} holds non-local blocks that the config's backbone lacks: "
                   f"using {' '.join(extra)} (fusion: MODEL.WNLB.FUSION = {cfg.MODEL.WNLB.FUSION})")
    return cfg


def main(args):
    cfg = setup(args)
    # A write that fails at a buffer's flush (a full disk) names no file: the run's files are in
    # OUTPUT_DIR. (The trainer names the checkpoint, metrics.json or log.txt itself.)
    with writing(cfg.OUTPUT_DIR):
        if args.eval_only:
            model = Trainer.build_model(cfg)
            Trainer.load_for_inference(cfg, model, resume=args.resume)
            res = Trainer.test(cfg, model)
            if comm.is_main_process():
                verify_results(cfg, res)
            return res
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()


def error_message(e):
    """The one-line message of an error that ends the run.

    An OSError of a write or read is ``<file>: <reason>`` (``model_final.pth: No space left on
    device``); a KeyError its message without quotes; a data-loader worker's error its own
    message, not the worker's traceback.
    """
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return os_error_message(e)
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return worker_error_message(msg)


def invoke_main(argv=None):
    """The command line: parse ``argv`` (default ``sys.argv[1:]``), launch :func:`main`.

    Returns:
        int: 0; a failed run ends the process through ``sys.exit`` with one line.
    """
    args = default_argument_parser().parse_args(argv)
    if not args.config_file:
        sys.exit(f"{TOOL}: error: --config-file is required (a YAML file or model_zoo://NAME)")
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (OSError, KeyError, ValueError, CheckpointMismatchError, CheckpointReadError, FloatingPointError) as e:
        # OSError: missing files, and every failed write (disk full, permission, read-only).
        msg = error_message(e)
        logging.getLogger("wnlb_d2").error(f"{type(e).__name__}: {msg}")
        sys.exit(f"{TOOL}: error: {type(e).__name__}: {msg}")
    return 0


#: The ``wnlb-train`` console command (and ``train_net.py``).
command = invoke_main


if __name__ == "__main__":
    sys.exit(command())
