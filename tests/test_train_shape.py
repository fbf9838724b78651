"""The training loop stays in parts a reader can hold: setup, step, checkpoint, cleanup."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAIN = Path(__file__).resolve().parents[1] / "train"
MAX_LINES = 60


@pytest.mark.parametrize("name", ["loop.py", "checkpoint.py", "manifest.py",
                                  "vision_pretrain.py", "metrics.py"])
def test_no_function_of_the_loop_is_over_60_lines(name: str) -> None:
    tree = ast.parse((TRAIN / name).read_text(encoding="utf-8"))
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert not long, f"train/{name}: {long}"
