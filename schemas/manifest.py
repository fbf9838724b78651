"""Shard references and the manifest every stage writes next to its shards."""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, JsonValue, field_validator

from distill.schemas.base import NonEmptyStr, Part, Record, Sha256Hex
from distill.schemas.sample import check_relative_path


class ShardRef(Part):
    """A finished shard: its path relative to the manifest's folder, hash and row count."""

    name: NonEmptyStr
    sha256: Sha256Hex
    rows: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _relative(cls, value: str) -> str:
        return check_relative_path(value)

    # A stage's shards are named <folder>/<split>/<file> (samples/train/part-00000.jsonl):
    # these are the one place that reads that name.

    @property
    def split(self) -> str:
        """The split this shard holds."""
        return PurePosixPath(self.name).parent.name

    @property
    def file(self) -> str:
        """The shard's file name, the same in every stage's folder."""
        return PurePosixPath(self.name).name

    def in_folder(self, folder: str) -> bool:
        """Is this shard named ``<folder>/<split>/<file>``?"""
        parts = PurePosixPath(self.name).parts
        return len(parts) == 3 and parts[0] == folder

    def beside(self, folder: str) -> str:
        """The name of the shard of the same split and file in another stage's folder."""
        return f"{folder}/{self.split}/{self.file}"


class StageManifest(Record):
    """What a stage read, what it wrote, and with which settings.

    ``image_root`` is the absolute folder that image paths in these shards are relative
    to; it is carried from stage to stage so that every record can find its pixels.
    """

    stage: Literal["ingest", "generate", "judge"]
    created_at: datetime
    image_root: str | None = None
    inputs: list[ShardRef] = Field(default_factory=list)
    input_dir: str | None = None
    shards: list[ShardRef]
    rejects: list[ShardRef] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    config: dict[str, JsonValue] = Field(default_factory=dict)
