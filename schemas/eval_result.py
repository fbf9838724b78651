"""EvalResult: how one model scored on one eval set, item by item."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, JsonValue

from distill.schemas.base import Identifier, NonEmptyStr, Part, Record, Sha256Hex

Correctness = Literal["correct", "wrong", "unparseable"]


class EvalItem(Part):
    """One scored answer, with the raw output kept so a person can read why."""

    sample_id: Identifier
    category: Identifier
    gold: str
    raw_output: str
    extracted: str | None
    correctness: Correctness
    output_tokens: int = Field(ge=0)
    latency_s: float = Field(ge=0.0)


class ModelRef(Part):
    """What was evaluated: a SiQ-VL checkpoint (with its RunManifest), an hf model or an engine."""

    kind: Literal["siqvl", "hf", "engine"]
    name: NonEmptyStr
    path: str | None = None
    run_manifest: str | None = None
    # Content hash of the weights/config files evaluated (None for a remote engine), so
    # lineage can tell whether the checkpoint on disk is still the one that was scored.
    fingerprint: Sha256Hex | None = None


class EvalResult(Record):
    """The last link of lineage: eval score -> checkpoint -> dataset version -> traces."""

    result_id: Sha256Hex
    created_at: datetime
    model: ModelRef
    eval_set: NonEmptyStr
    eval_set_hash: Sha256Hex
    mode: Literal["cot", "direct"]
    generation: dict[str, JsonValue]
    metrics: dict[str, float]
    per_category: dict[str, dict[str, float]] = Field(default_factory=dict)
    items: list[EvalItem]
