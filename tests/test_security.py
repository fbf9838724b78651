"""Files from elsewhere are data, never code: no unpickling anywhere in the toolkit."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.core.errors import DistillError
from distill.train.checkpoint import rng_state, set_rng_state
from distill.train.safe_state import load_state, save_state

REPO_ROOT = Path(__file__).resolve().parents[1]
UNSAFE_CALLS = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("joblib", "load"),
                ("dill", "load"), ("cloudpickle", "load"), ("cloudpickle", "loads")}


def unsafe_calls_in(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        name = owner.id if isinstance(owner, ast.Name) else None
        if (name, node.func.attr) in UNSAFE_CALLS:
            found.append(f"{path}:{node.lineno}: {name}.{node.func.attr}")
        if node.func.attr == "load" and name in ("np", "numpy") and any(
                k.arg == "allow_pickle" for k in node.keywords):
            found.append(f"{path}:{node.lineno}: np.load(allow_pickle=...)")
    return found


def test_no_stage_unpickles_anything() -> None:
    sources = [p for folder in ("distill", "train", "schemas")
               for p in (REPO_ROOT / folder).rglob("*.py")]
    assert len(sources) > 40
    assert [hit for path in sources for hit in unsafe_calls_in(path)] == []


def test_optimizer_scheduler_and_rng_state_round_trip_without_pickle(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "inf": float("inf")}
    save_state(state, tmp_path / "optimizer")
    loaded = load_state(tmp_path / "optimizer")
    assert loaded["inf"] == float("inf")
    restored = torch.optim.AdamW(model.parameters(), lr=1e-3)
    restored.load_state_dict(loaded["optimizer"])
    for key, value in optimizer.state_dict()["state"][0].items():
        torch.testing.assert_close(restored.state_dict()["state"][0][key], value)
    assert loaded["scheduler"] == scheduler.state_dict()

    save_state(rng_state(), tmp_path / "rng")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_state(tmp_path / "rng"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_tampered_state_file_is_refused_not_executed(tmp_path: Path) -> None:
    save_state({"a": 1}, tmp_path / "state")
    (tmp_path / "state.json").write_text('{"__reduce__": ["os.system", ["echo pwned"]]}')
    with pytest.raises(DistillError, match="unknown entry"):
        load_state(tmp_path / "state")
