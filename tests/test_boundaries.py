"""Import boundaries import-linter cannot see: it checks the ``distill`` package's layers,
not the folders beside it, nor a module that must not lean on the toolkit at all.

- ``tests/`` and ``bench/`` are independent: what both need lives in ``testing/``, which
  imports neither.
- The SiQ-VL projector (the model) imports nothing from the toolkit: the model depends on
  torch and transformers only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported(path: Path) -> set[str]:
    """Top-level package names a file imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("tests", {"bench"}), ("bench", {"tests"}), ("testing", {"tests", "bench"})])
def test_tests_and_bench_share_only_testing(folder: str, forbidden: set[str]) -> None:
    offenders = {str(path.relative_to(REPO)): sorted(imported(path) & forbidden)
                 for path in sorted((REPO / folder).rglob("*.py"))
                 if imported(path) & forbidden}
    assert not offenders, f"{folder}/ may not import {sorted(forbidden)}: {offenders}"


def test_the_projector_imports_nothing_from_the_toolkit() -> None:
    names = imported(REPO / "train" / "siqvl" / "projector.py")
    assert names <= {"__future__", "math", "torch"}, names
