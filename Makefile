# The course in three commands:
#   make lab         set up on first use, then open JupyterLab on notebooks/
#   make test        set up on first use, then run every test (unit, notebooks, nbval, labs)
#   make run-all     execute every notebook headless at full quality; report in results/
#   make labs        regenerate labs/ from solutions/ (instructors)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KERNEL := cvdl
STAMP := $(VENV)/.cvdl-installed
# the local dataset mirror: ../shared/data when it exists (CI), unless already set
CVDL_DATA_MIRROR ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
export CVDL_DATA_MIRROR

.PHONY: setup lab test test-fast run-all kernel clean-venv outputs labs

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (cvdl course)"
	@# the ImageNet weights (MobileNet-v2, EfficientNet-Lite0), verified into the course's cache;
	@# without them every notebook still runs on the course-trained networks
	$(BIN)/python -c "from cvdl import zoo; print('ImageNet weights:', zoo.fetch_weights())"
	@touch $(STAMP)

kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (cvdl course)"

# JupyterLab refuses to run as root unless told; students are rarely root, containers often are
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=. notebooks/00_welcome.ipynb $(ALLOW_ROOT) $(LAB_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not notebooks" $(PYTEST_ARGS)

run-all: $(STAMP)
	$(BIN)/python tools/run_notebooks.py --full --out results/full_run.md

labs: $(STAMP)
	$(BIN)/cvdl labs generate

outputs: $(STAMP)
	$(BIN)/python tools/store_outputs.py notebooks/*.ipynb

clean-venv:
	rm -rf $(VENV)
