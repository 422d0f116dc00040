# wnlb_d2: set-up, tests, benchmarks.
#   make test         create .venv (torch, detectron2, deps, wnlb_d2) and run the test suite
#   make test-d2main  the same suite against detectron2 main built from source (compiled ops) in .venv-d2main:
#                     from D2MAIN_SRC (a source folder or .tar.gz) when set, else from detectron2's git repository
#   make demo         the paper's Table I experiment on the embedded demo dataset, one seed, severity curves
#                     (DEMO=quick: smoke run; DETECTOR=solov2 or yolov8: that detector's rows)
#   make study        the same with three seeds per fine-tuning row: mean, spread, paired 95 % intervals
#   make bench        the non-local block benchmark (efficient vs reference)
# Set VENV= to another folder, or PYTHON= to the interpreter that creates it.
# VENV= may name an existing environment (venv or conda) that has a compiled detectron2: that
# detectron2 (and torch) are used as they are; only the missing dependencies and wnlb_d2 are added.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Options of `python -m venv` when make creates $(VENV). --system-site-packages lets the new venv
# see the packages of $(PYTHON)'s own installation (its site-packages), not those of another venv:
# a detectron2 built in another venv is not seen (use VENV= for that).
VENV_FLAGS ?=
STAMP := $(VENV)/.wnlb_d2-installed

# Where `make test-d2main` builds detectron2 from: D2MAIN_SRC, a source folder or .tar.gz archive
# (e.g. a clone, or a `git archive` snapshot on a machine without GitHub), when set; else D2MAIN_GIT.
D2MAIN_SRC ?=
D2MAIN_GIT ?= git+https://github.com/facebookresearch/detectron2.git
D2MAIN_SOURCE = $(or $(D2MAIN_SRC),$(D2MAIN_GIT))
D2MAIN_VENV ?= .venv-d2main
# detectron2's setup.py reads these: CPU operators (unless torch sees a GPU and CUDA_HOME is set),
# MAX_JOBS parallel compile jobs.
D2_BUILD_ENV ?= FORCE_CUDA=0 MAX_JOBS=2
# Set by test-d2main: build detectron2 from this source (path or git URL) into $(VENV).
D2_SOURCE ?=

# make demo DEMO=quick: a few iterations only (CI's smoke run; AP not meaningful).
DEMO ?= full
# make demo / study DETECTOR=solov2|yolov8: the detector family of the rows.
DETECTOR ?= maskrcnn

.PHONY: install test test-d2main demo study bench clean print-%

install: $(STAMP)

$(STAMP): setup.py requirements.txt requirements-detectron2-v0.6.txt requirements-yolo.txt tools/install_detectron2.py \
		tools/detectron2_c_standin.py $(wildcard $(D2_SOURCE))
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	# torch first: detectron2's setup and pycocotools builds import it / numpy.
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PINS)
	# The pure-Python v0.6 needs Pillow<10; a compiled detectron2 (main) takes current Pillow.
	if [ -n "$(D2_SOURCE)" ] || [ "$$($(PY) tools/install_detectron2.py --status)" = compiled ]; then \
		$(PY) -m pip install -q -r requirements.txt; \
	else \
		$(PY) -m pip install -q -r requirements-detectron2-v0.6.txt; \
	fi
	$(if $(D2_SOURCE),$(D2_BUILD_ENV) $(PY) tools/install_detectron2.py --source '$(D2_SOURCE)')
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip install -q -r requirements-yolo.txt
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q tests

# The source is checked before anything is created: one line saying how to point at another.
test-d2main:
	@msg=$$($(PYTHON) tools/install_detectron2.py --check-source '$(D2MAIN_SOURCE)' 2>&1) || \
		{ echo "make test-d2main: $${msg#install_detectron2.py: }" >&2; exit 2; }
	$(MAKE) test VENV=$(D2MAIN_VENV) D2_SOURCE='$(D2MAIN_SOURCE)'

demo: $(STAMP)
	$(PY) tools/run_experiment.py --preset $(if $(filter quick,$(DEMO)),quick,demo) --detector $(DETECTOR)

study: $(STAMP)
	$(PY) tools/run_experiment.py --preset study --detector $(DETECTOR)

bench: $(STAMP)
	$(PY) tools/benchmark_nonlocal.py

clean:
	rm -rf $(VENV) $(D2MAIN_VENV) build *.egg-info

# make -s print-D2MAIN_SRC: a variable's value (used by .ci/run).
print-%:
	@echo '$($*)'
