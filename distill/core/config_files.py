"""Reading the YAML files users name on the command line: prompts, teacher sets, train
configs, model specs, demo plans.

Each kind is found by path, or by bare name among the files shipped in its folder under
data/ or prompts/; a missing file lists what ships, and broken YAML names its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from distill.core.errors import InputError


def resolve_named(name_or_path: str | Path, folder: Path) -> Path:
    """``name`` -> ``folder/name.yaml``; anything with a suffix or that exists is a path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        return folder / f"{name_or_path}.yaml"
    return path


def load_named_yaml(name_or_path: str | Path, folder: Path, kind: str) -> tuple[Any, Path]:
    """The parsed YAML of a named or given file, and where it was read from."""
    path = resolve_named(name_or_path, folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        shipped = sorted(p.stem for p in folder.glob("*.yaml"))
        raise InputError(f"{kind} not found (shipped: {shipped})", file=path,
                         reason="missing_file") from None
    try:
        return yaml.safe_load(text), path
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"not valid YAML: {problem}", file=path,
                         line=mark.line + 1 if mark is not None else None,
                         reason="bad_yaml") from None
