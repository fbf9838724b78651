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

Errors name the file, the line and the key (``policy.yaml:7: field 'rules.correctnes':
unknown signal ... did you mean 'correctness'?``).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.core.errors import InputError
from distill.core.paths import DATA_DIR
from distill.filter.signals import SIGNALS, Signal
from distill.schemas import content_hash
from distill.schemas.base import Scalar

POLICIES_DIR = DATA_DIR / "policies"
DEFAULT_POLICY = POLICIES_DIR / "default.yaml"
PREFER = ("first", "shortest", "longest")
SCOPES = ("image", "global")
OPS = ("equals", "in", "min", "max")
# Signals decided by their own sections, not by rules (they are known only after rules).
SECTION_SIGNALS = {"duplicate": "dedup", "duplicate_of": "dedup",
                   "contamination": "decontamination"}


@dataclass(frozen=True)
class Rule:
    signal: str
    equals: Scalar | None = None
    one_of: tuple[Scalar, ...] | None = None
    min: float | None = None
    max: float | None = None

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
        out: dict[str, Any] = {}
        if self.equals is not None:
            out["equals"] = self.equals
        if self.one_of is not None:
            out["in"] = list(self.one_of)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out

    def describe(self) -> str:
        parts = []
        if self.equals is not None:
            parts.append(f"== {_show(self.equals)}")
        if self.one_of is not None:
            parts.append("in [" + ", ".join(_show(v) for v in self.one_of) + "]")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return f"{self.signal} " + " and ".join(parts)


def _show(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class PerItem:
    max_traces: int | None = 4
    teacher_preference: tuple[str, ...] = ()
    prefer: str = "first"


@dataclass(frozen=True)
class Dedup:
    exact: bool = True
    near: bool = True
    threshold: float = 0.7
    scope: str = "image"


@dataclass(frozen=True)
class Decontamination:
    image: bool = True
    question: bool = True
    near_threshold: float | None = 0.8
    template_min_count: int = 3


@dataclass(frozen=True)
class Policy:
    name: str = "unnamed"
    description: str = ""
    splits: tuple[str, ...] | None = ("train",)
    rules: tuple[Rule, ...] = ()
    per_item: PerItem = field(default_factory=PerItem)
    dedup: Dedup = field(default_factory=Dedup)
    decontamination: Decontamination = field(default_factory=Decontamination)
    source: str | None = None  # the file it came from (not part of its identity)

    def as_dict(self) -> dict[str, Any]:
        """The policy with every default filled in: what the hash and manifests hold."""
        return {
            "name": self.name,
            "description": self.description,
            "splits": None if self.splits is None else list(self.splits),
            "rules": {rule.signal: rule.as_dict() for rule in self.rules},
            "per_item": {"max_traces": self.per_item.max_traces,
                         "teacher_preference": list(self.per_item.teacher_preference),
                         "prefer": self.per_item.prefer},
            "dedup": {"exact": self.dedup.exact, "near": self.dedup.near,
                      "threshold": self.dedup.threshold, "scope": self.dedup.scope},
            "decontamination": {"image": self.decontamination.image,
                                "question": self.decontamination.question,
                                "near_threshold": self.decontamination.near_threshold,
                                "template_min_count": self.decontamination.template_min_count},
        }

    @property
    def hash(self) -> str:
        return content_hash(self.as_dict())

    def failed_rules(self, signals: dict[str, Scalar]) -> list[str]:
        """Names of the signals whose rule does not hold, in policy order."""
        return [rule.signal for rule in self.rules if not rule.holds(signals.get(rule.signal))]

    def teacher_rank(self, teacher_id: str) -> tuple[int, str]:
        order = self.per_item.teacher_preference
        return (order.index(teacher_id) if teacher_id in order else len(order), teacher_id)


# --- loading -----------------------------------------------------------------------------


class _Located:
    """A parsed YAML document that remembers the line of every key."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines: dict[tuple[str, ...], int] = {}

    def error(self, where: tuple[str, ...], message: str) -> InputError:
        line = self.lines.get(where)
        while line is None and where:
            where = where[:-1]
            line = self.lines.get(where)
        return InputError(message, file=self.path or "<policy>", line=line,
                          field=".".join(where) or None, reason="policy_error")


def load_policy(path: Path | str | None = None) -> Policy:
    """Read and check a policy file (default: data/policies/default.yaml)."""
    path = Path(path) if path is not None else DEFAULT_POLICY
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("policy file not found", file=path, reason="missing_file") from None
    return parse_policy(text, path)


def parse_policy(text: str, path: Path | None = None) -> Policy:
    located = _Located(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else _to_python(node, (), located, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise InputError(f"not valid YAML: {exc.problem or exc}", file=path or "<policy>",
                         line=line, reason="policy_error") from None
    finally:
        loader.dispose()
    if data is None:
        return Policy(source=str(path) if path else None)
    return policy_from_dict(data, located, source=str(path) if path else None)


def policy_from_dict(data: Any, located: _Located | None = None,
                     source: str | None = None) -> Policy:
    """Build a policy from plain data (a parsed file, or a manifest's stored policy)."""
    located = located or _Located(None)
    if not isinstance(data, dict):
        raise located.error((), "a policy must be a mapping of sections")
    _check_keys(data, (), ("name", "description", "splits", "rules", "per_item", "dedup",
                           "decontamination"), located)
    name = _typed(data, ("name",), "str", located, default="unnamed")
    description = _typed(data, ("description",), "str", located, default="")
    rules_data = data.get("rules") or {}
    if not isinstance(rules_data, dict):
        raise located.error(("rules",), "'rules' must map signal names to conditions")
    rules = tuple(_rule(str(name_), value, located) for name_, value in rules_data.items())
    return Policy(name=name, description=description, splits=_splits(data, located), rules=rules,
                  per_item=_per_item(data.get("per_item") or {}, located),
                  dedup=_dedup(data.get("dedup") or {}, located),
                  decontamination=_decontamination(data.get("decontamination") or {}, located),
                  source=source)


def _to_python(node: yaml.Node, where: tuple[str, ...], located: _Located,
               loader: yaml.SafeLoader) -> Any:
    """Plain data from a YAML node, noting each key's line; duplicate keys are errors."""
    located.lines.setdefault(where, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(_to_python(key_node, where, located, loader))
            if key in out:
                raise InputError(f"duplicate key '{key}' (first given on line "
                                 f"{located.lines[(*where, key)]})", file=located.path,
                                 line=key_node.start_mark.line + 1,
                                 field=".".join((*where, key)), reason="policy_error")
            located.lines[(*where, key)] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, (*where, key), located, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, where, located, loader) for item in node.value]
    return loader.construct_object(node)


def _check_keys(data: dict, where: tuple[str, ...], allowed: tuple[str, ...],
                located: _Located, what: str = "key") -> None:
    for key in data:
        if key not in allowed:
            raise located.error((*where, key), f"unknown {what} '{key}'"
                                f"{_did_you_mean(key, allowed)} (expected one of: "
                                f"{', '.join(allowed)})")


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


_KINDS = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
}


def _typed(data: dict, where: tuple[str, ...], kind: str, located: _Located,
           default: Any = None) -> Any:
    """The value at ``where[-1]`` of ``data`` (default if absent or null), type-checked."""
    value = data.get(where[-1])
    if value is None:
        return default
    description, check = _KINDS[kind]
    if not check(value):
        raise located.error(where, f"must be {description}, got {value!r}")
    return float(value) if kind == "number" else value


def _rule(signal_name: str, value: Any, located: _Located) -> Rule:
    where = ("rules", signal_name)
    if signal_name in SECTION_SIGNALS:
        raise located.error(where, f"'{signal_name}' cannot be a rule: it is decided by the "
                            f"'{SECTION_SIGNALS[signal_name]}' section")
    signal = SIGNALS.get(signal_name)
    if signal is None:
        raise located.error(where, f"unknown signal '{signal_name}'"
                            f"{_did_you_mean(signal_name, SIGNALS)} ('distill datasets "
                            "signals' lists them all)")
    if not isinstance(value, dict):
        value = {"equals": value}
    if not value:
        raise located.error(where, "a rule needs a condition: equals, in, min or max")
    _check_keys(value, where, OPS, located, what="condition")
    rule = Rule(signal_name,
                equals=_check_value(signal, value["equals"], (*where, "equals"), located)
                if "equals" in value else None,
                one_of=_check_list(signal, value["in"], (*where, "in"), located)
                if "in" in value else None,
                min=_check_bound(signal, value["min"], (*where, "min"), located)
                if "min" in value else None,
                max=_check_bound(signal, value["max"], (*where, "max"), located)
                if "max" in value else None)
    if rule.min is not None and rule.max is not None and rule.min > rule.max:
        raise located.error(where, f"min {rule.min:g} is above max {rule.max:g}: no trace "
                            "could pass")
    return rule


def _check_value(signal: Signal, value: Any, where: tuple[str, ...],
                 located: _Located) -> Scalar:
    expected = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}[signal.kind]
    if isinstance(value, bool) != (signal.kind == "bool") or not isinstance(value, expected):
        raise located.error(where, f"'{signal.name}' is a {signal.kind} signal; "
                            f"{value!r} can never equal it")
    if signal.values is not None and value not in signal.values:
        raise located.error(where, f"'{signal.name}' takes one of {', '.join(signal.values)}; "
                            f"got {value!r}{_did_you_mean(str(value), signal.values)}")
    return value


def _check_list(signal: Signal, value: Any, where: tuple[str, ...],
                located: _Located) -> tuple[Scalar, ...]:
    if not isinstance(value, list) or not value:
        raise located.error(where, "'in' needs a non-empty list of values")
    return tuple(_check_value(signal, item, where, located) for item in value)


def _check_bound(signal: Signal, value: Any, where: tuple[str, ...], located: _Located) -> float:
    if signal.kind not in ("int", "float"):
        raise located.error(where, f"'{signal.name}' is a {signal.kind} signal; min/max only "
                            "apply to numbers (use equals or in)")
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise located.error(where, f"must be a number, got {value!r}")
    return float(value)


def _splits(data: dict, located: _Located) -> tuple[str, ...] | None:
    if "splits" in data and data["splits"] is None:
        return None
    splits = data.get("splits", ["train"])
    if not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits):
        raise located.error(("splits",), "must be a non-empty list of split names, or null "
                            "for every split")
    return tuple(splits)


def _per_item(data: Any, located: _Located) -> PerItem:
    where = ("per_item",)
    if not isinstance(data, dict):
        raise located.error(where, "'per_item' must be a mapping")
    _check_keys(data, where, ("max_traces", "teacher_preference", "prefer"), located)
    max_traces = data.get("max_traces", PerItem.max_traces)
    if max_traces is not None and (isinstance(max_traces, bool) or not isinstance(max_traces, int)
                                   or max_traces < 1):
        raise located.error((*where, "max_traces"), f"must be a positive integer or null, got "
                            f"{max_traces!r}")
    preference = data.get("teacher_preference") or []
    if not isinstance(preference, list) or not all(isinstance(t, str) for t in preference):
        raise located.error((*where, "teacher_preference"), "must be a list of teacher ids")
    if len(set(preference)) != len(preference):
        raise located.error((*where, "teacher_preference"), "lists a teacher twice")
    prefer = _typed(data, (*where, "prefer"), "str", located, default="first")
    if prefer not in PREFER:
        raise located.error((*where, "prefer"), f"must be one of {', '.join(PREFER)}, got "
                            f"{prefer!r}{_did_you_mean(prefer, PREFER)}")
    return PerItem(max_traces=max_traces, teacher_preference=tuple(preference), prefer=prefer)


def _fraction(data: dict, where: tuple[str, ...], located: _Located, default: float | None,
              allow_null: bool = False) -> float | None:
    """A similarity threshold in (0, 1]; null turns the check off where that is allowed."""
    if allow_null and where[-1] in data and data[where[-1]] is None:
        return None
    value = _typed(data, where, "number", located, default=default)
    if value is not None and not 0.0 < value <= 1.0:
        raise located.error(where, f"must be a similarity in (0, 1], got {value!r}")
    return value


def _dedup(data: Any, located: _Located) -> Dedup:
    where = ("dedup",)
    if not isinstance(data, dict):
        raise located.error(where, "'dedup' must be a mapping")
    _check_keys(data, where, ("exact", "near", "threshold", "scope"), located)
    scope = _typed(data, (*where, "scope"), "str", located, default=Dedup.scope)
    if scope not in SCOPES:
        raise located.error((*where, "scope"), f"must be one of {', '.join(SCOPES)}, got "
                            f"{scope!r}{_did_you_mean(scope, SCOPES)}")
    return Dedup(exact=_typed(data, (*where, "exact"), "bool", located, default=True),
                 near=_typed(data, (*where, "near"), "bool", located, default=True),
                 threshold=_fraction(data, (*where, "threshold"), located, Dedup.threshold),
                 scope=scope)


def _decontamination(data: Any, located: _Located) -> Decontamination:
    where = ("decontamination",)
    if not isinstance(data, dict):
        raise located.error(where, "'decontamination' must be a mapping")
    _check_keys(data, where, ("image", "question", "near_threshold", "template_min_count"),
                located)
    count = _typed(data, (*where, "template_min_count"), "int", located,
                   default=Decontamination.template_min_count)
    if count < 2:
        raise located.error((*where, "template_min_count"), f"must be at least 2, got {count}")
    return Decontamination(
        image=_typed(data, (*where, "image"), "bool", located, default=True),
        question=_typed(data, (*where, "question"), "bool", located, default=True),
        near_threshold=_fraction(data, (*where, "near_threshold"), located,
                                 Decontamination.near_threshold, allow_null=True),
        template_min_count=count,
    )
