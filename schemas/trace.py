"""Trace: one teacher output for one sample, and the key that makes generation exactly-once."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.schemas.base import Identifier, NonEmptyStr, Part, Record, Sha256Hex
from distill.schemas.hashing import content_hash

FinishReason = Literal["stop", "length", "other"]
# How a prompt asks for its answer (see prompts/): the judge reads that layout first.
AnswerFormat = Literal["answer_line", "think_tags", "direct"]


class SamplingParams(Part):
    """Decoding settings; part of the trace key, so changing them makes new traces."""

    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=1024, ge=1)
    seed: int | None = 0


def make_trace_key(
    *,
    sample_hash: str,
    teacher_id: str,
    model: str,
    prompt_hash: str,
    sampling: SamplingParams,
    k: int,
) -> str:
    """Deterministic identity of one requested teacher output.

    ``sample_hash`` already covers the sample's content and its image bytes (by sha256).
    The same key twice means the same request twice, so a restarted run skips it.
    """
    return content_hash(
        {
            "sample": sample_hash,
            "teacher": teacher_id,
            "model": model,
            "prompt": prompt_hash,
            "sampling": sampling.model_dump(mode="json"),
            "k": k,
        }
    )


class Trace(Record):
    """A teacher's rationale-annotated answer to one sample (sample index ``k``)."""

    trace_key: Sha256Hex
    sample_id: Identifier
    sample_hash: Sha256Hex
    teacher_id: Identifier
    engine: Identifier
    model: NonEmptyStr
    prompt_id: Identifier
    prompt_hash: Sha256Hex
    sampling: SamplingParams
    k: int = Field(ge=0)
    raw_text: str
    reasoning: str
    final_answer: NonEmptyStr
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    finish_reason: FinishReason
    latency_s: float = Field(ge=0.0)
    # The prompt's declared answer layout, which the judge reads first (None: traces
    # written before it was recorded; the judge's general reading applies).
    answer_format: AnswerFormat | None = None

    def content_fields(self) -> dict:
        """The trace without its timing: what must match between two runs of the same work."""
        return self.model_dump(mode="json", exclude={"latency_s"})
