"""What kind of model a saved folder holds, read from its config.json without loading it,
and where a student's checkpoint and run manifest lie.

Light on purpose (no torch, no transformers): the eval CLI tells model kinds apart before it
imports anything heavy, ``load_student`` refuses another model's folder before
transformers half-loads it, and a teacher set names a student's checkpoint without loading
the student.
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


def is_run_folder(path: Path) -> bool:
    """A training run's folder (``RUN/manifest.json``, checkpoints below), not a checkpoint."""
    return (path / "manifest.json").is_file() and not (path / "config.json").is_file()


def is_student_folder(path: Path) -> bool:
    """A SiQ-VL run or checkpoint folder of ours (False for anything else, a missing path or
    another model's folder included)."""
    if not path.is_dir():
        return False
    if is_run_folder(path):
        return True
    try:
        return read_model_type(path) == SIQVL_MODEL_TYPE
    except InputError:
        return False


def locate_student(path: Path) -> tuple[Path, Path | None]:
    """(checkpoint folder, its run's manifest.json or None) for a SiQ-VL run or checkpoint
    path, both absolute. A run folder (``RUN/manifest.json``) means its ``final/``
    checkpoint; a checkpoint's run manifest is ``RUN/manifest.json`` beside it."""
    path = path.resolve()
    if not path.exists():
        raise InputError("SiQ-VL checkpoint not found", file=path, reason="missing_file")
    if is_run_folder(path):
        final = path / "final"
        if not final.is_dir():
            others = sorted(p.name for p in path.glob("checkpoint-*") if p.is_dir())
            raise InputError(f"this run has no final/ checkpoint yet; name one of {others} "
                             "explicitly", file=path, reason="missing_file")
        checkpoint, manifest = final, path / "manifest.json"
    else:
        checkpoint, manifest = path, path.parent / "manifest.json"
    model_type = read_model_type(checkpoint)
    if model_type != SIQVL_MODEL_TYPE:
        raise InputError(f"this is a '{model_type}' checkpoint, not a SiQ-VL checkpoint "
                         f"(model_type '{SIQVL_MODEL_TYPE}'); evaluate it with --model "
                         f"hf:{checkpoint}", file=checkpoint / "config.json",
                         field="model_type", reason="wrong_model")
    return checkpoint, manifest if manifest.is_file() else None
