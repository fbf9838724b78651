"""What kind of model a saved folder holds, read from its files without loading it.

Light on purpose (no torch, no transformers): the eval CLI tells model kinds apart before it
imports anything heavy, ``load_student`` refuses another model's folder before
transformers half-loads it, and an engine serving a SiQ-VL student (vLLM, in eval or as a
teacher) finds the prompt it was trained with and the run that trained it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import InputError
from distill.core.text import parse_json, read_text

SIQVL_MODEL_TYPE = "siqvl"
# transformers' name for a processor's settings; a SiQ-VL student's records how it was asked.
PROCESSOR_CONFIG = "processor_config.json"


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


def locate_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """(checkpoint folder, its run's manifest.json or None) for a SiQ-VL run or checkpoint
    path; a clear error for anything else.

    A run folder (``RUN/manifest.json``) means its ``final/`` checkpoint.
    """
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


def is_run_folder(path: Path) -> bool:
    """A training run's folder (its manifest, no model of its own), not a checkpoint."""
    return (path / "manifest.json").is_file() and not (path / "config.json").is_file()


def is_student_folder(path: Path) -> bool:
    """A SiQ-VL run or checkpoint folder (False for anything else, never an error)."""
    try:
        return path.is_dir() and (is_run_folder(path) or
                                  read_model_type(path) == SIQVL_MODEL_TYPE)
    except InputError:
        return False


@dataclass(frozen=True)
class StudentFormat:
    """How a saved student was asked in training: the prompt file of each mode (prompts/),
    and whether the prompt's system text was sent."""

    prompts: dict[str, str]
    include_system: bool


def read_student_format(checkpoint: Path) -> StudentFormat:
    """From a SiQ-VL checkpoint's processor_config.json (a folder saved before the prompts
    were recorded was asked with the default prompt files, ``cot`` and ``direct``)."""
    path = checkpoint / PROCESSOR_CONFIG
    if not path.is_file():
        raise InputError(f"a SiQ-VL checkpoint has a {PROCESSOR_CONFIG}", file=path,
                         reason="missing_file")
    data = parse_json(read_text(path), file=path)
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(prompts or {}, dict):
        raise InputError("not a SiQ-VL processor config", file=path, reason="bad_json")
    return StudentFormat(prompts={"cot": "cot", "direct": "direct", **(prompts or {})},
                         include_system=bool(data.get("include_system", True)))
