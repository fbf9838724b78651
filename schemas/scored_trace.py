"""ScoredTrace: a trace joined with its sample, every signal, and the policy's verdict."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.schemas.base import Record, Scalar
from distill.schemas.sample import Sample
from distill.schemas.trace import Trace

Verdict = Literal["keep", "drop"]
# Where an item's label comes from: the gold answer the item came with, or derived by the
# filter from the teachers' answers (their consensus, or a judge's scores among tied
# answers). Stored as the signal ``label_source`` (``none`` when no label could be
# derived), next to the label itself (signal ``label``).
LabelSource = Literal["gold", "consensus", "judge"]
DERIVED_LABEL_SOURCES = ("consensus", "judge")


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

    @property
    def label_source(self) -> LabelSource | None:
        """'gold' for an item with a gold answer; else how the filter derived its label
        (None: no label, e.g. no teacher gave an answer of the asked type)."""
        if self.sample.answer is not None:
            return "gold"
        source = self.signals.get("label_source")
        return source if source in DERIVED_LABEL_SOURCES else None  # type: ignore[return-value]

    @property
    def label(self) -> str | None:
        """The item's answer to train against: the gold, or the derived label."""
        if self.sample.answer is not None:
            return self.sample.answer
        return str(self.signals["label"]) if self.label_source is not None else None
