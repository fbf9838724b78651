"""Several EvalResults side by side: accuracy per category, deltas against a baseline with
paired tests, and the items that flipped between two runs.

Items are paired by sample id (and gold answer: the same id with another gold answer is a
different item and is left out of the pairing, counted in ``mismatched``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from distill.core.errors import DistillError, InputError
from distill.core.shards import read_json_model
from distill.evaluate.metrics import PairedComparison, compare_paired, metric_problems
from distill.schemas import EvalItem, EvalResult

Direction = Literal["right_to_wrong", "wrong_to_right"]


@dataclass(frozen=True)
class LoadedResult:
    path: Path
    result: EvalResult
    label: str

    @property
    def eval_set_name(self) -> str:
        return eval_set_name(self.result.eval_set)


@dataclass(frozen=True)
class Flip:
    """An item one run got right and the other did not (unparseable counts as not right)."""

    direction: Direction
    before: EvalItem  # the baseline's item
    after: EvalItem

    @property
    def sample_id(self) -> str:
        return self.before.sample_id


@dataclass
class PairReport:
    """Run ``b`` against the baseline ``a`` on their shared items."""

    a: LoadedResult
    b: LoadedResult
    overall: PairedComparison
    per_category: dict[str, PairedComparison]
    flips: list[Flip]
    only_in_a: int
    only_in_b: int
    mismatched: int
    same_eval_set: bool
    # Paired items whose raw outputs are the same text (e.g. one checkpoint run through
    # distill eval and through another harness, greedy: all of them should be).
    same_output: int = 0

    def flips_of(self, direction: Direction) -> list[Flip]:
        return [flip for flip in self.flips if flip.direction == direction]


@dataclass
class Comparison:
    results: list[LoadedResult]
    categories: list[str]
    pairs: list[PairReport] = field(default_factory=list)
    # Models not trained here (evaluated through their engines) on the same eval set: rows
    # beside the students and reference lines in the plot, not paired against the baseline
    teachers: list[LoadedResult] = field(default_factory=list)


def load_results(paths: list[Path], labels: Sequence[str] | None = None) -> list[LoadedResult]:
    """Read result files (clear errors) and give each a short, unique label: the caller's
    (a plan's recipe name and seed), or one that names the model by what it is."""
    if not paths:
        raise DistillError("compare needs at least one result file")
    if labels is not None and (len(labels) != len(paths) or len(set(labels)) != len(labels)):
        raise DistillError(f"one distinct label a result is needed: {list(labels)}")
    loaded = [(path, read_result(path)) for path in paths]
    if labels is None:
        labels = default_labels(loaded)
    return [LoadedResult(path=path, result=result, label=label)
            for (path, result), label in zip(loaded, labels, strict=True)]


def default_labels(loaded: list[tuple[Path, EvalResult]]) -> list[str]:
    several_sets = len({result.eval_set_hash for _, result in loaded}) > 1
    labels: list[str] = []
    for _, result in loaded:
        label = f"{model_label(result)} ({result.mode})"
        if several_sets:
            label += f" on {eval_set_name(result.eval_set)}"
        labels.append(label)
    for index, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[index] = f"{label} [{loaded[index][0].stem}]"
    return labels


def model_label(result: EvalResult) -> str:
    """What the model is: ``cot seed 0`` for a student trained into ``.../cot/seed-0/final``
    (a run of ``--seeds``), the teacher's id for a teacher, the model's name otherwise."""
    model = result.model
    parts = Path(model.path or "").parts
    for index, part in enumerate(parts):
        if part.startswith("seed-") and part[5:].isdigit() and index > 0:
            checkpoint = parts[index + 1] if index + 1 < len(parts) else "final"
            return (f"{parts[index - 1]} seed {part[5:]}"
                    + ("" if checkpoint == "final" else f" {checkpoint}"))
    return model.name


def read_result(path: Path) -> EvalResult:
    """A result file whose stored metrics agree with its items (else one line naming the
    file and the first metric that does not)."""
    result = read_json_model(path, EvalResult)
    problems = metric_problems(result)
    if problems:
        field, message = problems[0]
        more = f"; {len(problems) - 1} more" if len(problems) > 1 else ""
        raise InputError(f"{message} (the file was edited or damaged{more})", file=path,
                         field=field, reason="bad_metrics")
    return result


def eval_set_name(spec: str) -> str:
    """'digits:test' for an ingest folder spec, the file stem for a JSONL file."""
    path = Path(spec)
    if ":" in path.name:
        folder, _, split = path.name.rpartition(":")
        return f"{folder}:{split}"
    return path.stem


def compare_results(results: list[LoadedResult], *, baseline: int = 0,
                    teachers: Sequence[LoadedResult] = ()) -> Comparison:
    """Every result against the baseline (default: the first one named); teachers beside
    them, unpaired."""
    if not 0 <= baseline < len(results):
        raise DistillError(f"--baseline {baseline} is out of range: {len(results)} result(s)")
    everything = [*results, *teachers]
    categories = sorted({category for loaded in everything
                         for category in loaded.result.per_category}
                        | {item.category for loaded in everything
                           for item in loaded.result.items})
    comparison = Comparison(results=results, categories=categories, teachers=list(teachers))
    base = results[baseline]
    for index, other in enumerate(results):
        if index != baseline:
            comparison.pairs.append(pair_report(base, other))
    return comparison


def pair_report(a: LoadedResult, b: LoadedResult) -> PairReport:
    items_a = {item.sample_id: item for item in a.result.items}
    items_b = {item.sample_id: item for item in b.result.items}
    shared = [sid for sid in items_a if sid in items_b]
    mismatched = [sid for sid in shared if items_a[sid].gold != items_b[sid].gold]
    paired = [sid for sid in shared if items_a[sid].gold == items_b[sid].gold]
    if not paired:
        raise InputError(f"no items in common between {a.path} and {b.path} (different eval "
                         "sets?)", file=b.path, reason="config_error")
    right_a = {sid: items_a[sid].correctness == "correct" for sid in paired}
    right_b = {sid: items_b[sid].correctness == "correct" for sid in paired}
    per_category: dict[str, PairedComparison] = {}
    for category in sorted({items_a[sid].category for sid in paired}):
        ids = [sid for sid in paired if items_a[sid].category == category]
        per_category[category] = compare_paired([right_a[s] for s in ids],
                                                [right_b[s] for s in ids])
    flips = [
        Flip("right_to_wrong" if right_a[sid] else "wrong_to_right", items_a[sid], items_b[sid])
        for sid in paired if right_a[sid] != right_b[sid]
    ]
    return PairReport(
        a=a, b=b, overall=compare_paired([right_a[s] for s in paired],
                                         [right_b[s] for s in paired]),
        per_category=per_category, flips=flips,
        only_in_a=len(items_a) - len(shared), only_in_b=len(items_b) - len(shared),
        mismatched=len(mismatched), same_eval_set=a.result.eval_set_hash == b.result.eval_set_hash,
        same_output=sum(items_a[sid].raw_output == items_b[sid].raw_output for sid in paired),
    )
