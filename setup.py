"""wnlb_d2: weighted non-local blocks for low-light instance segmentation in Detectron2.

detectron2 itself is not declared as a dependency: it is not on PyPI. Install it from source
(with CUDA) or with ``tools/install_detectron2.py`` (pure Python, CPU); see docs/install.md.
``setuptools<81`` is declared because detectron2's model zoo (v0.6 and main) imports
``pkg_resources``, which setuptools 81 removed (detectron2 issue #5494): without it no
``model_zoo://`` config resolves.

The repository's ``configs/`` folder is shipped inside the package as ``wnlb_d2/model_zoo/configs``
(``package_dir``: one copy of the files, no build step), read by ``wnlb_d2.model_zoo``; in a source
checkout or an editable install that folder does not exist and ``configs/`` itself is read.
The console commands' code is in ``wnlb_d2/cli``; the scripts (train_net.py, tools/...) call it.
"""

from setuptools import find_packages, setup

setup(
    name="wnlb_d2",
    version="0.1.0",
    description="Weighted non-local blocks (wNLB) for low-light instance segmentation in Detectron2",
    license="Apache-2.0",
    license_files=["LICENSE"],
    packages=find_packages(include=["wnlb_d2", "wnlb_d2.*"]) + ["wnlb_d2.model_zoo.configs"],
    package_dir={"wnlb_d2.model_zoo.configs": "configs"},
    # The YAML configs and the LazyConfig .py files, in their sub-folders (configs/yolo/ is AGPL-3.0,
    # as its files say).
    package_data={"wnlb_d2.model_zoo.configs": ["**/*.yaml", "**/*.py"]},
    python_requires=">=3.8",
    install_requires=[
        "torch>=1.10",
        "numpy",
        "scipy",
        "opencv-python>=4.8,<5",
        "pycocotools>=2.0.2",
        "fvcore>=0.1.5,<0.1.6",
        "tqdm",
        "setuptools<81",
    ],
    extras_require={"test": ["pytest", "h5py", "onnx==1.23.2", "onnxruntime==1.32.0", "onnxscript==0.7.2"], "yolo": ["ultralytics>=8.4,<8.5"], "agllnet": ["h5py"]},  # yolo: AGPL-3.0, see docs/yolov8.md
    entry_points={
        "console_scripts": [
            "wnlb-train = wnlb_d2.cli.train:command",  # train_net.py
            "wnlb-demo = wnlb_d2.cli.demo:command",  # tools/demo.py
            "wnlb-study = wnlb_d2.cli.study:command",  # tools/run_experiment.py
            "wnlb-prepare = wnlb_d2.cli.prepare:command",  # datasets/prepare_lowlight_coco.py
            "wnlb-export = wnlb_d2.cli.export:command",  # tools/deploy/export_model.py
            "wnlb-yolo = wnlb_d2.yolo.cli:main",  # Ultralytics' `yolo` with the blocks registered (needs [yolo])
        ],
    },
)
