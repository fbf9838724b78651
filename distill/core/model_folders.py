"""What kind of model a saved folder holds, read from its config.json without loading it.

Light on purpose (no torch, no transformers): the eval CLI tells model kinds apart before it
imports anything heavy, and ``load_student`` refuses another model's folder before
transformers half-loads it.
"""

from __future__ import annotations

from pathlib import Path

from distill.core.errors import InputError
from distill.core.text import parse_json, read_text

SIQVL_MODEL_TYPE = "siqvl"


def read_model_type(folder: Path) -> str | None:
    """``model_type`` from a model folder's config.json (None when absent)."""
    config = folder / "config.json"
    if not config.is_file():
        raise InputError("not a model folder: it has no config.json", file=folder,
                         reason="missing_file")
    data = parse_json(read_text(config), file=config)
    if not isinstance(data, dict):
        raise InputError("config.json is not a JSON object", file=config, reason="bad_json")
    value = data.get("model_type")
    return value if isinstance(value, str) else None
