# posed: two commands for a newcomer — `make test` and `make demo`.
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
STAMP   = $(VENV)/.installed
PYTEST_ARGS ?=
# Two test processes share the two cores (tests/conftest.py gives each one thread); each test
# module runs in one of them, so module fixtures are built once.
PYTEST_XDIST ?= -n 2 --dist loadscope

.PHONY: venv test test-fast test-heavy test-avx2 demo demo-offline bench-openfield gpu-wheels clean

venv: $(STAMP)

# The venv is created once and re-installed when pyproject.toml changes. pip takes torch/torchvision from the
# local wheel cache where the machine provides one (see README, "Installing").
$(STAMP): pyproject.toml setup.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

# `make test` leaves out the tests marked heavy: costly variants (another engine, a larger net)
# of what other tests check, which would take it past 12 minutes on 2 cores. CI (.ci/run) runs
# `make test` and then `make test-heavy`, so every test runs on every push.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_XDIST) -m "not heavy" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest $(PYTEST_XDIST) -m "not slow and not heavy" $(PYTEST_ARGS)

test-heavy: $(STAMP)
	$(PY) -m pytest $(PYTEST_XDIST) -m heavy $(PYTEST_ARGS)

# The suite as an AVX2-only CPU (AMD EPYC, older Xeons) computes it, on any AVX-512 machine:
# PyTorch's kernels, oneDNN and MKL are held to AVX2. This reproduces such machines' training
# results (the multi-animal test gives found = 0.777, the figure reported from an AVX2 EPYC).
# The same variables as posed.bench.AVX2_LIMITS, which benchmark records name under isa_limits.
AVX2_ENV = ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
test-avx2: $(STAMP)
	$(AVX2_ENV) $(PY) -m pytest $(PYTEST_XDIST) -m "not heavy" $(PYTEST_ARGS)

# The main job: serve the bundled clip with the bundled model and show poses arriving over
# ZeroMQ (configs/demo.yaml). `make demo-offline` runs the offline analysis of the same clip.
demo: $(STAMP)
	$(PY) configs/demo/run_demo.py

demo-offline: $(STAMP)
	$(VENV)/bin/posed analyze configs/demo/model configs/demo/clip.mp4 --dest demo-out --csv
	$(PY) configs/demo/show.py demo-out

bench-openfield: $(STAMP)
	$(PY) benchmarks/train_openfield.py

# Wheels a stock CUDA PyTorch machine lacks (Python 3.12, x86_64), for benchmarks/gpu_check.sh
# there; .whl/ is ignored by git. onnxruntime-gpu is not among them (see README, "GPU serving").
GPU_WHEELS = av==18.1.0 pyzmq==27.3.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
