"""RunManifest: which checkpoint was trained from which dataset version, and how."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, JsonValue

from distill.schemas.base import NonEmptyStr, Record, Sha256Hex


class RunManifest(Record):
    """Written next to every checkpoint; the middle link of the lineage chain."""

    run_id: NonEmptyStr
    created_at: datetime
    stage: NonEmptyStr
    dataset_version: Sha256Hex | None = None
    dataset_path: str | None = None
    parent_checkpoint: str | None = None
    config: dict[str, JsonValue]
    config_hash: Sha256Hex
    # The config's hash without its seed and its speed-only fields: runs of one recipe that
    # differ only in seed share it, which is how compare finds them (None: written before).
    recipe_hash: Sha256Hex | None = None
    steps: int = Field(ge=0)
    examples_seen: int = Field(default=0, ge=0)
    final_loss: float | None = None
    checkpoint_path: NonEmptyStr
    metrics: dict[str, float] = Field(default_factory=dict)
