# posed: two commands for a newcomer — `make test` and `make demo`.
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
STAMP   = $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test test-fast demo demo-offline bench-openfield clean

venv: $(STAMP)

# The venv is created once and re-installed when pyproject.toml changes. pip takes torch/torchvision from the
# local wheel cache where the machine provides one (see README, "Installing").
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The main job: serve the bundled clip with the bundled model and show poses arriving over
# ZeroMQ (configs/demo.yaml). `make demo-offline` runs the offline analysis of the same clip.
demo: $(STAMP)
	$(PY) configs/demo/run_demo.py

demo-offline: $(STAMP)
	$(VENV)/bin/posed analyze configs/demo/model configs/demo/clip.mp4 --dest demo-out --csv
	$(PY) configs/demo/show.py demo-out

bench-openfield: $(STAMP)
	$(PY) benchmarks/train_openfield.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
