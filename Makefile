# Everything installs into .venv with pip; every target bootstraps it first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/deltarnn demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	DELTARNN_FULL=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/golden_throughput.py --json benchmarks/results/golden_throughput.json
	$(PY) benchmarks/synth_core.py --board all
	$(PY) benchmarks/perf.py

clean:
	rm -rf $(VENV) build .pytest_cache
