"""EvalResult: how one model scored on one eval set, item by item."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, JsonValue

from distill.schemas.base import Identifier, NonEmptyStr, Part, Record, Sha256Hex

Correctness = Literal["correct", "wrong", "unparseable"]
HarnessName = Literal["lmms-eval", "vlmevalkit"]


class HarnessScore(Part):
    """What another evaluation harness said of one item, kept beside our judge's verdict.

    ``score`` is the harness's own per-item value of ``metric`` (None when the harness keeps
    no per-item score for it, e.g. a metric computed only in aggregate). The harness counts
    the item right when ``score`` is full marks (>= 1.0); partial credit (ANLS, relaxed
    accuracy below 1) counts as not right. ``extracted`` is the answer the harness parsed
    out of the output (its filtered response or judge extraction), when it wrote one.
    """

    harness: HarnessName
    metric: str | None = Field(default=None, description="the harness's metric name")
    score: float | None = Field(default=None, description="the harness's per-item score")
    extracted: str | None = Field(default=None, description="the answer the harness read")
    source: NonEmptyStr = Field(description="where the row came from: 'file:N', N the line "
                                            "of a JSONL, the row of an xlsx/TSV (header = "
                                            "row 1) or the record of a JSON list (from 1)")

    @property
    def correct(self) -> bool | None:
        return None if self.score is None else self.score >= 1.0


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
    # Set on items imported from another harness's run (distill eval import): that harness's
    # own verdict, so compare can list where it and our judge disagree. None otherwise.
    harness: HarnessScore | None = Field(
        default=None, description="imported items only: the other harness's own verdict")


class HarnessRun(Part):
    """The finished run of another harness an EvalResult was imported from."""

    harness: HarnessName
    task: NonEmptyStr  # lmms-eval task name / VLMEvalKit dataset name
    model: str | None = None  # the harness's model name (--model / VLMEvalKit model)
    model_args: str | None = None  # lmms-eval --model_args, when recorded
    # The files read, by path (as given) -> sha256, so a re-import can tell they changed.
    files: dict[str, Sha256Hex]


class ModelRef(Part):
    """What was evaluated: a SiQ-VL checkpoint (with its RunManifest), an hf model, an engine,
    or (kind ``harness``) whatever model another harness ran, imported from its files."""

    kind: Literal["siqvl", "hf", "engine", "harness"]
    name: NonEmptyStr
    path: str | None = None
    run_manifest: str | None = None
    # Content hash of the weights/config files evaluated (None for a remote engine), so
    # lineage can tell whether the checkpoint on disk is still the one that was scored.
    fingerprint: Sha256Hex | None = None
    harness_run: HarnessRun | None = Field(
        default=None, description="kind 'harness': the run the result was imported from")


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
