# `make demo` runs the main job; `make test` runs the suite. Both set up .venv first,
# and reinstall only when pyproject.toml changes; `make test` also installs the Debian packages
# the browser and lme4 tests need, when it can (tools/system-packages.sh).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LUCENT := torch-lucent==0.1.8

.PHONY: demo test lint install

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	# torch first, so the extras resolve against the local CPU build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[stimuli,postgres,deploy,dev]'
	# lucent pins kornia<=0.4.1, which cannot install with torch 2.13 (DEVELOPERS.md).
	$(PY) -m pip install -q --no-deps $(LUCENT)
	touch $@

# The demo serves on PORT and the two ports after it: `make demo PORT=8000` where 5000 is taken.
PORT ?= 5000

demo: $(STAMP)
	$(VENV)/bin/psychinterp demo --port $(PORT)

test: $(STAMP)
	@bash tools/system-packages.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -m "slow or not slow" -q --durations=15 -n auto

lint: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
