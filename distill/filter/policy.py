"""Selection policies: YAML files that decide which scored traces make a dataset.

A policy only reads signals, so changing it never re-scores. Format (every section is
optional; see data/policies/default.yaml)::

    name: default
    splits: [train]                # only items of these splits (null: all); a trace of a
                                   # test item must not become training data
    rules:                         # all must hold; a failing rule is a drop reason
      correctness: correct         # shorthand for {equals: correct}
      truncated: false
      repetition_ratio: {max: 0.5}
      length_zscore: {min: -4, max: 4}
      correctness_or_so: {in: [correct, wrong]}
    per_item:
      max_traces: 4                # at most N kept traces per item (null: no cap)
      teacher_preference: [big, small]   # earlier teachers win; unlisted ones come after
      prefer: first                # among one teacher's samples: first (lowest k),
                                   # shortest or longest
    dedup:
      exact: true                  # normalised text hash
      near: true                   # MinHash + LSH
      threshold: 0.7               # Jaccard similarity of word 5-gram sets
      scope: image                 # image: only traces about the same image can be
                                   # duplicates; global: any two traces
    decontamination:               # used when --eval-set is given
      image: true                  # same image bytes as an eval item
      question: true               # same normalised question (+ choices) text
      near_threshold: 0.8          # near-duplicate question text (null: off)
      template_min_count: 3        # a question shared by this many eval items is a
                                   # template ("What is the sum?"), not an item identity

Policies are config files like every other (``distill.core.config_files``): errors name the
file, the line and the key (``policy.yaml:7: field 'rules.correctnes': unknown signal ...
did you mean 'correctness'?``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, PrivateAttr, field_validator, model_validator

from distill.core.config_files import (
    ConfigFile,
    KeyProblem,
    did_you_mean,
    from_plain_data,
    load_config_file,
    parse_yaml,
    validate,
)
from distill.core.paths import DATA_DIR
from distill.filter.signals import SIGNALS, Signal
from distill.schemas import content_hash
from distill.schemas.base import Scalar

POLICIES_DIR = DATA_DIR / "policies"
DEFAULT_POLICY = POLICIES_DIR / "default.yaml"
# Signals decided by their own sections, not by rules (they are known only after rules).
SECTION_SIGNALS = {"duplicate": "dedup", "duplicate_of": "dedup",
                   "contamination": "decontamination"}


def _similarity(value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"must be a similarity in (0, 1], got {value!r}")
    return value


Similarity = Annotated[float, AfterValidator(_similarity)]


class Rule(ConfigFile):
    """The conditions on one signal; all must hold. ``correctness: correct`` in a policy
    file is shorthand for ``{equals: correct}``."""

    model_config = ConfigFile.model_config | {"strict": True}
    key_noun: ClassVar[str] = "condition"

    equals: Scalar | None = None
    one_of: list[Scalar] | None = Field(default=None, alias="in")
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)

    @field_validator("one_of")
    @classmethod
    def _not_empty(cls, value: list[Scalar] | None) -> list[Scalar] | None:
        if value is not None and not value:
            raise ValueError("'in' needs a non-empty list of values")
        return value

    @model_validator(mode="after")
    def _satisfiable(self) -> Rule:
        if self.equals is None and self.one_of is None and self.min is None \
                and self.max is None:
            raise ValueError("a rule needs a condition: equals, in, min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}: no trace could pass")
        return self

    def holds(self, value: Scalar | None) -> bool:
        if value is None:
            return False
        if self.equals is not None and value != self.equals:
            return False
        if self.one_of is not None and value not in self.one_of:
            return False
        if self.min is not None and not (value >= self.min):  # NaN fails
            return False
        return not (self.max is not None and not (value <= self.max))

    def as_dict(self) -> dict[str, Any]:
        """Only the conditions given, floats as floats: the form the policy hash covers."""
        out: dict[str, Any] = {}
        if self.equals is not None:
            out["equals"] = self.equals
        if self.one_of is not None:
            out["in"] = list(self.one_of)
        if self.min is not None:
            out["min"] = float(self.min)
        if self.max is not None:
            out["max"] = float(self.max)
        return out


class PerItem(ConfigFile):
    null_means_default: ClassVar[frozenset[str]] = frozenset({"teacher_preference", "prefer"})

    max_traces: int | None = 4
    teacher_preference: list[str] = Field(default_factory=list)
    prefer: Literal["first", "shortest", "longest"] = "first"

    @field_validator("max_traces", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"must be a positive integer or null, got {value!r}")
        return value

    @field_validator("teacher_preference")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a teacher twice")
        return value


class Dedup(ConfigFile):
    null_means_default: ClassVar[frozenset[str]] = frozenset(
        {"exact", "near", "threshold", "scope"})

    exact: bool = True
    near: bool = True
    threshold: Similarity = 0.7
    scope: Literal["image", "global"] = "image"


class Decontamination(ConfigFile):
    null_means_default: ClassVar[frozenset[str]] = frozenset(
        {"image", "question", "template_min_count"})

    image: bool = True
    question: bool = True
    near_threshold: Similarity | None = 0.8
    template_min_count: int = 3

    @field_validator("template_min_count")
    @classmethod
    def _at_least_two(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"must be at least 2, got {value}")
        return value


class Policy(ConfigFile):
    """A selection policy. Its identity (``hash``) is ``as_dict()``: every default filled
    in, comments and spelling (``x: 1`` vs ``x: {equals: 1}``) left out."""

    model_config = ConfigFile.model_config | {"strict": True}
    null_means_default: ClassVar[frozenset[str]] = frozenset(
        {"name", "description", "rules", "per_item", "dedup", "decontamination"})

    name: str = "unnamed"
    description: str = ""
    splits: list[str] | None = Field(default_factory=lambda: ["train"])
    rules: dict[str, Rule] = Field(default_factory=dict)
    per_item: PerItem = Field(default_factory=PerItem)
    dedup: Dedup = Field(default_factory=Dedup)
    decontamination: Decontamination = Field(default_factory=Decontamination)
    _source: str | None = PrivateAttr(default=None)  # the file it came from (not identity)

    @field_validator("splits", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, list) or not value
                                  or not all(isinstance(s, str) for s in value)):
            raise ValueError("must be a non-empty list of split names, or null for every split")
        return value

    @field_validator("rules", mode="before")
    @classmethod
    def _rules_shape(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("'rules' must map signal names to conditions")
        return {str(name): condition if isinstance(condition, dict) else {"equals": condition}
                for name, condition in value.items()}

    @field_validator("rules")
    @classmethod
    def _rules_fit_their_signals(cls, value: dict[str, Rule]) -> dict[str, Rule]:
        for name, rule in value.items():
            check_rule(name, rule)
        return value

    @property
    def source(self) -> str | None:
        return self._source

    def as_dict(self) -> dict[str, Any]:
        """The policy with every default filled in: what the hash and manifests hold."""
        return {
            "name": self.name,
            "description": self.description,
            "splits": self.splits,
            "rules": {signal: rule.as_dict() for signal, rule in self.rules.items()},
            "per_item": self.per_item.model_dump(),
            "dedup": self.dedup.model_dump(),
            "decontamination": self.decontamination.model_dump(),
        }

    @property
    def hash(self) -> str:
        return content_hash(self.as_dict())

    def failed_rules(self, signals: dict[str, Scalar]) -> list[str]:
        """Names of the signals whose rule does not hold, in policy order."""
        return [name for name, rule in self.rules.items() if not rule.holds(signals.get(name))]

    def teacher_rank(self, teacher_id: str) -> tuple[int, str]:
        order = self.per_item.teacher_preference
        return (order.index(teacher_id) if teacher_id in order else len(order), teacher_id)


# --- rules against the signal vocabulary -----------------------------------------------------


def check_rule(name: str, rule: Rule) -> None:
    """A rule must name a known signal and test it with values it can take."""
    where = ("rules", name)
    if name in SECTION_SIGNALS:
        raise KeyProblem(where, f"'{name}' cannot be a rule: it is decided by the "
                                f"'{SECTION_SIGNALS[name]}' section")
    signal = SIGNALS.get(name)
    if signal is None:
        raise KeyProblem(where, f"unknown signal '{name}'{did_you_mean(name, SIGNALS)} "
                                "('distill datasets signals' lists them all)")
    if rule.equals is not None:
        _check_value(signal, rule.equals, (*where, "equals"))
    for value in rule.one_of or ():
        _check_value(signal, value, (*where, "in"))
    for bound in ("min", "max"):
        if getattr(rule, bound) is not None and signal.kind not in ("int", "float"):
            raise KeyProblem((*where, bound), f"'{name}' is a {signal.kind} signal; min/max "
                                              "only apply to numbers (use equals or in)")


def _check_value(signal: Signal, value: Scalar, where: tuple[str, ...]) -> None:
    expected = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}[signal.kind]
    if isinstance(value, bool) != (signal.kind == "bool") or not isinstance(value, expected) \
            or (isinstance(value, float) and math.isnan(value)):
        raise KeyProblem(where, f"'{signal.name}' is a {signal.kind} signal; {value!r} can "
                                "never equal it")
    if signal.values is not None and value not in signal.values:
        raise KeyProblem(where, f"'{signal.name}' takes one of {', '.join(signal.values)}; "
                                f"got {value!r}{did_you_mean(str(value), signal.values)}")


# --- loading ---------------------------------------------------------------------------------


def load_policy(path: Path | str | None = None) -> Policy:
    """Read and check a policy file (default: data/policies/default.yaml)."""
    policy, found = load_config_file(path or DEFAULT_POLICY, POLICIES_DIR, "policy file", Policy)
    return _with_source(policy, str(found))


def parse_policy(text: str, path: Path | None = None) -> Policy:
    document = parse_yaml(text, path)
    policy = validate(document, Policy, data=document.data or {})
    return _with_source(policy, str(path) if path else None)


def policy_from_dict(data: Any, source: str | None = None) -> Policy:
    """A policy from plain data (a parsed file, or a manifest's stored policy)."""
    return _with_source(from_plain_data(data, Policy, source or "<policy>"), source)


def _with_source(policy: Policy, source: str | None) -> Policy:
    policy._source = source
    return policy
