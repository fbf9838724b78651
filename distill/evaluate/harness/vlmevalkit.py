"""Reading VLMEvalKit prediction files and, when present, the judged files beside them.

Layout (open-compass/VLMEvalKit at e8e78f05: vlmeval/inference.py writes the predictions,
vlmeval/smp/file.py ``get_pred_file_path``/``dump`` the formats)::

    {work_dir}/{model}/[{eval_id}/]{model}_{dataset}.xlsx      (PRED_FORMAT=tsv|json: .tsv/.json)

One row per item: the dataset's columns without ``image`` (``index, question, answer``,
options ``A``..``Z`` for multiple choice, ``category`` ...), plus ``prediction`` (and
``thinking`` with ``SPLIT_THINK``: the text before ``</think>``). xlsx and tsv have a header
row; json is a list of records.

Judged files (written by ``evaluate`` of the dataset class, same commit) sit beside it:
multiple choice (vlmeval/dataset/image_mcq.py) ``{stem}_{judge}_result.xlsx`` with ``hit``
(0/1) and ``log``; yes/no (vlmeval/dataset/image_yorn.py) ``{stem}_auxmatch.xlsx`` with
``extracted`` and ``score`` (True/False); MathVista (vlmeval/dataset/utils/mathvista.py)
``{stem}_{judge}.xlsx`` with the judge's extraction ``res``, its verdict recomputed by
``post_check`` (verdicts.py). Rows pair with predictions by ``index``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.errors import InputError
from distill.core.text import iter_tsv
from distill.evaluate.harness.rows import HarnessRow, as_score, as_text, read_json
from distill.evaluate.harness.verdicts import is_mathvista_judged, mathvista_post_check
from distill.schemas import HarnessRun, file_sha256

SUFFIXES = (".xlsx", ".tsv", ".json")
_SCORE_COLUMNS = ("hit", "score")
# {stem}_auxmatch, {stem}_{judge}_result, and MathVista's {stem}_{judge}
_JUDGED = re.compile(r"_.+$")


@dataclass
class VlmRun:
    run: HarnessRun
    rows: list[HarnessRow]
    scores_file: Path | None


def read_table(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(row number, record) of an .xlsx, .tsv or .json table; xlsx/tsv rows are numbered as
    a spreadsheet shows them (header = row 1), json records from 1."""
    if not path.is_file():
        raise InputError("file not found", file=path, reason="missing_file")
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return _xlsx(path)
    if suffix == ".tsv":
        return _tsv(path)
    if suffix == ".json":
        return _json(path)
    raise InputError("unsupported file type; VLMEvalKit writes .xlsx, .tsv or .json",
                     file=path, reason="config_error")


def _xlsx(path: Path) -> list[tuple[int, dict[str, Any]]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - zipfile/openpyxl raise many types for bad files
        raise InputError(f"not a readable .xlsx file: {exc}", file=path,
                         reason="bad_file") from None
    try:
        values = list(book.worksheets[0].iter_rows(values_only=True))
    finally:
        book.close()
    if not values:
        raise InputError("the sheet is empty (no header row)", file=path, reason="empty")
    header = [as_text(cell) for cell in values[0]]
    records = []
    for number, cells in enumerate(values[1:], start=2):
        if all(cell is None for cell in cells):
            continue
        records.append((number, {name: cell for name, cell in zip(header, cells, strict=False)
                                 if name is not None}))
    return records


def _tsv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for number, (_, data) in enumerate(iter_tsv(path), start=2):  # numbered as table rows
        if isinstance(data, InputError):
            raise data
        records.append((number, dict(data)))
    return records


def _json(path: Path) -> list[tuple[int, dict[str, Any]]]:
    loaded = read_json(path)
    if not isinstance(loaded, list):
        raise InputError("a VLMEvalKit .json prediction file is a list of records",
                         file=path, reason="bad_json")
    records = []
    for number, record in enumerate(loaded, start=1):
        if not isinstance(record, dict):
            raise InputError("each record must be a JSON object", file=path, line=number,
                             reason="bad_json")
        records.append((number, record))
    return records


def judged_files(prediction: Path) -> list[Path]:
    """The judged files beside a prediction file: {stem}_*_result.* and {stem}_auxmatch.*."""
    found = []
    for candidate in sorted(prediction.parent.glob(f"{prediction.stem}_*")):
        rest = candidate.stem[len(prediction.stem):]
        if candidate.suffix.lower() in SUFFIXES and _JUDGED.fullmatch(rest):
            found.append(candidate)
    return found


def split_name(prediction: Path) -> tuple[str | None, str | None]:
    """(model, dataset) from '{model}_{dataset}', the model being a folder name above."""
    for folder in (prediction.parent, prediction.parent.parent):
        if folder.name and prediction.stem.startswith(folder.name + "_"):
            return folder.name, prediction.stem[len(folder.name) + 1:]
    return None, None


def read_vlmevalkit(prediction: Path, *, scores: Path | None = None,
                    dataset: str | None = None, model: str | None = None) -> VlmRun:
    records = read_table(prediction)
    if not records:
        raise InputError("the prediction file holds no rows", file=prediction, reason="empty")
    first_number, first = records[0]
    if "prediction" not in first:
        raise InputError("no 'prediction' column: not a VLMEvalKit prediction file (columns: "
                         f"{sorted(first)[:12]})", file=prediction, line=first_number,
                         field="prediction", reason="schema_error")
    guessed_model, guessed_dataset = split_name(prediction)
    task = dataset or guessed_dataset
    if task is None:
        raise InputError("cannot tell the dataset from the file name ({model}_{dataset} in a "
                         "folder named after the model); name it with --task", file=prediction,
                         reason="config_error")
    if scores is None:
        candidates = judged_files(prediction)
        if len(candidates) > 1:
            raise InputError(f"several judged files beside it ({[c.name for c in candidates]});"
                             " choose one with --scores", file=prediction,
                             reason="config_error")
        scores = candidates[0] if candidates else None
    judged = _judged_by_index(scores) if scores is not None else {}
    rows = [_row(prediction, number, record, judged, scores) for number, record in records]
    files = {str(prediction): file_sha256(prediction)}
    if scores is not None:
        files[str(scores)] = file_sha256(scores)
    run = HarnessRun(harness="vlmevalkit", task=task, model=model or guessed_model,
                     files=files)
    return VlmRun(run=run, rows=rows, scores_file=scores)


def _judged_by_index(path: Path) -> dict[str, tuple[int, dict[str, Any]]]:
    records = read_table(path)
    by_index: dict[str, tuple[int, dict[str, Any]]] = {}
    for number, record in records:
        index = as_text(record.get("index"))
        if index is None:
            raise InputError("a judged row without 'index'", file=path, line=number,
                             field="index", reason="schema_error")
        if not any(column in record for column in _SCORE_COLUMNS) \
                and not is_mathvista_judged(record):
            raise InputError(f"no score column ({' or '.join(_SCORE_COLUMNS)}, or MathVista's "
                             "res) in the judged file", file=path, line=number,
                             reason="schema_error")
        if index in by_index:
            raise InputError(f"index {index!r} appears twice (first at row "
                             f"{by_index[index][0]})", file=path, line=number, field="index",
                             reason="duplicate_id")
        by_index[index] = (number, record)
    return by_index


def _judged_verdict(record: dict[str, Any]) -> tuple[str, float | None, str | None]:
    """(metric, score, extraction) of one judged row."""
    metric = next((column for column in _SCORE_COLUMNS if column in record), None)
    if metric is not None:
        return metric, as_score(record.get(metric)), as_text(record.get("extracted"))
    return "post_check", mathvista_post_check(record), as_text(record.get("res"))


def _row(path: Path, number: int, record: dict[str, Any],
         judged: dict[str, tuple[int, dict[str, Any]]], scores: Path | None) -> HarnessRow:
    prediction = as_text(record.get("prediction"))
    if "prediction" not in record:
        raise InputError("no 'prediction' in this row", file=path, line=number,
                         field="prediction", reason="schema_error")
    thinking = as_text(record.get("thinking"))
    output = prediction or ""
    if thinking:  # SPLIT_THINK cut the text at </think>; put it back as the model wrote it
        output = f"<think>{thinking}</think>{output}"
    index = as_text(record.get("index"))
    metric = score = extracted = None
    if scores is not None:
        found = judged.get(index) if index is not None else None
        if found is None:
            raise InputError(f"index {index!r} has no row in the judged file {scores}",
                             file=path, line=number, field="index", reason="schema_error")
        metric, score, extracted = _judged_verdict(found[1])
    return HarnessRow(file=path, line=number, position=number - 2 if path.suffix != ".json"
                      else number - 1, key=index, question=as_text(record.get("question")),
                      target=as_text(record.get("answer")), raw_output=output,
                      extracted=extracted, metric=metric, score=score)
