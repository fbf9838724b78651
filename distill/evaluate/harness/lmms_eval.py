"""Reading a finished lmms-eval ``--log_samples`` run.

Layout (the writer is ``EvaluationTracker.save_results_samples`` in
lmms_eval/loggers/evaluation_tracker.py; read at EvolvingLMMs-Lab/lmms-eval v0.7.2,
cb45ac4d, the same code as the 0.7.3 wheel, and at v0.3.5, f7a6d6bf)::

    {output_path}/{model_name_sanitized}/{date}_results.json
    {output_path}/{model_name_sanitized}/{date}_samples_{task}.jsonl   (one per task)

The task is known only from the file name; ``doc_id`` restarts at 0 in each task's file.
One JSON object per line, the row logged in ``lmms_eval/evaluator.py`` plus the task's
per-document metrics (``process_results``):

* 0.7.x (from v0.4 on): ``doc_id, target, resps, filtered_resps, token_counts, doc_hash,
  input`` and the metrics; ``doc`` and ``arguments`` are dropped. A generate-until task's
  single response is flattened: ``filtered_resps`` is a string. ``resps`` is dropped when
  it equals ``filtered_resps``; when it stays, it is the text before a filter or before
  ``--reasoning_tags`` were stripped (the raw output we judge).
* 0.3.x: ``doc_id, doc (without image fields), target, arguments, resps (list of lists),
  filtered_resps (list), doc_hash, prompt_hash, target_hash, input`` and the metrics.

The results file's ``lmms_eval_version`` is not recorded: it is ``branch@sha`` of the git
repository lmms-eval was started in (``get_lmms_eval_version_string``), not lmms-eval's.

A metric is a number, or a dict: MMStar writes ``{"<category>": {...}, "average":
{"question_id", "l2_category", "score"}}``; the item's id then comes from ``question_id``
(or ``sample_id``/``index``/``pid``/``id``) in that dict. The verdict inside a dict (MMStar's
``score``, MathVista's ``true_false``, MMMU recomputed) is read by verdicts.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.errors import InputError
from distill.core.shards import iter_lines
from distill.core.text import parse_json
from distill.evaluate.harness.rows import HarnessRow, as_score, as_text, read_json
from distill.evaluate.harness.verdicts import lmms_dict_verdict
from distill.schemas import HarnessRun, file_sha256

SAMPLES_NAME = re.compile(r"^(?P<date>.+?)_samples_(?P<task>.+)\.jsonl$")
# Keys of a logged sample that are not metrics (0.3.x and 0.7.x together).
_NOT_METRICS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps",
                "token_counts", "doc_hash", "prompt_hash", "target_hash", "input",
                "input_media"}
# Where an item's own id may sit, in a 0.3.x doc or in a metric's dict, in this order.
_ID_FIELDS = ("sample_id", "question_id", "index", "pid", "id")
_QUESTION_FIELDS = ("question", "query", "question_text")
_EXTRACTED_FIELDS = ("parsed_pred", "pred", "extracted", "prediction")


@dataclass(frozen=True)
class SamplesFile:
    path: Path
    date: str
    task: str

    @property
    def results_path(self) -> Path:
        return self.path.with_name(f"{self.date}_results.json")


@dataclass
class LmmsRun:
    run: HarnessRun
    rows: list[HarnessRow]
    samples_file: Path


def find_samples_files(path: Path) -> list[SamplesFile]:
    """The samples files of a run: PATH itself, or those in PATH (the --output_path folder
    or its {model} subfolder)."""
    if not path.exists():
        raise InputError("lmms-eval output not found", file=path, reason="missing_file")
    files = [path] if path.is_file() else sorted(  # a folder with such a name is no file
        file for file in [*path.glob("*_samples_*.jsonl"), *path.glob("*/*_samples_*.jsonl")]
        if file.is_file())
    found = []
    for file in files:
        match = SAMPLES_NAME.match(file.name)
        if match is None:
            raise InputError("not an lmms-eval samples file: its name is not "
                             "{date}_samples_{task}.jsonl, so its task is unknown", file=file,
                             reason="config_error")
        found.append(SamplesFile(file, match["date"], match["task"]))
    if not found:
        raise InputError("no lmms-eval samples files ({date}_samples_{task}.jsonl) here; "
                         "was the run made with --log_samples?", file=path,
                         reason="missing_file")
    return found


def choose_samples_file(path: Path, task: str | None) -> SamplesFile:
    """The one samples file to import: of ``task`` when named; it must be unique."""
    files = find_samples_files(path)
    tasks = sorted({file.task for file in files})
    if task is not None:
        files = [file for file in files if file.task == task]
        if not files:
            raise InputError(f"no samples file of task {task!r} here; tasks: {tasks}",
                             file=path, reason="config_error")
    if len({file.task for file in files}) > 1:
        raise InputError(f"this run holds several tasks {tasks}; choose one with --task",
                         file=path, reason="config_error")
    if len(files) > 1:
        names = ", ".join(file.path.name for file in files)
        raise InputError(f"several runs of task {files[0].task!r} ({names}); name the file",
                         file=path, reason="config_error")
    return files[0]


def read_lmms_run(path: Path, task: str | None = None, metric: str | None = None) -> LmmsRun:
    samples = choose_samples_file(path, task)
    results = _read_results(samples)
    metric_names = _metric_names(results, samples.task)
    token_limit = _max_new_tokens(results, samples.task)
    rows = [_row(samples.path, number, data, metric, metric_names, token_limit)
            for number, data in _objects(samples.path)]
    if not rows:
        raise InputError("the samples file holds no rows", file=samples.path, reason="empty")
    files = {str(samples.path): file_sha256(samples.path)}
    config: dict[str, Any] = {}
    if results is not None:
        files[str(samples.results_path)] = file_sha256(samples.results_path)
        config = results.get("config") if isinstance(results.get("config"), dict) else {}
    model_args = config.get("model_args")
    run = HarnessRun(
        harness="lmms-eval", task=samples.task,
        model=as_text(config.get("model")) or samples.path.parent.name,
        model_args=model_args if isinstance(model_args, str) else
        (json.dumps(model_args, sort_keys=True) if model_args else None),
        files=files)
    return LmmsRun(run=run, rows=rows, samples_file=samples.path)


def _read_results(samples: SamplesFile) -> dict[str, Any] | None:
    """The run's {date}_results.json (optional: a copied samples file may travel alone)."""
    path = samples.results_path
    if not path.is_file():
        return None
    results = read_json(path)
    if not isinstance(results, dict):
        raise InputError("an lmms-eval results file holds a JSON object", file=path,
                         reason="bad_json")
    # The sections lmms-eval's EvaluationTracker writes as objects: another shape is not a
    # file it wrote, and importing it silently would name the wrong task or metrics.
    for section in _MAPPINGS:
        if section in results and not isinstance(results[section], dict):
            raise InputError(f"must be an object (lmms-eval writes one), got "
                             f"{type(results[section]).__name__}", file=path, field=section,
                             reason="bad_json")
    known = {str(key) for section in ("results", "configs")
             for key in _mapping(results.get(section))}
    if known and samples.task not in known:
        raise InputError(f"task {samples.task!r} of this samples file is unknown to its "
                         f"run's results file (tasks: {sorted(known)})", file=samples.path,
                         reason="config_error")
    return results


_MAPPINGS = ("results", "configs", "config", "versions", "n-shot", "higher_is_better",
             "n-samples")


def _mapping(value: Any) -> dict[str, Any]:
    """A section of a results file that should be an object ({} when it is anything else:
    the file is optional metadata, so an odd shape must not stop the import)."""
    return value if isinstance(value, dict) else {}


def _task_config(results: dict[str, Any] | None, task: str) -> dict[str, Any]:
    """The task's config as the results file recorded it ({} when it did not)."""
    config = _mapping((results or {}).get("configs")).get(task)
    return config if isinstance(config, dict) else {}


def _metric_names(results: dict[str, Any] | None, task: str) -> list[str]:
    """The task's metrics in the order its config lists them (metric_list)."""
    names = []
    entries = _task_config(results, task).get("metric_list")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("metric"), str):
            names.append(entry["metric"])
    return names


def _max_new_tokens(results: dict[str, Any] | None, task: str) -> int | None:
    """The token limit the task generated under (its generation_kwargs), when recorded."""
    kwargs = _task_config(results, task).get("generation_kwargs")
    value = kwargs.get("max_new_tokens") if isinstance(kwargs, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


def _finish_reason(output_tokens: int | None, token_limit: int | None) -> str | None:
    """'length' when the response used the whole token limit (cut there, as ``distill
    eval`` calls it), 'stop' when it used less; None when either count is unrecorded."""
    if output_tokens is None or token_limit is None:
        return None
    return "length" if output_tokens >= token_limit else "stop"


def _objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in iter_lines(path):
        data = parse_json(text, file=path, line=number)
        if not isinstance(data, dict):
            raise InputError("each line of a samples file is a JSON object", file=path,
                             line=number, reason="bad_json")
        yield number, data


def _first_text(value: Any) -> str | None:
    """A response as text: '..' (0.7.x), ['..'] (0.3.x filtered), [['..']] (0.3.x resps)."""
    while isinstance(value, list):
        if len(value) != 1:
            return None
        value = value[0]
    return value if isinstance(value, str) else None


def _one_text(value: Any) -> str | None:
    """A parsed answer as text: MMMU keeps ``parsed_pred`` as a one-element list."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return as_text(value)


def _row(path: Path, number: int, data: dict[str, Any], metric: str | None,
         metric_names: list[str], token_limit: int | None) -> HarnessRow:
    doc_id = data.get("doc_id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, int):
        raise InputError("doc_id must be an integer", file=path, line=number, field="doc_id",
                         reason="schema_error")
    filtered = _first_text(data.get("filtered_resps"))
    raw = _first_text(data.get("resps")) if "resps" in data else None
    if filtered is None and raw is None:
        raise InputError("no single text response (filtered_resps/resps): only generate_until "
                         "tasks can be imported", file=path, line=number,
                         field="filtered_resps", reason="schema_error")
    output = raw if raw is not None else filtered
    name, value = _pick_metric(data, metric, metric_names, path, number)
    doc = data.get("doc") if isinstance(data.get("doc"), dict) else {}
    details = value if isinstance(value, dict) else {}
    key = next((as_text(source.get(field)) for source in (details, doc)
                for field in _ID_FIELDS if as_text(source.get(field)) is not None), None)
    question = next((as_text(doc.get(field)) for field in _QUESTION_FIELDS
                     if as_text(doc.get(field)) is not None), None)
    extracted = next((_one_text(details.get(field)) for field in _EXTRACTED_FIELDS
                      if _one_text(details.get(field)) is not None), None)
    if extracted is None and filtered is not None and filtered != output:
        extracted = filtered
    tokens = _output_tokens(data.get("token_counts"))
    return HarnessRow(
        file=path, line=number, position=doc_id, key=key,
        question=question or as_text(data.get("input")), target=as_text(data.get("target")),
        raw_output=output, extracted=extracted, metric=name,  # type: ignore[arg-type]
        score=lmms_dict_verdict(details) if isinstance(value, dict) else as_score(value),
        output_tokens=tokens, finish_reason=_finish_reason(tokens, token_limit))


def _pick_metric(data: dict[str, Any], metric: str | None, metric_names: list[str],
                 path: Path, number: int) -> tuple[str | None, Any]:
    present = [key for key in data if key not in _NOT_METRICS]
    if metric is not None:
        if metric not in data:
            raise InputError(f"no metric {metric!r} in this row (metrics: {present})",
                             file=path, line=number, field=metric, reason="schema_error")
        return metric, data[metric]
    for name in ["average", *metric_names, *present]:
        if name in data:
            return name, data[name]
    return None, None


def _output_tokens(value: Any) -> int | None:
    """0.7.x token_counts: [{"output_tokens": n, ...}] (or [None]) per request."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        tokens = value[0].get("output_tokens")
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
            return tokens
    return None
