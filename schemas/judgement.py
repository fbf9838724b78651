"""Judgement: a judge model's verdict, and the key that makes judging exactly-once.

Two kinds, both written by ``distill judge`` (a command of the generate stage) and read by
``distill filter --judgements`` as signals:

* ``rubric``: one trace scored against a rubric prompt (is the reasoning consistent with
  the image and the answer; is the answer supported), ``score`` in [0, 1];
* ``same_answer``: two different free-text answers to one item, judged the same or not
  (``same``), where no rule can compare them.

A judgement's key is a hash of what it judges (``subject``) and of the judge (engine,
model, prompt hash, sampling): the same key twice is the same request twice, so a
restarted run skips it, and a new policy reads stored judgements instead of asking again.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill.schemas.base import Identifier, NonEmptyStr, Part, Record, Sha256Hex
from distill.schemas.hashing import content_hash
from distill.schemas.trace import FinishReason, SamplingParams

JudgementKind = Literal["rubric", "same_answer"]


class JudgeIdentity(Part):
    """What defines a judge's outputs; part of every judgement key."""

    judge_id: Identifier
    engine: Identifier
    model: NonEmptyStr
    prompt_id: Identifier
    prompt_hash: Sha256Hex
    sampling: SamplingParams


def same_answer_subject(sample_hash: str, a: str, b: str) -> str:
    """The identity of one answer pair of one item (order-free)."""
    return content_hash({"sample": sample_hash, "answers": sorted([a, b])})


def make_judgement_key(*, kind: JudgementKind, subject: str, judge: JudgeIdentity) -> str:
    """Deterministic identity of one requested judgement (see the module docstring)."""
    return content_hash({"kind": kind, "subject": subject,
                         "judge": judge.model_dump(mode="json")})


class Judgement(Record):
    """One judge output, parsed: a rubric score of a trace, or a same/different verdict."""

    judgement_key: Sha256Hex
    kind: JudgementKind
    subject: Sha256Hex
    sample_id: Identifier
    sample_hash: Sha256Hex
    judge: JudgeIdentity
    trace_key: Sha256Hex | None = None  # rubric: the trace judged
    teacher_id: Identifier | None = None  # rubric: the teacher that wrote it
    answers: list[NonEmptyStr] | None = None  # same_answer: the two answers, sorted
    score: float | None = Field(default=None, ge=0.0, le=1.0)  # rubric, normalised
    raw_score: float | None = None  # rubric, on the prompt's own scale
    same: bool | None = None  # same_answer
    raw_text: str
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    finish_reason: FinishReason
    latency_s: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _fits_kind(self) -> Judgement:
        if self.kind == "rubric":
            if self.trace_key is None or self.score is None or self.raw_score is None:
                raise ValueError("a 'rubric' judgement needs trace_key, score and raw_score")
            if self.subject != self.trace_key:
                raise ValueError("a 'rubric' judgement's subject is its trace_key")
            if self.answers is not None or self.same is not None:
                raise ValueError("'answers' and 'same' belong to 'same_answer' judgements")
        else:
            if self.answers is None or len(self.answers) != 2 or self.same is None:
                raise ValueError("a 'same_answer' judgement needs two answers and 'same'")
            if self.answers != sorted(self.answers) or self.answers[0] == self.answers[1]:
                raise ValueError("'answers' must be two different answers, sorted")
            if self.subject != same_answer_subject(self.sample_hash, *self.answers):
                raise ValueError("subject does not match sample_hash and answers")
            if self.score is not None or self.trace_key is not None:
                raise ValueError("'score' and 'trace_key' belong to 'rubric' judgements")
        expected = make_judgement_key(kind=self.kind, subject=self.subject, judge=self.judge)
        if self.judgement_key != expected:
            raise ValueError("judgement_key does not match kind, subject and judge")
        return self

    def content_fields(self) -> dict:
        """The judgement without its timing: what must match between two runs."""
        return self.model_dump(mode="json", exclude={"latency_s"})


__all__ = ["JudgeIdentity", "Judgement", "JudgementKind", "make_judgement_key",
           "same_answer_subject"]
