"""The one shape every source hands to ingestion."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.core.errors import InputError


@dataclass
class RawItem:
    """A row before validation: Sample fields (minus the image) and where its pixels are.

    Exactly one of ``image_bytes`` (decoded from a dataset or rendered) and
    ``image_path`` (relative to ``image_root``) is set. ``file``/``line`` locate the row
    for error messages.
    """

    fields: dict[str, Any]
    file: str
    line: int | None = None
    image_bytes: bytes | None = None
    image_path: str | None = None
    image_root: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


# A source yields good rows and the errors of bad ones, in input order.
SourceRow = RawItem | InputError
