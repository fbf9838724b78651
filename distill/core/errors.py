"""User-facing errors: each names the file, the line and the field, and exits non-zero.

The CLI prints a ``DistillError`` as one clear message (no traceback) and exits with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError


class DistillError(Exception):
    """An error caused by input, configuration or environment, not by a bug."""


class InputError(DistillError):
    """A bad record or file: where it is (file, line, field) and what is wrong."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        reason: str = "invalid_input",
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(self.__str__())

    @property
    def location(self) -> str | None:
        if self.file is None:
            return None
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def __str__(self) -> str:
        parts = []
        if self.location:
            parts.append(self.location)
        if self.field:
            parts.append(f"field '{self.field}'")
        parts.append(self.message)
        return ": ".join(parts)

    @classmethod
    def from_validation(
        cls, exc: ValidationError, *, file: str | Path | None, line: int | None
    ) -> InputError:
        """The first field error of a pydantic failure, with a count of the others."""
        errors = exc.errors(include_url=False)
        first = errors[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = _describe(first)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more error(s))"
        return cls(message, file=file, line=line, field=field, reason="schema_error")


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (not part of the schema)"
    message = error["msg"]
    return message.removeprefix("Value error, ")


class MissingExtraError(DistillError):
    """An optional dependency is needed for what was asked and is not installed."""


def require_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency lazily, or say exactly what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the optional dependency '{module}', which is not installed "
            f"({exc}). Install it with: pip install 'distill-vlm[{extra}]'"
        ) from None


class DiskFullError(DistillError):
    """The file system ran out of space; completed work is intact and a rerun resumes."""

    def __init__(self, path: str | Path | None = None, *,
                 rerun: str = "run the same command again to resume") -> None:
        self.path = path
        where = f" while writing {path}" if path else ""
        super().__init__(
            f"no space left on device{where}; finished work is intact: free some space and "
            f"{rerun}"
        )


_OUT_OF_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How libraries that do their own I/O say it: safetensors (Rust), numpy's short writes.
_OUT_OF_SPACE_TEXT = re.compile(
    r"No space left on device|Disk quota exceeded|os error (28|122)\b"
    r"|\d+ requested and \d+ written"
)


def disk_full_from(exc: BaseException) -> DiskFullError | None:
    """The DiskFullError behind ``exc`` (or anything in its chain), else None.

    Stages write through many libraries (our shards, safetensors, numpy, transformers'
    ``save_pretrained``); each reports a full disk its own way. The CLI asks this one
    question instead of wrapping every write.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return current
        if getattr(current, "errno", None) in _OUT_OF_SPACE_ERRNOS or (
            _OUT_OF_SPACE_TEXT.search(str(current))
        ):
            return DiskFullError(getattr(current, "filename", None))
        current = current.__cause__ or current.__context__
    return None


def file_system_error(exc: OSError, doing: str, path: str | Path | None = None) -> DistillError:
    """One line for a file-system call that failed (OUT under a regular file, a read-only
    folder, a file that vanished): what was being done, where, and the system's reason. A
    full disk stays a ``DiskFullError`` (it says how to resume)."""
    full = disk_full_from(exc)
    if full is not None:
        return full
    where = exc.filename if exc.filename is not None else path
    reason = exc.strerror or str(exc) or type(exc).__name__
    return DistillError(f"{doing}: {where}: {reason}" if where else f"{doing}: {reason}")
