"""Shared base for every record: strict, closed, immutable, versioned.

Records are the only contract between stages, so they refuse anything they do not
know (``extra="forbid"``) and never coerce types (``strict=True``): a wrong type in a
shard is an error that names the field, not a silent conversion.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

SCHEMA_VERSION = 1

NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\s/\\]+$")]

# Values a signal, a metric or a free-form metadata entry may take.
Scalar = bool | int | float | str


class Record(BaseModel):
    """Base class of every record written to a shard or manifest."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION


class Part(BaseModel):
    """Base class for nested parts of a record (no version of their own)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
