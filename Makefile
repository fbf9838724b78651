# The two commands of the README: `make demo` (the main job on the embedded data) and
# `make test`. Both create the virtual environment on first use.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
DEMO_OUT ?= runs/demo

.PHONY: install demo test lint bench-quick

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel, pinned first so nothing pulls a multi-GB CUDA build by accident.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/distill demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest

# The three --quick benches, each printing its ratios against a baseline of the same run.
bench-quick: $(STAMP)
	$(PY) bench/generate_overhead.py --quick
	$(PY) bench/filter_throughput.py --quick
	$(PY) bench/train_throughput.py --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
