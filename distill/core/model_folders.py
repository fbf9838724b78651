"""What kind of model a saved folder holds, read from its config.json without loading it.

Light on purpose (no torch, no transformers): the eval CLI tells model kinds apart before it
imports anything heavy, and ``load_student`` refuses another model's folder before
transformers half-loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.core.errors import InputError

SIQVL_MODEL_TYPE = "siqvl"


def read_model_type(folder: Path) -> str | None:
    """``model_type`` from a model folder's config.json (None when absent)."""
    config = folder / "config.json"
    if not config.is_file():
        raise InputError("not a model folder: it has no config.json", file=folder,
                         reason="missing_file")
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise InputError(f"config.json is not a JSON object: {exc}", file=config,
                         reason="bad_json") from None
    return value if isinstance(value, str) else None
