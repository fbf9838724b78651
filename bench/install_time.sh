#!/usr/bin/env bash
# How long `make install` takes on a fresh machine, against the pip-only install it replaced,
# in one sitting: two clean venvs, no download or wheel cache, same lock (constraints.txt).
#   baseline: pip installs torch, then pip installs -e .[dev,ray]   (pip byte-compiles)
#   make:     pip installs torch --no-compile, pip installs uv, uv installs -e .[dev,ray]
# Prints each part's seconds and the ratio. Run from the repository root; ~6 min, mostly
# downloads. Numbers: bench/RESULTS.md ("make demo" section of issue 22).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=$(sed -n 's/^UV_VERSION ?= //p' Makefile)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }

python3 -m venv "$WORK/pip" && P="$WORK/pip/bin/pip"
t=$(now); "$P" install -q --no-cache-dir -c constraints.txt torch 2>/dev/null; pip_torch=$(since "$t")
t=$(now); "$P" install -q --no-cache-dir -c constraints.txt -e ".[dev,ray]" 2>/dev/null
pip_rest=$(since "$t")

python3 -m venv "$WORK/uv" && U="$WORK/uv/bin"
t=$(now); "$U/pip" install -q --no-cache-dir --no-compile -c constraints.txt torch 2>/dev/null
uv_torch=$(since "$t")
t=$(now); "$U/pip" install -q --no-cache-dir --no-compile "uv==$UV_VERSION" 2>/dev/null
uv_self=$(since "$t")
t=$(now); "$U/uv" pip install -q --no-cache --python "$U/python" -c constraints.txt -e ".[dev,ray]"
uv_rest=$(since "$t")
"$U/python" -c "import distill, torch, ray, transformers"

python3 - "$pip_torch" "$pip_rest" "$uv_torch" "$uv_self" "$uv_rest" <<'PY'
import sys
pt, pr, ut, us, ur = map(float, sys.argv[1:])
print(f"pip only:     torch {pt:.0f} s + the rest {pr:.0f} s = {pt + pr:.0f} s")
print(f"make install: torch {ut:.0f} s + uv {us:.0f} s + the rest {ur:.0f} s = {ut + us + ur:.0f} s")
print(f"ratio: {(pt + pr) / (ut + us + ur):.2f}x faster")
PY
