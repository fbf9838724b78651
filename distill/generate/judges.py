"""Judge files: which model judges traces, with which rubric, and how its replies are read.

A judge is a YAML file (``data/judges/digits.yaml`` ships: the built-in digits judge)::

    id: grader                 # goes into every judgement and its key
    engine: openai             # any engine a teacher can use: vllm | openai | hf | builtin
    model: my-served-judge
    prompt: judge-rubric       # a judge prompt (kind: judge, answer_format: score)
    same_prompt: judge-same    # optional: compare free-text answers (answer_format: same);
                               # null never asks
    sampling: {temperature: 0.0, top_p: 1.0, max_tokens: 512, seed: 0}
    batch_size: 64             # optional: requests handed to the engine at once
    options: {}                # the engine's options, as in a teacher set

A judge's reply is parsed as strictly as every record: a rubric reply must end in one
``Score: N`` line (N an integer in the prompt's ``score_range``, ``N/HIGH`` accepted), a
comparison in ``Same: yes`` or ``Same: no``. Anything else is a rejection with its reason
(``judge_no_score``, ``judge_bad_score``, ``judge_score_out_of_range``,
``judge_ambiguous_score``, ``judge_no_verdict``), never a crash and never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field

from distill.core.config_files import ConfigFile, read_yaml_file, validate
from distill.core.paths import DATA_DIR
from distill.core.prompts import PromptTemplate
from distill.generate.engines.base import Engine, EngineOptions
from distill.generate.teachers import resolve_engine, resolve_prompt
from distill.schemas import JudgeIdentity, SamplingParams, content_hash
from distill.schemas.base import Identifier

JUDGES_DIR = DATA_DIR / "judges"

_SCORE_LINE = re.compile(r"^[ \t>*#_-]*(?:\*\*|__)?score(?:\*\*|__)?[ \t]*[:：]"
                         r"(?:\*\*|__)?[ \t]*(?P<value>.*?)[ \t*_.]*$",
                         re.IGNORECASE | re.MULTILINE)
_SCORE_VALUE = re.compile(r"^(?:\*\*|__)?(?P<n>[+-]?\d+(?:\.\d+)?)(?:\s*/\s*(?P<of>\d+))?"
                          r"(?:\*\*|__)?$")
_SAME_LINE = re.compile(r"^[ \t>*#_-]*(?:\*\*|__)?same(?:\*\*|__)?[ \t]*[:：]"
                        r"(?:\*\*|__)?[ \t]*(?:\*\*|__)?(?P<value>[A-Za-z]+)",
                        re.IGNORECASE | re.MULTILINE)


class JudgeSpec(ConfigFile):
    id: Identifier
    engine: str
    model: str = Field(min_length=1)
    prompt: str = "judge-rubric"
    same_prompt: str | None = "judge-same"
    sampling: SamplingParams = SamplingParams(temperature=0.0, max_tokens=512)
    batch_size: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Judge:
    """A resolved judge: its spec, prompts and validated engine options."""

    spec: JudgeSpec
    prompt: PromptTemplate
    same_prompt: PromptTemplate | None
    options: EngineOptions
    engine_cls: type[Engine]
    source: str

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def batch_size(self) -> int | None:
        return self.spec.batch_size or self.engine_cls.default_batch_size

    def make_engine(self) -> Engine:
        return self.engine_cls(self.spec.model, self.options)

    def judge_identity(self, prompt: PromptTemplate) -> JudgeIdentity:
        return JudgeIdentity(judge_id=self.spec.id, engine=self.engine_cls.name,
                             model=self.spec.model, prompt_id=prompt.id,
                             prompt_hash=prompt.hash, sampling=self.spec.sampling)

    @cached_property
    def rubric(self) -> JudgeIdentity:
        return self.judge_identity(self.prompt)

    @cached_property
    def same_answer(self) -> JudgeIdentity | None:
        return None if self.same_prompt is None else self.judge_identity(self.same_prompt)

    def identity(self) -> dict[str, Any]:
        """What defines this judge's outputs (engines are cached by it; plans hash it)."""
        return {"rubric": self.rubric.model_dump(mode="json"),
                "same_answer": self.same_answer.model_dump(mode="json")
                if self.same_answer else None}

    @cached_property
    def hash(self) -> str:
        return content_hash(self.identity())

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "hash": self.hash, **self.identity(),
                "options": self.options.model_dump(mode="json")}


def load_judge(name_or_path: str | Path) -> Judge:
    """A judge by path, or by name of a file in data/judges (``digits``)."""
    document = read_yaml_file(name_or_path, JUDGES_DIR, "judge file")
    spec = validate(document, JudgeSpec)
    cls, options = resolve_engine(document, (), spec.engine, spec.options)
    prompt = resolve_prompt(document, ("prompt",), spec.prompt, "judge")
    if prompt.answer_format != "score":
        raise document.error(("prompt",), f"prompt {spec.prompt!r} compares answers "
                                          "(answer_format: same); 'prompt' needs a rubric "
                                          "(answer_format: score)", "bad_judge")
    same = None
    if spec.same_prompt is not None:
        same = resolve_prompt(document, ("same_prompt",), spec.same_prompt, "judge")
        if same.answer_format != "same":
            raise document.error(("same_prompt",), f"prompt {spec.same_prompt!r} is a rubric; "
                                                   "'same_prompt' needs answer_format: same",
                                 "bad_judge")
    return Judge(spec, prompt, same, options, cls, str(document.path))


# --- reading replies -------------------------------------------------------------------------


class BadReply(ValueError):
    """A judge reply that is no valid judgement; ``reason`` is short and counted."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_score(text: str, score_range: tuple[int, int]) -> tuple[float, float]:
    """(raw score, score normalised to [0, 1]) from a rubric reply, or BadReply."""
    low, high = score_range
    values = [match.group("value").strip() for match in _SCORE_LINE.finditer(text)]
    if not values:
        raise BadReply("judge_no_score", f"no 'Score: N' line (N from {low} to {high})")
    if len(set(values)) > 1:
        raise BadReply("judge_ambiguous_score", f"several different scores: {values}")
    match = _SCORE_VALUE.match(values[0])
    if match is None or "." in match.group("n"):
        raise BadReply("judge_bad_score", f"score {values[0]!r} is not an integer from {low} "
                                          f"to {high}")
    if match.group("of") is not None and int(match.group("of")) != high:
        raise BadReply("judge_bad_score", f"score {values[0]!r} is not out of {high}")
    raw = int(match.group("n"))
    if not low <= raw <= high:
        raise BadReply("judge_score_out_of_range", f"score {raw} is outside {low}..{high}")
    return float(raw), (raw - low) / (high - low)


def parse_same(text: str) -> bool:
    """The verdict of a comparison reply ('Same: yes' / 'Same: no'), or BadReply."""
    verdicts = {match.group("value").lower() for match in _SAME_LINE.finditer(text)}
    if verdicts == {"yes"}:
        return True
    if verdicts == {"no"}:
        return False
    if not verdicts:
        raise BadReply("judge_no_verdict", "no 'Same: yes' or 'Same: no' line")
    raise BadReply("judge_no_verdict", f"verdict(s) {sorted(verdicts)} are not one yes or no")
