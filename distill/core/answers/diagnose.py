"""How a teacher's (or a model's) outputs are being read: verdicts grouped by the judge's
reason, with examples, so a misread format shows up before a dataset is published.

Input is any stream of (item id, sample, raw text, verdict); ``distill answers`` feeds it
a generate folder (traces and the outputs generate rejected as unparseable) or an eval
result.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from distill.core.answers.judge import REASONS, Verdict
from distill.core.answers.model_tier import MODEL_MARKER
from distill.core.formatting import share
from distill.schemas import Sample

EXAMPLE_TAIL_CHARS = 240


@dataclass(frozen=True)
class Example:
    item_id: str
    gold: str
    answer: str | None
    tail: str  # the end of the raw output, where the answer should be


@dataclass
class AnswerReport:
    total: int = 0
    verdicts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)  # (correctness, reason) -> count
    markers: Counter = field(default_factory=Counter)  # how readable answers were marked
    # (correctness, reason) -> count of the verdicts the model tier gave (counted apart)
    model_verdicts: Counter = field(default_factory=Counter)
    examples: dict[tuple[str, str], list[Example]] = field(
        default_factory=lambda: defaultdict(list))


def group_by_reason(rows: Iterable[tuple[str, Sample, str, Verdict]],
                    examples: int = 3) -> AnswerReport:
    """Count verdicts by (correctness, reason) and keep the first examples of each
    unparseable or wrong group."""
    report = AnswerReport()
    for item_id, sample, raw, verdict in rows:
        report.total += 1
        report.verdicts[verdict.correctness] += 1
        key = (verdict.correctness, verdict.reason)
        report.reasons[key] += 1
        if verdict.marker is not None and verdict.correctness != "unparseable":
            report.markers[verdict.marker] += 1
        if verdict.marker == MODEL_MARKER:
            report.model_verdicts[key] += 1
        if verdict.correctness != "correct" and len(report.examples[key]) < examples:
            tail = " ".join(raw[-EXAMPLE_TAIL_CHARS:].split())
            report.examples[key].append(Example(item_id, sample.answer, verdict.answer, tail))
    return report


def format_report(report: AnswerReport, title: str) -> str:
    """Plain text: verdict totals, how answers were marked, then every unparseable and
    wrong group with its reason and examples (largest first)."""
    total = max(report.total, 1)
    lines = [f"{title}: {report.total} outputs"]
    lines.append("  " + ", ".join(f"{name} {report.verdicts[name]} "
                                  f"({share(report.verdicts[name], total)})"
                                  for name in ("correct", "wrong", "unparseable")))
    if report.markers:
        lines.append("answers read from: " + ", ".join(
            f"{marker} {count}" for marker, count in report.markers.most_common()))
    groups = [(key, count) for key, count in report.reasons.most_common() if key[0] != "correct"]
    if not groups:
        lines.append("no wrong or unparseable outputs")
    for (correctness, reason), count in groups:
        lines.append("")
        lines.append(f"{correctness} / {reason}: {count} ({share(count, total)}) -- "
                     f"{REASONS.get(reason, reason)}")
        for example in report.examples[(correctness, reason)]:
            lines.append(f"  - {example.item_id}: gold {example.gold!r}, read "
                         f"{example.answer!r}")
            lines.append(f"    ...{example.tail}")
    return "\n".join(lines)
