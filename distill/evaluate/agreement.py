"""Where another harness and our judge disagree on the same outputs.

An imported result (``distill eval import``) keeps, per item, our judge's verdict
(``correctness``) and the harness's own score (``EvalItem.harness``). The harness counts an
item right at full marks (score >= 1). Each disagreement gets a reason a person can act on:
one of the two read no answer, they read different answers, or they read the same answer
and judged it against the gold differently (normalisation, units, synonyms), or the
harness gave partial credit.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.evaluate.compare import LoadedResult
from distill.schemas import EvalItem


@dataclass(frozen=True)
class Disagreement:
    item: EvalItem
    reason: str

    @property
    def ours_right(self) -> bool:
        return self.item.correctness == "correct"


@dataclass
class HarnessAgreement:
    loaded: LoadedResult
    harness: str
    metric: str | None
    scored: int  # items with a per-item harness score
    unscored: int  # imported items whose harness kept no per-item score
    agree: int
    disagreements: list[Disagreement]


def _same_answer(a: str | None, b: str | None) -> bool:
    def norm(text: str) -> str:
        return " ".join(text.split()).strip().rstrip(".").casefold()

    return a is not None and b is not None and norm(a) == norm(b)


def disagreement_reason(item: EvalItem) -> str:
    harness = item.harness
    assert harness is not None and harness.score is not None
    theirs = f"the harness scored {harness.score:g}" + (f" ({harness.metric})"
                                                         if harness.metric else "")
    if harness.score > 0 and harness.score < 1:
        return f"partial credit: {theirs}; our judge says {item.correctness}"
    if item.correctness == "unparseable":
        read = f" reading {harness.extracted!r}" if harness.extracted else ""
        return f"our judge found no final answer in the output; {theirs}{read}"
    if harness.extracted is None:
        return (f"our judge read {item.extracted!r} as {item.correctness} against gold "
                f"{item.gold!r}; {theirs} (it kept no extracted answer)")
    if not _same_answer(item.extracted, harness.extracted):
        return (f"different answers read: ours {item.extracted!r} ({item.correctness}), the "
                f"harness's {harness.extracted!r} (score {harness.score:g}); gold "
                f"{item.gold!r}")
    return (f"same answer {item.extracted!r} judged differently against gold "
            f"{item.gold!r}: ours {item.correctness}, {theirs}")


def harness_agreement(loaded: LoadedResult) -> HarnessAgreement | None:
    """None for a result that was not imported from a harness."""
    imported = [item for item in loaded.result.items if item.harness is not None]
    if not imported:
        return None
    scored = [item for item in imported if item.harness.correct is not None]  # type: ignore[union-attr]
    disagreements = [Disagreement(item, disagreement_reason(item)) for item in scored
                     if item.harness.correct != (item.correctness == "correct")]  # type: ignore[union-attr]
    metrics = {item.harness.metric for item in imported}  # type: ignore[union-attr]
    return HarnessAgreement(
        loaded=loaded, harness=imported[0].harness.harness,  # type: ignore[union-attr]
        metric=", ".join(sorted(m for m in metrics if m)) or None, scored=len(scored),
        unscored=len(imported) - len(scored), agree=len(scored) - len(disagreements),
        disagreements=disagreements)
