"""Prompt templates as data: YAML files in prompts/, each named by its content hash.

A template holds a system prompt, a user template (Jinja2, strict: an unknown
placeholder is an error at load time, not a silently empty string) and the answer format
the parser expects. The hash of the parsed file goes into every trace, so changing a
prompt makes new trace keys and old traces stay attributable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import jinja2
import jinja2.meta
from pydantic import field_validator

from distill.core.config_files import ConfigFile, load_config_file
from distill.core.errors import InputError
from distill.core.paths import PROMPTS_DIR
from distill.schemas import Sample, content_hash
from distill.schemas.base import Identifier
from distill.schemas.sample import CHOICE_LETTERS
from distill.schemas.trace import AnswerFormat

# The only names a user template may use.
PLACEHOLDERS = frozenset({"question", "choices", "answer_type", "category"})
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          autoescape=False)


class PromptFile(ConfigFile):
    """A prompt file as written: checked when loaded, so a typo in a placeholder is an error
    naming the file, not a silently empty string in every request."""

    id: Identifier
    description: str = ""
    system: str = ""
    user: str
    answer_format: AnswerFormat

    @field_validator("user")
    @classmethod
    def _template_uses_known_placeholders(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty template")
        try:
            names = jinja2.meta.find_undeclared_variables(_ENV.parse(value))
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"template syntax error on its line {exc.lineno}: "
                             f"{exc.message}") from None
        unknown = sorted(names - PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholder(s) {unknown}; available: "
                             f"{sorted(PLACEHOLDERS)}")
        return value


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt: ``render(sample)`` gives the (system, user) texts for a chat request."""

    id: str
    system: str
    user: str
    answer_format: AnswerFormat
    description: str = ""

    @cached_property
    def hash(self) -> str:
        return content_hash({"system": self.system, "user": self.user,
                             "answer_format": self.answer_format})

    @cached_property
    def _template(self) -> jinja2.Template:
        return _ENV.from_string(self.user)

    def render(self, sample: Sample) -> tuple[str, str]:
        choices = None
        if sample.choices:
            choices = "\n".join(f"{CHOICE_LETTERS[i]}. {text}"
                                for i, text in enumerate(sample.choices))
        user = self._template.render(question=sample.question, choices=choices,
                                     answer_type=sample.answer_type, category=sample.category)
        return self.system, user.strip()


def load_prompt(name_or_path: str | Path) -> PromptTemplate:
    """A template by file path, or by name of a file in prompts/ (``cot`` -> prompts/cot.yaml)."""
    prompt, _ = load_config_file(name_or_path, PROMPTS_DIR, "prompt file", PromptFile)
    return PromptTemplate(id=prompt.id, system=prompt.system.strip(), user=prompt.user,
                          answer_format=prompt.answer_format,
                          description=prompt.description.strip())


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
        prompt = load_prompt(path)
    except InputError:
        return None
    return prompt.answer_format if prompt.hash == prompt_hash else None
