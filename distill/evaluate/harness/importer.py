"""A harness's rows, matched to our eval set, judged by our judge: an EvalResult.

Every imported item is judged by ``distill.evaluate.runner.score`` (our judge, on the raw
output the harness kept) and keeps the harness's own verdict in ``EvalItem.harness``. An
output the harness shows was cut at the token limit is unparseable, as in ``distill eval``;
one the harness keeps no token count for is judged on its text alone. The
result's model is ``kind: harness`` with the run's files and their hashes; when the harness
ran one of our SiQ-VL checkpoints (lmms-eval ``--model siqvl --model_args
pretrained=PATH``) and it is still on disk, the checkpoint and its run are recorded too, so
lineage follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from distill.core.errors import DistillError, InputError
from distill.core.evalsets import EvalSet, require_gold
from distill.core.model_folders import SIQVL_MODEL_TYPE, read_model_type
from distill.core.predictors import Mode, model_fingerprint
from distill.evaluate.cache import CachedGeneration, input_hash
from distill.evaluate.harness.matching import MatchBy, RowProblem, match_rows
from distill.evaluate.harness.rows import HarnessRow
from distill.evaluate.metrics import summarize
from distill.evaluate.runner import score
from distill.schemas import (
    EvalItem,
    EvalResult,
    HarnessRun,
    HarnessScore,
    ModelRef,
    Sample,
    content_hash,
)


@dataclass
class ImportOutcome:
    result: EvalResult
    problems: list[RowProblem]  # rows left out (only with allow_unmatched)
    missing: list[str]  # eval-set items the run has no row for (e.g. lmms-eval --limit)


def import_rows(rows: list[HarnessRow], run: HarnessRun, eval_set: EvalSet, *, mode: Mode,
                allow_unmatched: bool = False, name: str | None = None,
                match_by: MatchBy = "auto") -> ImportOutcome:
    """Match, judge and summarize; any unmatched or ambiguous row is an error naming its
    file and row unless ``allow_unmatched`` (then it is left out and listed)."""
    require_gold(eval_set)
    matching = match_rows(rows, eval_set, match_by)
    if matching.problems and not allow_unmatched:
        first = matching.problems[0]
        more = len(matching.problems) - 1
        raise InputError(f"{first.reason}" + (f" (and {more} more unmatched or ambiguous "
                                                f"row(s); --allow-unmatched imports the rest "
                                                f"and lists them)" if more else ""),
                         file=first.row.file, line=first.row.line, reason="unmatched_row")
    if not matching.pairs:
        raise DistillError(f"no row of {run.task} matches an item of {eval_set.spec}")
    row_of = {sample.id: row for row, sample in matching.pairs}
    items = [_item(sample, row_of[sample.id], run) for sample in eval_set.samples
             if sample.id in row_of]
    metrics, per_category = summarize(items)
    model = _model_ref(run, name)
    result = EvalResult(
        result_id=content_hash({"harness_files": sorted(run.files.values()),
                                "eval_set": eval_set.hash, "mode": mode}),
        created_at=datetime.now(UTC), model=model, eval_set=eval_set.spec,
        eval_set_hash=eval_set.hash, mode=mode,
        generation={"harness": run.harness, "task": run.task, "model_args": run.model_args},
        metrics=metrics, per_category=per_category, items=items)
    missing = [sample.id for sample in eval_set.samples if sample.id not in row_of]
    return ImportOutcome(result=result, problems=matching.problems, missing=missing)


def _item(sample: Sample, row: HarnessRow, run: HarnessRun) -> EvalItem:
    output = CachedGeneration(input_hash=input_hash(sample), sample_id=sample.id,
                              text=row.raw_output, output_tokens=row.output_tokens or 0,
                              latency_s=0.0, finish_reason=row.finish_reason or "unknown")
    item = score(sample, output)
    return item.model_copy(update={"harness": HarnessScore(
        harness=run.harness, metric=row.metric, score=row.score, extracted=row.extracted,
        source=row.where)})


def _model_ref(run: HarnessRun, name: str | None) -> ModelRef:
    checkpoint, manifest = _student_checkpoint(run.model_args)
    return ModelRef(
        kind="harness", name=name or f"{run.harness}:{run.model or 'model'}",
        path=str(checkpoint) if checkpoint else None,
        run_manifest=str(manifest) if manifest else None,
        fingerprint=model_fingerprint(checkpoint) if checkpoint else None, harness_run=run)


def _student_checkpoint(model_args: str | None) -> tuple[Path | None, Path | None]:
    """(checkpoint, run manifest) when ``pretrained=`` names a SiQ-VL run or checkpoint that
    is still on disk; (None, None) for anything else (a Hub id, another model)."""
    pretrained = next((part.partition("=")[2] for part in (model_args or "").split(",")
                       if part.strip().startswith("pretrained=")), None)
    if not pretrained:
        return None, None
    path = Path(pretrained).expanduser()
    if (path / "manifest.json").is_file() and (path / "final").is_dir():
        path = path / "final"
    try:
        if not path.is_dir() or read_model_type(path) != SIQVL_MODEL_TYPE:
            return None, None
    except DistillError:
        return None, None
    manifest = path.parent / "manifest.json"
    return path.resolve(), manifest.resolve() if manifest.is_file() else None
