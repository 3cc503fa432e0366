# One entry point for every machine: `make test` builds .venv from nothing and runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: venv test test-slow lint format demo bench gpu-check clean

# What seqnet needs to run (the demo, benchmarks). pip compiles each package's bytecode as it
# installs it (its default, kept on purpose): where PYTHONDONTWRITEBYTECODE is set, as here and
# in many container images, Python caches nothing it compiles, and every new process (each Ray
# daemon and worker, each command a test runs) would compile torch, ray, numpy ... afresh:
# `import torch` 3.1 CPU-s instead of 1.7, `ray.init` 8.6 instead of 4.3 (docs/benchmarks.md).
$(STAMP): pyproject.toml setup.py $(wildcard custom_ops/csrc/*.* custom_ops/csrc/cuda/*.*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77'
	# torch first: pinned to the builds on the local disk (another version downloads GBs)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	# --no-build-isolation: setup.py compiles custom_ops against this torch (a build failure
	# only warns; torchvision's kernels are then used)
	$(BIN)/pip install -q --no-build-isolation -e '.[train,runtime]'
	touch $(STAMP)

# Plus the tests, the linter, TensorBoard and video decoding.
$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q --no-build-isolation -e '.[train,runtime,test,tensorboard]'
	touch $(DEV_STAMP)

venv: $(DEV_STAMP)

# Two pytest workers (pytest-xdist), a test file each at a time: 20% less wall time on 2 cores,
# where one process leaves a core idle in every import, subprocess and Python-bound step. A test
# still running after 10 minutes (the slowest takes 2.5 here) has hung: pytest-timeout fails it
# with its stack and the run goes on, instead of waiting for CI's limit (its thread method would
# end the worker, and xdist would run the file's hung test again in each replacement)
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile --timeout 600

test-slow: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m slow  # exit 5 (no slow test selected) fails too

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP)
	$(BIN)/python -m seqnet_quickstart

# FPS of every backend against the PyTorch baseline, default ResNet-50 (golden weights)
bench: $(STAMP)
	mkdir -p bench_output
	$(BIN)/python benchmarks/fps.py --json bench_output/fps.json --chart bench_output/fps.png

# What only a GPU proves (custom_ops' CUDA kernels against torchvision's, the golden cases and
# CUDA graphs on CUDA, the GPU rows of the benchmark), on the Python at hand: GPU machines here
# are offline, so nothing is installed (the repository goes on PYTHONPATH; the golden cases are
# read from $SEQNET_SHARED, else ../shared).
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py --out gpu_check_output

clean:
	rm -rf $(VENV) output demo_output bench_output run_output gpu_check_output .pytest_cache
