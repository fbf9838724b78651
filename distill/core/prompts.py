"""Prompt templates as data: YAML files in prompts/, each named by its content hash.

A template holds a system prompt, a user template (Jinja2, strict: an unknown
placeholder is an error at load time, not a silently empty string) and the answer format
the parser expects. The hash of the parsed file goes into every trace, so changing a
prompt makes new trace keys and old traces stay attributable.

Three kinds of prompt, told apart by ``kind`` (default ``teacher``):

* ``teacher``: a teacher answers an item (placeholders ``question``, ``choices``,
  ``answer_type``, ``category``); ``answer_format`` answer_line | think_tags | direct;
* ``judge``: a judge reads a teacher's output (``distill judge``). ``answer_format: score``
  (a rubric: the item's placeholders plus ``reasoning`` and ``answer``; the reply ends with
  ``Score: N``, N an integer in ``score_range``) or ``answer_format: same`` (two answers to
  one item: the item's placeholders plus ``answer_a`` and ``answer_b``; the reply ends with
  ``Same: yes`` or ``Same: no``);
* ``extract``: an extraction model copies out another model's final answer (the answer
  judge's model tier; the item's placeholders plus ``response``; ``answer_format: answer``,
  the reply ends with ``Answer: X`` or ``Answer: NONE``);
* ``student``: a prompt only a student is asked with (a model spec's ``prompts:``), with a
  teacher's placeholders and formats: e.g. the question alone for a student trained from
  scratch, which a teacher could not answer in the expected format. A student may also be
  asked with a teacher prompt (the default: as its teachers were).

A teacher prompt's hash covers exactly what it always did, so adding judge prompts
changed no teacher prompt's hash (nor any trace key).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import field_validator, model_validator

from distill.core.config_files import ConfigFile, KeyProblem, load_config_file
from distill.core.errors import InputError
from distill.core.paths import PROMPTS_DIR
from distill.core.templates import (
    check_renders,
    check_template,
    placeholders,
    render,
    sandboxed_environment,
)
from distill.schemas import Sample, content_hash
from distill.schemas.base import Identifier
from distill.schemas.sample import CHOICE_LETTERS
from distill.schemas.trace import AnswerFormat

PromptKind = Literal["teacher", "judge", "extract", "student"]
STUDENT_KINDS: tuple[PromptKind, ...] = ("teacher", "student")  # what a student is asked with
JudgeFormat = Literal["score", "same"]

# The only names a user template may use, by kind and answer format.
PLACEHOLDERS = frozenset({"question", "choices", "answer_type", "category"})
JUDGE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "score": PLACEHOLDERS | {"reasoning", "answer"},
    "same": PLACEHOLDERS | {"answer_a", "answer_b"},
}
FORMATS: dict[str, tuple[str, ...]] = {"teacher": AnswerFormat.__args__,
                                       "student": AnswerFormat.__args__,
                                       "judge": JudgeFormat.__args__,
                                       "extract": ("answer",)}
# An extraction prompt (the judge's model tier, ``distill.core.answers.model_tier``) shows
# a model another model's ``response`` and asks for its final answer only.
EXTRACT_PLACEHOLDERS = PLACEHOLDERS | {"response"}
# A prompt file is data someone shared: its template renders in the sandbox
# (distill.core.templates), never in a plain Jinja environment.
_ENV = sandboxed_environment(trim_blocks=True, lstrip_blocks=True, autoescape=False)
# Harmless values every template is rendered with once when its file is loaded (each
# answer type, with and without choices), so a template that fails fails at load time.
_PROBES = [{"question": "How many?", "choices": choices, "answer_type": answer_type,
            "category": "general", "reasoning": "r", "answer": "a", "answer_a": "a",
            "answer_b": "b", "response": "r"}
           for answer_type in ("number", "choice", "text", "yes_no")
           for choices in (None, "A. one\nB. two")]


def _placeholders(template: str) -> set[str]:
    return placeholders(_ENV, template)


class PromptFile(ConfigFile):
    """A prompt file as written: checked when loaded, so a typo in a placeholder is an error
    naming the file, not a silently empty string in every request."""

    id: Identifier
    description: str = ""
    kind: PromptKind = "teacher"
    system: str = ""
    user: str
    answer_format: str
    score_range: tuple[int, int] | None = None

    @field_validator("user")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty template")
        check_template(_ENV, value)
        return value

    @model_validator(mode="after")
    def _fits_its_kind(self) -> PromptFile:
        formats = FORMATS[self.kind]
        if self.answer_format not in formats:
            raise KeyProblem(("answer_format",), f"a {self.kind} prompt's answer_format is one "
                                                 f"of {list(formats)}, got {self.answer_format!r}")
        allowed = (PLACEHOLDERS if self.kind in STUDENT_KINDS else EXTRACT_PLACEHOLDERS
                   if self.kind == "extract" else JUDGE_PLACEHOLDERS[self.answer_format])
        unknown = sorted(_placeholders(self.user) - allowed)
        if unknown:
            raise KeyProblem(("user",), f"unknown placeholder(s) {unknown}; available in a "
                                        f"{self.kind} prompt ({self.answer_format}): "
                                        f"{sorted(allowed)}")
        try:
            check_renders(_ENV, self.user, _PROBES)
        except ValueError as exc:
            raise KeyProblem(("user",), str(exc)) from None
        scored = self.kind == "judge" and self.answer_format == "score"
        if scored != (self.score_range is not None):
            raise KeyProblem(("score_range",), "a judge prompt with answer_format 'score' "
                                               "needs score_range: [LOW, HIGH]; no other "
                                               "prompt takes one")
        if self.score_range is not None and self.score_range[0] >= self.score_range[1]:
            raise KeyProblem(("score_range",), "needs LOW < HIGH")
        return self


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt: ``render(sample)`` gives the (system, user) texts for a chat request."""

    id: str
    system: str
    user: str
    answer_format: str
    description: str = ""
    kind: PromptKind = "teacher"
    score_range: tuple[int, int] | None = None
    source: str = ""  # the file it was loaded from (named in errors; not in the hash)

    @cached_property
    def hash(self) -> str:
        identity: dict[str, Any] = {"system": self.system, "user": self.user,
                                    "answer_format": self.answer_format}
        if self.kind != "teacher":  # a teacher prompt hashes as it always did
            identity |= {"kind": self.kind, "score_range": self.score_range}
        return content_hash(identity)

    @cached_property
    def _template(self) -> jinja2.Template:
        return _ENV.from_string(self.user)

    def render(self, sample: Sample, **judged: str) -> tuple[str, str]:
        """(system, user) for ``sample``; a judge prompt also takes what it judges
        (``reasoning`` and ``answer``, or ``answer_a`` and ``answer_b``)."""
        choices = None
        if sample.choices:
            choices = "\n".join(f"{CHOICE_LETTERS[i]}. {text}"
                                for i, text in enumerate(sample.choices))
        values = dict(question=sample.question, choices=choices,
                      answer_type=sample.answer_type, category=sample.category, **judged)
        try:
            user = render(self._template, values, f"prompt {self.id!r}")
        except ValueError as exc:
            raise InputError(str(exc), file=self.source or None, field="user",
                             reason="bad_config") from None
        return self.system, user.strip()


def target_text(mode: str, answer: str, reasoning: str | None = None) -> str:
    """The assistant's text a student learns: reasoning then an answer line (``cot``), or
    the answer line alone (``direct``). One place, so the SiQ-VL student and a dataset
    exported for another trainer learn exactly the same target."""
    if mode == "cot":
        reasoning = (reasoning or "").strip()
        return f"{reasoning}\nAnswer: {answer}" if reasoning else f"Answer: {answer}"
    return f"Answer: {answer}"


def shipped_prompts(kind: PromptKind = "teacher") -> list[Path]:
    """The prompt files shipped in prompts/ of one kind, by name (judge rubrics are no
    prompts a teacher or a student is ever given)."""
    return [path for path in sorted(PROMPTS_DIR.glob("*.yaml"))
            if load_config_file(path, PROMPTS_DIR, "prompt file", PromptFile)[0].kind == kind]


def load_prompt(name_or_path: str | Path,
                kind: PromptKind | tuple[PromptKind, ...] = "teacher") -> PromptTemplate:
    """A template by file path, or by name of a file in prompts/ (``cot`` -> prompts/cot.yaml).

    ``kind`` is what the caller needs (one kind, or any of several): a teacher cannot be
    given a judge's rubric, nor a judge a teacher's prompt."""
    prompt, found = load_config_file(name_or_path, PROMPTS_DIR, "prompt file", PromptFile)
    kinds = (kind,) if isinstance(kind, str) else kind
    if prompt.kind not in kinds:
        raise InputError(f"this is a {prompt.kind} prompt; a {' or '.join(kinds)} prompt is "
                         "needed here", file=found, field="kind", reason="bad_config")
    return PromptTemplate(id=prompt.id, system=prompt.system.strip(), user=prompt.user,
                          answer_format=prompt.answer_format,
                          description=prompt.description.strip(), kind=prompt.kind,
                          score_range=prompt.score_range, source=str(found))


@lru_cache(maxsize=256)
def builtin_answer_format(prompt_id: str | None,
                          prompt_hash: str | None) -> AnswerFormat | None:
    """The answer format of a prompt of prompts/ named by id, when its hash is the one
    recorded (a trace or an eval result written before formats were recorded); None for
    any other prompt: then the judge's general reading applies."""
    if not prompt_id or not prompt_hash:
        return None
    path = PROMPTS_DIR / f"{prompt_id}.yaml"
    if not path.is_file():
        return None
    try:
        prompt = load_prompt(path, kind=STUDENT_KINDS)  # a teacher's or a student's prompt
    except InputError:
        return None
    return prompt.answer_format if prompt.hash == prompt_hash else None
