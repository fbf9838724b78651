"""Pairing a harness's rows with our eval set's items, by one stated rule (never a guess).

The rule, in order:

1. **Key.** When the row carries the item's own id (our sample id; the benchmark's
   ``index``/``pid``/``question_id``), it must equal exactly one item's ``id`` or
   ``meta.source_id`` (what our converters record). Otherwise the row's **position**
   (lmms-eval's ``doc_id``, which restarts per task; a spreadsheet's row order) names the
   item at that position of the eval set. ``by="position"`` uses the position even when
   the row has an id (a harness whose ids are its own numbering, e.g. VLMEvalKit's
   ``index`` of a dataset our converter read from another copy); ``by="id"`` refuses rows
   without one.
2. **Check.** When the row kept a gold answer, it must agree with the item's (same text,
   ignoring case and spacing; a choice's letter or its text; the same number). When it kept
   the question (or the prompt holding it), one must contain the other, ignoring case and
   spacing. A row that fails a check matches nothing.
3. **Once.** Two rows that land on the same item are both ambiguous.

Every row that is unmatched or ambiguous is reported with its reason; none is paired.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from distill.core.evalsets import EvalSet
from distill.evaluate.harness.rows import HarnessRow
from distill.schemas import Sample
from distill.schemas.sample import CHOICE_LETTERS

_SPACE = re.compile(r"\s+")
_LETTER = re.compile(r"^\(?([a-z])\)?[.:]?$")


@dataclass(frozen=True)
class RowProblem:
    row: HarnessRow
    reason: str

    def __str__(self) -> str:
        return f"{self.row.where}: {self.reason}"


@dataclass
class Matching:
    pairs: list[tuple[HarnessRow, Sample]]
    problems: list[RowProblem]


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def gold_agrees(target: str | None, sample: Sample) -> bool:
    if target is None:
        return True
    harness, gold = normalize(target), normalize(sample.answer)
    if harness == gold:
        return True
    if sample.answer_type == "choice" and sample.choices:
        letter = _LETTER.match(harness)
        if letter is not None:
            return letter.group(1) == gold
        index = CHOICE_LETTERS.index(sample.answer)
        return harness == normalize(sample.choices[index])
    if sample.answer_type == "number":
        try:
            a, b = float(harness.replace(",", "")), float(gold)
        except ValueError:
            return False
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    return False


def question_agrees(text: str | None, sample: Sample) -> bool:
    if text is None:
        return True
    harness, ours = normalize(text), normalize(sample.question)
    return ours in harness or harness in ours


def _keys(sample: Sample) -> set[str]:
    keys = {sample.id}
    source_id = sample.meta.get("source_id")
    if isinstance(source_id, str | int) and not isinstance(source_id, bool):
        keys.add(str(source_id))
    return keys


MatchBy = Literal["auto", "id", "position"]


def match_rows(rows: list[HarnessRow], eval_set: EvalSet, by: MatchBy = "auto") -> Matching:
    """Pair rows with items by the module's rule; every other row becomes a RowProblem."""
    samples = eval_set.samples
    by_key: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        for key in _keys(sample):
            by_key[key].append(sample)
    candidates: list[tuple[HarnessRow, Sample]] = []
    problems: list[RowProblem] = []
    for row in rows:
        found, reason = _candidate(row, samples, by_key, by)
        if found is None:
            problems.append(RowProblem(row, reason))
        elif not gold_agrees(row.target, found):
            problems.append(RowProblem(row, f"gold answer {row.target!r} differs from item "
                                            f"{found.id!r} ({found.answer!r})"))
        elif not question_agrees(row.question, found):
            problems.append(RowProblem(row, f"question differs from item {found.id!r} "
                                            f"({_short(found.question)!r})"))
        else:
            candidates.append((row, found))
    rows_of: dict[str, list[HarnessRow]] = defaultdict(list)
    for row, sample in candidates:
        rows_of[sample.id].append(row)
    pairs = []
    for row, sample in candidates:
        others = rows_of[sample.id]
        if len(others) > 1:
            places = ", ".join(str(other.line) for other in others)
            problems.append(RowProblem(row, f"ambiguous: rows at lines {places} all match "
                                            f"item {sample.id!r}"))
        else:
            pairs.append((row, sample))
    problems.sort(key=lambda problem: (str(problem.row.file), problem.row.line))
    return Matching(pairs=pairs, problems=problems)


def _candidate(row: HarnessRow, samples: tuple[Sample, ...], by_key: dict[str, list[Sample]],
               by: MatchBy) -> tuple[Sample | None, str]:
    if by == "id" and row.key is None:
        return None, "the row has no id to match by (--match id)"
    if row.key is not None and by != "position":
        found = by_key.get(row.key, [])
        if len(found) == 1:
            return found[0], ""
        if not found:
            return None, f"no item has id or source id {row.key!r}"
        return None, (f"ambiguous: {len(found)} items have id or source id {row.key!r} "
                      f"({', '.join(s.id for s in found[:3])})")
    if row.position is not None:
        if 0 <= row.position < len(samples):
            return samples[row.position], ""
        return None, (f"position {row.position} is past the eval set's {len(samples)} items "
                      "(and the row has no id to match by)")
    return None, "the row has neither an id nor a position to match by"


def _short(text: str, limit: int = 60) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
