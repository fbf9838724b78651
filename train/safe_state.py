"""Saving nested training state (optimizer, scheduler, RNG) without pickle.

``torch.save``/``torch.load`` pickle arbitrary objects, and loading a pickle runs code:
a checkpoint from elsewhere must never be able to do that. Tensors go to a safetensors
file, everything else (dicts with int or str keys, lists, tuples, numbers, strings,
numpy arrays as lists) to JSON that records the exact Python types, so the round trip
gives back what ``load_state_dict`` expects.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distill.core.errors import DistillError


def save_state(state: Any, prefix: Path) -> list[Path]:
    """Write ``prefix.json`` and ``prefix.safetensors``; return both paths."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, tensors)
    json_path, tensor_path = _paths(prefix)
    json_path.write_text(json.dumps(structure), encoding="utf-8")
    save_file(tensors, str(tensor_path))
    return [json_path, tensor_path]


def load_state(prefix: Path) -> Any:
    json_path, tensor_path = _paths(prefix)
    try:
        structure = json.loads(json_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_path))
    except FileNotFoundError as exc:
        raise DistillError(f"checkpoint state is incomplete: {exc.filename} is missing") from None
    return _decode(structure, tensors)


def _paths(prefix: Path) -> tuple[Path, Path]:
    return prefix.with_suffix(".json"), prefix.with_suffix(".safetensors")


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().to("cpu").contiguous()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)]
                             for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot save {type(value).__name__} in training state without pickle")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=value["dtype"])
    if "__dict__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__dict__"]}
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__float__" in value:
        return float(value["__float__"])
    raise DistillError(f"unknown entry in checkpoint state: {sorted(value)}")
