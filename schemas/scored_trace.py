"""ScoredTrace: a trace joined with its sample, every signal, and the policy's verdict."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.schemas.base import Record, Scalar
from distill.schemas.sample import Sample
from distill.schemas.trace import Trace

Verdict = Literal["keep", "drop"]


class ScoredTrace(Record):
    """Signals are stored for every trace, kept or dropped: a new policy needs no re-scoring.

    The sample travels with the trace so a published dataset is self-contained: training
    and export need nothing but the dataset's own shards (and its image root).
    """

    sample: Sample
    trace: Trace
    signals: dict[str, Scalar] = Field(default_factory=dict)
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)
