# make install: .venv with everything to run and test. make test: ruff, the import layers
# (import-linter, [tool.importlinter] in pyproject.toml), then the whole suite (CPU only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
WEIGHTS ?= weights
OUT ?= out
BENCH_WEIGHTS ?= /tmp/iclight-full

.PHONY: install test fuzz lint format parity parity-wide weights prepare examples docs-lights docs-fc docs-hdri bench bench-matting bench-serving gpu-check gpu-quick \
	reference reference-fc reference-birefnet reference-lav gpu-wheels clean

install: $(VENV)/.installed

# The package in editable mode with every extra; Gradio without its dependencies (its pillow cap
# conflicts with the parity pin: see the `ui` extra in pyproject.toml).
GRADIO := gradio==6.31.0

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -q -r requirements.txt -e '.[dev,ray,ui,video,hdri]'
	$(PY) -m pip install -q --no-deps $(GRADIO)
	touch $@

# pytest-xdist workers, a test module to a worker at a time, the longest first, each torch on one
# thread (tests/conftest.py). Three on two cores: the third runs while the others wait on servers,
# browsers and child processes. TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 3
test: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The fuzzer's long profile (tests/pipeline/test_fuzz.py, tests/serving/test_server.py): random examples of every
# input; it prints how many it tried and what each ended in. FUZZ_EXAMPLES overrides the count.
FUZZ_EXAMPLES ?= 2000
fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/pipeline/test_fuzz.py tests/serving/test_server.py -k every -p no:cacheprovider \
		--hypothesis-profile=long --hypothesis-show-statistics -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: install
	$(PY) -m ruff format .

# Our pixels against the hosted model's on the stored case (tests/data/parity/), CPU, float32.
parity: install
	$(PY) -m benchmarks.parity.run check

# The hosted code itself (.ref/, see `make reference`) against ours over the 23 cases of
# benchmarks/parity/cases.py: every light source, batches, long prompts, compute_normal...
parity-wide: install
	$(PY) -m benchmarks.parity.run wide

# The real weights, fetched and verified (about 5 GB), then the UNet prepared for a fast boot.
weights: install
	$(PY) -m iclight weights fetch --dest $(WEIGHTS)

prepare: install
	$(PY) -m iclight weights prepare $(WEIGHTS)

# Relight the examples with the real weights (run `make weights` first).
examples: install
	$(PY) -m iclight relight examples/astronaut.png examples/coffee.png \
		--prompt "sunshine from window" --seed 12345 -o $(OUT)

# The grid of designed lights in docs/lighting.md.
docs-lights: install
	$(PY) docs/make_light_grid.py docs/lights.png

# The grid of the fc model's light sources in docs/models.md (relit on random stand-in weights).
docs-fc: install
	$(PY) docs/make_fc_grid.py docs/fc-lights.png

# The grid of one made-up panorama's condition images in docs/lighting.md.
docs-hdri: install
	$(PY) docs/make_hdri_grid.py docs/hdri.png

# Setup, stages and memory on full-size stand-in weights, against the hosted code's way of loading:
# python -m iclight.standins $(BENCH_WEIGHTS) --size full   (about 7.7 GB), then make bench.
bench: install
	$(PY) -m benchmarks.bench $(BENCH_WEIGHTS)

# The CUDA path measured (benchmarks/gpu/check.py): on a CUDA machine with Python 3.12 and torch.
# REFERENCE: a folder with the hosted ref_predict.py and briarmbg.py, and ref_run.py (make reference).
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_OUT ?= gpu-check-results
REFERENCE ?=
gpu-check:
	$(GPU_PYTHON) -m benchmarks.gpucheck $(GPU_CHECK_OUT) $(if $(REFERENCE),--reference $(REFERENCE))

# What a GPU deployment runs, checked in one short run (benchmarks/gpu/quick.py, under 6 minutes on
# an H100): every speed setting through every feature against eager on tiny stand-ins, then the
# hosted defaults on full-size ones beside the hosted code (.ref/, where exported). It installs the
# wheels of `make gpu-wheels` where .whl/ has them. Without CUDA the same code runs on the CPU
# (`make test` runs it: tests/models/test_deployment.py).
gpu-quick:
	PYTHON=$(GPU_PYTHON) bash benchmarks/run-gpu.sh quick

# The hosted code, the baseline for parity and speed, into the git-ignored .ref/ (never committed):
# predict.py and briarmbg.py of a clone of zsxkib/IC-Light (branch background-model), and a runner
# for them (REF_RUNNER: a script with load_reference, run_case and a command line, as gpucheck uses).
#   make reference REF_CLONE=../IC-Light/.git REF_RUNNER=path/to/ref_run.py
REF_CLONE ?= ../IC-Light/.git
REF_RUNNER ?=
reference: reference-fc
	@test -n "$(REF_RUNNER)" || { echo "make reference: set REF_RUNNER to the hosted code's runner"; exit 2; }
	mkdir -p .ref
	git --git-dir=$(REF_CLONE) show background-model:predict.py > .ref/ref_predict.py
	git --git-dir=$(REF_CLONE) show background-model:briarmbg.py > .ref/briarmbg.py
	cp $(REF_RUNNER) .ref/ref_run.py

# The hosted fc model's code (branch main of the same repository: predict.py and briarmbg.py) into
# .ref/fc/, the baseline of the fc parity cases (benchmarks/parity/fc_hosted.py drives it).
#   make reference-fc REF_CLONE=../IC-Light/.git
reference-fc:
	mkdir -p .ref/fc
	git --git-dir=$(REF_CLONE) show main:predict.py > .ref/fc/ref_predict.py
	git --git-dir=$(REF_CLONE) show main:briarmbg.py > .ref/fc/briarmbg.py

# BiRefNet's own model code, the baseline for iclight/birefnet.py, into the git-ignored .ref/birefnet/
# (never committed), from a clone of ZhengPeng7/BiRefNet:
#   make reference-birefnet BIREFNET_CLONE=../BiRefNet/.git
BIREFNET_CLONE ?= ../BiRefNet/.git
BIREFNET_REV ?= HEAD
BIREFNET_FILES := config.py models/birefnet.py models/backbones/swin_v1.py models/modules/aspp.py \
	models/modules/decoder_blocks.py models/modules/deform_conv.py models/modules/lateral_blocks.py
reference-birefnet:
	for f in $(BIREFNET_FILES); do mkdir -p .ref/birefnet/$$(dirname $$f); \
		git --git-dir=$(BIREFNET_CLONE) show $(BIREFNET_REV):$$f > .ref/birefnet/$$f || exit 1; done
	$(PY) -m benchmarks.birefnet_ref parity

# Light-A-Video's consistent light attention and its IC-Light stage, the baselines for sequences
# (bcmi/Light-A-Video, Apache-2.0), into the git-ignored .ref/ (never committed): tests/pipeline/
# test_windows.py checks ours against its attention function on the same weights, test_fc.py an fc
# sequence against its relighting stage (benchmarks/lav_fc.py).
#   make reference-lav LAV_CLONE=../Light-A-Video/.git
LAV_CLONE ?= ../Light-A-Video/.git
LAV_REV ?= HEAD
LAV_FILES := lav_relight.py src/ic_light.py src/ic_light_pipe.py utils/tools.py
reference-lav:
	for f in $(LAV_FILES); do mkdir -p .ref/light-a-video/$$(dirname $$f); \
		git --git-dir=$(LAV_CLONE) show $(LAV_REV):$$f > .ref/light-a-video/$$f || exit 1; done
	$(PY) -m pytest tests/pipeline/test_windows.py tests/pipeline/test_fc.py -k light_a_video -q

# Seconds and peak memory of one matte per matting choice (real-shaped stand-ins in MATTING_WEIGHTS).
MATTING_WEIGHTS ?= /tmp/iclight-matting-weights
bench-matting: install
	mkdir -p bench-results
	$(PY) -m benchmarks.matting --weights $(MATTING_WEIGHTS) --out bench-results/matting.json

# K clients at once against the real Cog server (benchmarks/serving.py); SERVING_DEVICE=cuda on a GPU.
SERVING_DEVICE ?= cpu
bench-serving: install
	mkdir -p bench-results
	$(PY) -m benchmarks.serving --device $(SERVING_DEVICE) --out bench-results/serving-$(SERVING_DEVICE).json

# Wheels for a Python 3.12 CUDA machine that has torch but no package index, into the git-ignored
# .whl/: benchmarks/run-gpu.sh installs them there and runs gpu-quick or gpu-check.
GPU_WHEELS := diffusers==0.42.1 cog==0.23.1 coglet==0.23.1 structlog importlib_metadata transformers==5.24.0 \
	tokenizers==0.23.3 regex huggingface_hub==2.4.0 httpx2 httpcore2 truststore idna click lazy-importer \
	safetensors==0.8.0 peft==0.21.2
gpu-wheels:
	mkdir -p .whl
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(OUT) bench-results
