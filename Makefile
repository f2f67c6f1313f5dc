# make install: .venv with everything to run and test. make test: the whole suite (CPU only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
WEIGHTS ?= weights
OUT ?= out
BENCH_WEIGHTS ?= /tmp/iclight-full

.PHONY: install test lint format parity parity-wide weights prepare examples bench gpu-check device-kit clean

install: $(VENV)/.installed

# The package in editable mode with every extra; Gradio without its dependencies (its pillow cap
# conflicts with the parity pin: see the `ui` extra in pyproject.toml).
GRADIO := gradio==6.31.0

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -q -r requirements.txt -e '.[dev,ray,ui]'
	$(PY) -m pip install -q --no-deps $(GRADIO)
	touch $@

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .

parity: install
	../shared/parity/check.sh

# Parity with the hosted code itself over the review's cases (tools/parity_cases.py); needs .ref/.
parity-wide: install
	bash tools/parity-wide.sh

# The real weights, fetched and verified (about 5 GB), then the UNet prepared for a fast boot.
weights: install
	$(PY) -m iclight.weights fetch --dest $(WEIGHTS)

prepare: install
	$(PY) -m iclight.weights prepare $(WEIGHTS)

# Relight the examples with the real weights (run `make weights` first).
examples: install
	$(PY) -m iclight relight examples/astronaut.png examples/coffee.png \
		--prompt "sunshine from window" --seed 12345 -o $(OUT)

# Full-size stand-in weights: python ../shared/parity/make_weights.py $(BENCH_WEIGHTS) --size full
bench: install
	$(PY) -m iclight.bench $(BENCH_WEIGHTS)

# The CUDA path measured (see iclight/gpucheck.py): on a CUDA machine with Python 3.12 and torch.
# REFERENCE: a folder with the hosted ref_predict.py and briarmbg.py, and ref_run.py (make device-kit).
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= gpu-check-results
REFERENCE ?=
gpu-check:
	$(GPU_PYTHON) -m iclight.gpucheck $(GPU_CHECK_OUT) $(if $(REFERENCE),--reference $(REFERENCE))

# What a lent GPU machine lacks, into git-ignored folders: wheels for Python 3.12 (.whl/) and the
# hosted code from a clone of zsxkib/IC-Light, branch background-model (.ref/), with the parity
# kit's runner. Never committed.
REF_CLONE ?= /work/.mirror/zsxkib+IC-Light/repo
DEVICE_WHEELS := diffusers==0.42.1 cog==0.23.1 coglet==0.23.1 structlog importlib_metadata transformers==5.24.0 \
	tokenizers==0.23.3 regex huggingface_hub==2.4.0 httpx2 httpcore2 truststore idna click lazy-importer \
	safetensors==0.8.0
device-kit:
	mkdir -p .whl .ref
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(DEVICE_WHEELS)
	git --git-dir=$(REF_CLONE) show background-model:predict.py > .ref/ref_predict.py
	git --git-dir=$(REF_CLONE) show background-model:briarmbg.py > .ref/briarmbg.py
	cp ../shared/reference/ref_run.py .ref/

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(OUT) bench-results
