# wnlb_d2: set-up, tests, benchmarks.
#   make test    create .venv (torch, detectron2, deps, wnlb_d2) and run the test suite
#   make demo    the paper's Table I experiment on the embedded demo dataset (DEMO=quick: smoke run)
#   make bench   the non-local block benchmark (efficient vs reference)
# Set VENV= to another folder, or PYTHON= to the interpreter that creates it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# --system-site-packages reuses a torch and a detectron2 (e.g. built from source with CUDA)
# that are installed already; they are then used as they are.
VENV_FLAGS ?=
STAMP := $(VENV)/.wnlb_d2-installed

# make demo DEMO=quick: a few iterations only (CI's smoke run; AP not meaningful).
DEMO ?= full

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): setup.py requirements.txt tools/install_detectron2.py tools/detectron2_c_standin.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	# torch first: detectron2's setup and pycocotools builds import it / numpy.
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip install -q -r requirements-yolo.txt
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) tools/run_experiment.py --preset $(if $(filter quick,$(DEMO)),quick,demo)

bench: $(STAMP)
	$(PY) tools/benchmark_nonlocal.py

clean:
	rm -rf $(VENV) build *.egg-info
