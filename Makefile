# jicd — every target installs what it needs into .venv first (a fresh machine needs only python3).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# DeepSpeed JIT-builds a small C++ op at init; cache it inside the repo so later runs take seconds.
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test test-fast gpu-check lint format install clean

demo: $(STAMP)  ## small CPU demo: shards from bundled photos -> 2-rank training -> real-bitstream eval
	bash launch/demo.sh

test: $(STAMP)  ## the whole suite (unit, distributed, integration, Slurm)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## unit tests only (no multi-process, no integration runs)
	$(PY) -m pytest -q -m "not slow and not distributed and not slurm"

gpu-check: $(STAMP)  ## GPU acceptance table (PASS/FAIL/SKIP); on a CPU machine the GPU lines SKIP
	bash launch/gpu_check.sh

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

install: $(STAMP)

$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements-lock.txt -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .cache runs results/study .pytest_cache .ruff_cache *.egg-info
