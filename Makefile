# make install: .venv with everything to run and test. make test: the whole suite (CPU only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
WEIGHTS ?= weights
OUT ?= out
BENCH_WEIGHTS ?= /tmp/iclight-full

.PHONY: install test lint format parity weights prepare examples bench clean

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

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(OUT) bench-results
