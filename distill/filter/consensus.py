"""Agreement and labels of one item: every answer its teachers and samples gave, grouped by
the answer judge, the majority, and the item's label.

Answers are grouped by ``distill.core.answers.same_answer`` (the judge that also compares
answers with gold), and, for free-text answers no rule can compare, by a judge model's
``same_answer`` judgements when the run has them. The item's label is its gold answer when
it has one (``label_source: gold``); otherwise it is derived:

* ``consensus``: one group of equal answers is strictly larger than every other;
* ``judge``: the largest groups tie, and the judge's rubric scores pick one of them (the
  tied group whose traces have the strictly highest mean score);
* ``none``: no answer of the asked type at all, or a tie nothing breaks. Such items are
  counted and listed in the report, never silently dropped.

Whether an item's label is trusted enough is the policy's call (``majority_fraction``,
``majority_teachers``, ``judge_score``...): the signals here are computed once, cached,
and never depend on a policy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from distill.core.answers import AnswerSpec, same_answer
from distill.schemas import Sample
from distill.schemas.base import Scalar

Signals = dict[str, Scalar]
AGREEMENT = "agreement"
AGREEMENT_VERSION = "2"
LABEL_SOURCES = ("gold", "consensus", "judge", "none")
# Two canonical answers the rules call different may still be the same to a judge model.
JudgedSame = Callable[[str, str], bool]


@dataclass(frozen=True)
class ItemAnswer:
    """One trace of an item, as the agreement scorer needs it."""

    teacher_id: str
    answer: str  # canonical form; '' = no answer of the asked type
    correct: bool
    judge_score: float | None = None


@dataclass(frozen=True)
class Groups:
    """The item's answers grouped: ``of[i]`` is trace i's group (-1: no answer),
    ``answers[g]`` group g's answer, groups ordered by size, then by answer text."""

    of: list[int]
    answers: list[str]
    sizes: list[int]


def group_answers(answers: Sequence[str], sample: Sample,
                  judged_same: JudgedSame | None = None) -> Groups:
    """Group canonical answers that the answer judge (or the judge model) calls the same.

    The same canonical form is always the same answer; distinct forms are compared with
    ``same_answer`` and ``judged_same``, most frequent first (ties by text), so the
    grouping does not depend on the order traces were written in.
    """
    spec = AnswerSpec.of(sample)  # read once for every comparison of this item
    counts = Counter(answer for answer in answers if answer)
    distinct = sorted(counts, key=lambda answer: (-counts[answer], answer))
    heads: list[str] = []
    group_of: dict[str, int] = {}
    for answer in distinct:
        for index, head in enumerate(heads):
            if same_answer(answer, head, spec) or (judged_same and judged_same(answer, head)):
                group_of[answer] = index
                break
        else:
            group_of[answer] = len(heads)
            heads.append(answer)
    sizes = [0] * len(heads)
    for answer, count in counts.items():
        sizes[group_of[answer]] += count
    order = sorted(range(len(heads)), key=lambda g: (-sizes[g], heads[g]))
    rank = {g: position for position, g in enumerate(order)}
    return Groups(of=[rank[group_of[a]] if a else -1 for a in answers],
                  answers=[heads[g] for g in order], sizes=[sizes[g] for g in order])


def derive_label(groups: Groups, traces: Sequence[ItemAnswer]) -> tuple[str, str, int]:
    """(label, label_source, its group) of an item without gold; ('', 'none', -1) if none."""
    if not groups.sizes:
        return "", "none", -1
    top = [g for g, size in enumerate(groups.sizes) if size == groups.sizes[0]]
    if len(top) == 1:
        return groups.answers[0], "consensus", 0
    means = {}
    for g in top:
        scores = [t.judge_score for t, of in zip(traces, groups.of, strict=True)
                  if of == g and t.judge_score is not None]
        if not scores:
            return "", "none", -1  # a tie the judge did not see whole
        means[g] = sum(scores) / len(scores)
    best = max(means.values())
    winners = [g for g, mean in means.items() if mean == best]
    if len(winners) != 1:
        return "", "none", -1
    return groups.answers[winners[0]], "judge", winners[0]


def score_item(traces: Sequence[ItemAnswer], sample: Sample,
               judged_same: JudgedSame | None = None) -> list[Signals]:
    """Agreement and label signals for every trace of one item, in the order given."""
    groups = group_answers([t.answer for t in traces], sample, judged_same)
    n = len(traces)
    majority = groups.answers[0] if groups.answers else ""
    majority_count = groups.sizes[0] if groups.sizes else 0
    by_teacher: dict[str, list[int]] = {}
    for index, trace in enumerate(traces):
        by_teacher.setdefault(trace.teacher_id, []).append(index)
    teacher_groups = {teacher: _majority_group([groups.of[i] for i in indices])
                      for teacher, indices in by_teacher.items()}
    majority_teachers = sum(1 for indices in by_teacher.values()
                            if any(groups.of[i] == 0 for i in indices))
    if sample.answer is not None:
        label, source, label_group = sample.answer, "gold", None
    else:
        label, source, label_group = derive_label(groups, traces)
    item_pass = sum(t.correct for t in traces) / n
    out = []
    for index, trace in enumerate(traces):
        own = groups.of[index]
        indices = by_teacher[trace.teacher_id]
        agreeing = sum(1 for g in teacher_groups.values() if own >= 0 and g == own)
        agrees = trace.correct if label_group is None else own >= 0 and own == label_group
        out.append({
            "majority_answer": majority,
            "majority_fraction": round(majority_count / n, 6),
            "majority_count": majority_count,
            "majority_teachers": majority_teachers,
            "agrees_with_majority": own == 0,
            "agreement_teachers": round(agreeing / len(by_teacher), 6),
            "teacher_majority_share": round(
                sum(1 for i in indices if groups.of[i] == 0) / len(indices), 6),
            "n_teachers": len(by_teacher),
            "pass_rate_k": round(sum(traces[i].correct for i in indices) / len(indices), 6),
            "n_samples_k": len(indices),
            "pass_rate_item": round(item_pass, 6),
            "label": label,
            "label_source": source,
            "agrees_with_label": bool(agrees),
        })
    return out


def _majority_group(groups: Sequence[int]) -> int:
    """The most common group among one teacher's samples (-1 if none answered); ties go
    to the group that is larger over the whole item (the lower group number)."""
    counts = Counter(g for g in groups if g >= 0)
    if not counts:
        return -1
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]
