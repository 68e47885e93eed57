# jicd — every target installs what it needs into .venv first (a fresh machine needs only python3).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# DeepSpeed JIT-builds a small C++ op at init; cache it inside the repo so later runs take seconds.
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test test-fast gpu-check lint format install clean wheelhouse install-offline fuzz stress

demo: $(STAMP)  ## small CPU demo: shards from bundled photos -> 2-rank training -> real-bitstream eval
	bash launch/demo.sh

test: $(STAMP)  ## the whole suite (unit, distributed, integration, Slurm)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q

test-fast: $(STAMP)  ## unit tests only (no multi-process, no integration runs)
	$(PY) -m pytest -q -m "not slow and not distributed and not slurm"

fuzz: $(STAMP)  ## the large fuzz budget: 10,000 hostile inputs to the file-reading commands
	$(PY) -m pytest -q -s -m fuzz tests/test_fuzz.py

stress: $(STAMP)  ## the once-random failures, repeated: 50 runs of the teardown tests, 50 port-race rounds
	PYTHON=$(PY) bash tests/stress/repeat.sh 50 stress.log
	$(PY) tests/stress/port_race.py 50

gpu-check: $(STAMP)  ## GPU acceptance table (PASS/FAIL/SKIP); on a CPU machine the GPU lines SKIP
	bash launch/gpu_check.sh

lint: $(STAMP)  ## ruff (style) and mypy (types: jicd, trainer, data_pipeline, launch, benchmarks)
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

install: $(STAMP)

# Air-gapped GPU nodes: build the wheelhouse where PyPI is reachable, install from it offline.
WHEELHOUSE ?= wheelhouse
WHEEL_PYTHON ?= $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
WHEEL_PLATFORM ?= manylinux_2_34_x86_64
EXCLUDE ?=
wheelhouse:  ## every locked dependency as wheels for WHEEL_PYTHON/WHEEL_PLATFORM, minus EXCLUDE
	$(PYTHON) launch/wheelhouse.py $(WHEELHOUSE) --python-version $(WHEEL_PYTHON) \
		--platform $(WHEEL_PLATFORM) --exclude $(EXCLUDE)

install-offline:  ## .venv from WHEELHOUSE only (--no-index); sees the system's packages (torch)
	test -f $(WHEELHOUSE)/requirements.txt || { echo "no $(WHEELHOUSE)/requirements.txt: run make wheelhouse"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --no-index --find-links $(WHEELHOUSE) -r $(WHEELHOUSE)/requirements.txt
	$(PY) -m pip install --quiet --no-index --find-links $(WHEELHOUSE) --no-deps -e .
	touch $(STAMP)

$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements-lock.txt -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .cache runs results/study .pytest_cache .ruff_cache *.egg-info
