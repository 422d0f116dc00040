"""Write the YOLOv8-seg model YAMLs with (w)NLB blocks after P3-P5 into configs/yolo/.

Every file is the output of :func:`wnlb_d2.yolo.model_yaml.insert_nonlocal_blocks` on Ultralytics'
stock ``yolov8{n,s,m}-seg.yaml`` (tests/test_yolo_model.py checks that the shipped files are)::

    python tools/make_yolo_configs.py [--output configs/yolo]
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default=os.path.join(REPO, "configs", "yolo"), help="folder (default configs/yolo)")
    args = p.parse_args(argv)
    from wnlb_d2.yolo.model_yaml import write_shipped_yamls

    for path in write_shipped_yamls(args.output):
        print(path)
    return 0


if __name__ == "__main__":
    from wnlb_d2.utils.io import main_reporting_os_errors

    sys.exit(main_reporting_os_errors("make_yolo_configs.py", main))
