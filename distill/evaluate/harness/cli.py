"""`distill eval import` (another harness's finished run -> an EvalResult) and `distill eval
lmms-task` (one of our eval sets -> an lmms-eval task over local files)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from distill.core.evalsets import load_eval_set
from distill.core.formatting import percent, share
from distill.core.progress import plain
from distill.evaluate.harness.importer import ImportOutcome, import_rows
from distill.evaluate.harness.rows import HarnessRow
from distill.evaluate.results import write_result
from distill.schemas import HarnessRun


def _common(function):  # noqa: ANN001, ANN202 - a click decorator stack
    options = [
        click.option("--data", "data_spec", required=True, metavar="EVALSET",
                     help="Our eval set the run's items are matched to (ingest folder, "
                          "DIR:SPLIT or JSONL of Samples)."),
        click.option("--split", help="Split of the ingest folder (default: test)."),
        click.option("--mode", default="cot", show_default=True,
                     type=click.Choice(["cot", "direct"]),
                     help="How the run prompted the model (labels the result)."),
        click.option("--name", help="Model name in the result (default: HARNESS:MODEL)."),
        click.option("--out", default=Path("runs/eval"), show_default=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Folder for the EvalResult JSON file."),
        click.option("--match", "match_by", default="auto", show_default=True,
                     type=click.Choice(["auto", "id", "position"]),
                     help="How rows find items: by the id the row carries (our id or the "
                          "benchmark's, meta.source_id), else by position (auto); by id only;"
                          " or by position only (when the harness numbers items its own way)."
                          " Each match is checked against the gold answer and question."),
        click.option("--allow-unmatched", is_flag=True,
                     help="Import the rows that match and list the others (default: stop "
                          "at the first row that matches no item)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _finish(rows: list[HarnessRow], run: HarnessRun, data_spec: str, split: str | None,
            mode: str, name: str | None, out: Path, match_by: str,
            allow_unmatched: bool) -> None:
    eval_set = load_eval_set(data_spec, split=split)
    outcome = import_rows(rows, run, eval_set, mode=mode,  # type: ignore[arg-type]
                          allow_unmatched=allow_unmatched, name=name,
                          match_by=match_by)  # type: ignore[arg-type]
    path = write_result(outcome.result, out, eval_set.name)
    _report(outcome, path)


def _report(outcome: ImportOutcome, path: Path) -> None:
    console = Console(highlight=False)
    result = outcome.result
    verdicts = [(item.correctness == "correct", item.harness.correct) for item in result.items
                if item.harness is not None and item.harness.correct is not None]
    task = result.generation.get("task")
    line = (f"imported {len(result.items)} items of {plain(task)} "
            f"({plain(result.model.name)}): our judge {percent(result.metrics['accuracy'])}%")
    if verdicts:
        harness_right = sum(1 for _, theirs in verdicts if theirs)
        disagree = sum(1 for ours, theirs in verdicts if ours != theirs)
        line += (f", the harness {share(harness_right, len(verdicts))}; they disagree "
                 f"on {disagree} (distill compare lists them)")
    else:
        line += "; the harness kept no per-item score"
    console.print(line)
    for problem in outcome.problems:
        console.print(f"[yellow]left out {plain(problem)}")
    if outcome.missing:
        console.print(f"[yellow]{len(outcome.missing)} item(s) of the eval set have no row "
                      f"(first: {plain(', '.join(outcome.missing[:5]))})")
    console.print(f"wrote {plain(path)}")


@click.group("import")
def import_group() -> None:
    """Read a finished run of another harness into an EvalResult: every item re-judged by
    our judge, the harness's own score kept beside it (compare shows where they disagree).

    \b
    distill eval import lmms-eval lmms_out/ --task mmstar --data evalsets/mmstar
    distill eval import vlmevalkit outputs/M/M_MMStar.xlsx --data evalsets/mmstar
    """


@import_group.command("lmms-eval")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--task", help="The task to import when the run holds several.")
@click.option("--metric", help="The per-item metric kept as the harness's score (default: "
                               "the task's first listed metric present in the rows).")
@_common
def import_lmms_command(path: Path, task: str | None, metric: str | None, data_spec: str,
                        split: str | None, mode: str, name: str | None, out: Path,
                        match_by: str, allow_unmatched: bool) -> None:
    """Import an lmms-eval --log_samples run: PATH is its --output_path folder, the
    {model} folder inside it, or one {date}_samples_{task}.jsonl file."""
    from distill.evaluate.harness.lmms_eval import read_lmms_run

    run = read_lmms_run(path, task=task, metric=metric)
    _finish(run.rows, run.run, data_spec, split, mode, name, out, match_by, allow_unmatched)


@import_group.command("vlmevalkit")
@click.argument("prediction", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--scores", type=click.Path(dir_okay=False, path_type=Path),
              help="The judged file (default: the one {stem}_*_result / {stem}_auxmatch "
                   "file beside PREDICTION, if any).")
@click.option("--task", help="Dataset name (default: from {model}_{dataset} in the file "
                             "name).")
@_common
def import_vlmevalkit_command(prediction: Path, scores: Path | None, task: str | None,
                              data_spec: str, split: str | None, mode: str, name: str | None,
                              out: Path, match_by: str, allow_unmatched: bool) -> None:
    """Import a VLMEvalKit prediction file ({model}_{dataset}.xlsx, .tsv or .json)."""
    from distill.evaluate.harness.vlmevalkit import read_vlmevalkit

    run = read_vlmevalkit(prediction, scores=scores, dataset=task)
    _finish(run.rows, run.run, data_spec, split, mode, name, out, match_by, allow_unmatched)


@click.command("lmms-task")
@click.option("--data", "data_spec", required=True, metavar="EVALSET",
              help="The eval set (ingest folder, DIR:SPLIT or JSONL of Samples).")
@click.option("--split", help="Split of the ingest folder (default: test).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the task (then: lmms-eval --include_path OUT).")
@click.option("--mode", default="cot", show_default=True, type=click.Choice(["cot", "direct"]),
              help="The prompt the task asks with (prompts/cot.yaml or prompts/direct.yaml).")
@click.option("--name", help="Task name (default: distill_<eval set>_<mode>).")
@click.option("--max-new-tokens", default=512, show_default=True)
def lmms_task_command(data_spec: str, split: str | None, out: Path, mode: str,
                      name: str | None, max_new_tokens: int) -> None:
    """Write an eval set as an lmms-eval task over a local JSONL (no Hub), so any lmms-eval
    model is scored on our items.

    \b
    distill eval lmms-task --data work/digits --out tasks/
    lmms-eval --include_path tasks --tasks distill_digits_test_cot --model siqvl \\
      --model_args pretrained=runs/stage2 --log_samples --output_path lmms_out
    """
    from distill.evaluate.harness.lmms_task import write_lmms_task

    eval_set = load_eval_set(data_spec, split=split)
    path = write_lmms_task(eval_set, out, mode=mode, name=name,  # type: ignore[arg-type]
                           max_new_tokens=max_new_tokens)
    click.echo(f"wrote task {path.stem} ({len(eval_set.samples)} items): {path}")
    click.echo(f"run it: lmms-eval --include_path {path.parent} --tasks {path.stem} "
               "--model MODEL --model_args ... --log_samples --output_path OUT")
