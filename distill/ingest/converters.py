"""Converters from the layouts common eval sets ship in, read from local files only, into an
ingest folder (Sample shards + copied images + manifest) that ``distill eval`` reads.

* ``mathvista``: ``testmini.json`` (a dict keyed by pid, or a list), JSONL or parquet rows
  with ``pid, question, image, choices, answer, question_type, answer_type, unit,
  precision, metadata`` (``decoded_image`` bytes are used when present). Multiple-choice
  answers are choice *texts*, turned into letters.
* ``scienceqa``: the original ``problems.json`` (dict keyed by pid, each with ``split``;
  images at ``<image-root>/<split>/<pid>/image.png``), or parquet/JSONL rows with
  ``image, question, choices, answer (index), hint, subject, ...``. Items without an image
  are skipped (and counted): a VLM eval needs pixels.
* ``mmstar``: parquet or JSONL rows with ``index, question, image, answer, category,
  l2_category``, or VLMEvalKit-style TSV (base64 images; options in ``A``..``F`` columns).
  Options are taken from the ``A``.. columns, else parsed out of the question text
  (``Options: A: ..., B: ...``).

Images may be paths (relative to ``--image-root``, default the input file's folder),
``{"bytes": ..., "path": ...}`` structs (parquet) or base64 strings (TSV). Every bad row
is an error naming the file, the row (line for JSONL, row number for parquet/TSV, key for
JSON) and the field.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.errors import InputError
from distill.core.paths import slug
from distill.ingest.sources.base import RawItem, SourceRow
from distill.ingest.sources.jsonl import iter_json_objects
from distill.schemas.sample import CHOICE_LETTERS

# A longer image string is base64 data (TSV), not a path.
MAX_PATH_CHARS = 1024


@dataclass(frozen=True)
class Row:
    """One input record and where it came from (for error messages)."""

    data: dict[str, Any]
    file: str
    line: int | None
    key: str

    def error(self, message: str, field: str | None = None) -> InputError:
        return InputError(message, file=self.file, line=self.line, field=field,
                          reason="schema_error")


def read_rows(path: Path) -> Iterator[Row | InputError]:
    """Records of a .json (list, or dict keyed by id), .jsonl, .parquet or .tsv file."""
    if not path.is_file():
        raise InputError("input file not found", file=path, reason="missing_file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    elif suffix == ".tsv":
        yield from _tsv_rows(path)
    else:
        raise InputError("unsupported file type; use .json, .jsonl, .parquet or .tsv",
                         file=path, reason="config_error")


def _jsonl_rows(path: Path) -> Iterator[Row | InputError]:
    for entry in iter_json_objects(path):
        if isinstance(entry, InputError):
            yield entry
        else:
            number, data = entry
            yield Row(data, str(path), number, str(number))


def _json_rows(path: Path) -> Iterator[Row | InputError]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno,
                         reason="bad_json") from None
    if isinstance(loaded, dict):
        entries = [(str(key), value) for key, value in loaded.items()]
    elif isinstance(loaded, list):
        entries = [(str(index), value) for index, value in enumerate(loaded)]
    else:
        raise InputError("a JSON eval file must hold a list of records or a dict of them",
                         file=path, reason="bad_json")
    for key, value in entries:
        where = f"{path}[{key}]"
        if not isinstance(value, dict):
            yield InputError("each record must be a JSON object", file=where,
                             reason="bad_json")
            continue
        yield Row(value, where, None, key)


def _parquet_rows(path: Path) -> Iterator[Row | InputError]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise InputError(f"not a readable parquet file: {exc}", file=path,
                         reason="bad_file") from None
    number = 0
    for batch in table.iter_batches(batch_size=256):
        for data in batch.to_pylist():
            number += 1
            yield Row(data, str(path), number, str(number - 1))


def _tsv_rows(path: Path) -> Iterator[Row | InputError]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        for number, data in enumerate(reader, start=2):  # line 1 is the header
            if None in data:
                yield InputError("row has more fields than the header", file=path,
                                 line=number, reason="bad_file")
                continue
            yield Row({k: v for k, v in data.items() if v not in (None, "")}, str(path),
                      number, str(number - 2))


# --- shared field handling --------------------------------------------------------------------


def _text(row: Row, field: str, *, required: bool = True) -> str | None:
    value = row.data.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise row.error("required field is missing or empty", field)
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise row.error(f"must be a string, got {type(value).__name__}", field)
    return str(value)


def _choices(row: Row, field: str = "choices") -> list[str] | None:
    value = row.data.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str | int | float) for c in value):
        raise row.error("must be a list of strings", field)
    choices = [str(c).strip() for c in value]
    if any(not c for c in choices):
        raise row.error("a choice is empty", field)
    if len(choices) > len(CHOICE_LETTERS):
        raise row.error(f"more than {len(CHOICE_LETTERS)} choices", field)
    return choices


def _attach_image(item: RawItem, row: Row, value: Any, field: str, image_root: Path) -> None:
    """Set the item's image from a path, a bytes struct or a base64 string."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            item.image_bytes = bytes(data)
            return
        value = path
    if isinstance(value, bytes | bytearray):
        item.image_bytes = bytes(value)
        return
    if not isinstance(value, str) or not value.strip():
        raise row.error("no image (expected a path, a bytes struct or base64)", field)
    if len(value) <= MAX_PATH_CHARS:
        # A path; if the file is missing, ingestion says so for this row.
        item.image_path, item.image_root = value, image_root
        return
    try:
        item.image_bytes = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise row.error("image is neither a path nor base64 data", field) from None


def _item(row: Row, fields: dict[str, Any]) -> RawItem:
    return RawItem(fields=fields, file=row.file, line=row.line)


# --- MathVista ------------------------------------------------------------------------------------


def mathvista_item(row: Row, *, image_root: Path, split: str, category_field: str) -> RawItem:
    pid = _text(row, "pid", required=False) or row.key
    question = _text(row, "question")
    choices = _choices(row)
    answer = _text(row, "answer")
    question_type = row.data.get("question_type") or ("multi_choice" if choices else
                                                      "free_form")
    metadata = row.data.get("metadata") if isinstance(row.data.get("metadata"), dict) else {}
    fields: dict[str, Any] = {
        "id": f"mathvista-{slug(pid)}", "question": question, "split": split,
        "source": "mathvista", "category": slug(metadata.get(category_field)
                                                or row.data.get(category_field)),
        "meta": {"source_id": pid, "question_type": question_type,
                 "answer_type": row.data.get("answer_type"), "unit": row.data.get("unit"),
                 "precision": row.data.get("precision")},
    }
    if question_type == "multi_choice":
        if not choices:
            raise row.error("a multi_choice question needs choices", "choices")
        fields |= {"choices": choices, "answer_type": "choice",
                   "answer": _choice_letter_of(row, answer, choices)}  # type: ignore[arg-type]
    else:
        kind = row.data.get("answer_type")
        fields |= {"answer": answer,
                   "answer_type": "number" if kind in ("integer", "float") else "text"}
    item = _item(row, fields)
    image = row.data.get("decoded_image") or row.data.get("image")
    _attach_image(item, row, image, "image", image_root)
    return item


def _choice_letter_of(row: Row, answer: str, choices: list[str]) -> str:
    """The letter of the choice whose text is the answer (MathVista stores the text)."""
    stripped = answer.strip()
    for index, choice in enumerate(choices):
        if choice == stripped:
            return CHOICE_LETTERS[index]
    if len(stripped) == 1 and stripped.upper() in CHOICE_LETTERS[: len(choices)]:
        return stripped.upper()
    raise row.error(f"answer {answer!r} is not one of the choices {choices}", "answer")


# --- ScienceQA ----------------------------------------------------------------------------------


def scienceqa_item(row: Row, *, image_root: Path, split: str,
                   category_field: str) -> RawItem | None:
    """None for a text-only item (no image)."""
    image = row.data.get("image")
    if image is None or (isinstance(image, dict) and not image.get("bytes")
                         and not image.get("path")):
        return None
    question = _text(row, "question")
    choices = _choices(row)
    if not choices or len(choices) < 2:
        raise row.error("needs at least two choices", "choices")
    answer = row.data.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise row.error("must be the index of the correct choice (an integer)", "answer")
    if not 0 <= answer < len(choices):
        raise row.error(f"index {answer} is out of range for {len(choices)} choices", "answer")
    hint = _text(row, "hint", required=False)
    row_split = row.data.get("split")
    fields: dict[str, Any] = {
        "id": f"scienceqa-{slug(row.key)}",
        "question": f"Context: {hint.strip()}\n{question}" if hint else question,
        "choices": choices, "answer": CHOICE_LETTERS[answer], "answer_type": "choice",
        "category": slug(row.data.get(category_field)), "split": split, "source": "scienceqa",
        "meta": {"source_id": row.key, "source_split": row_split,
                 **{k: row.data[k] for k in ("grade", "subject", "topic", "skill")
                    if isinstance(row.data.get(k), str)}},
    }
    item = _item(row, fields)
    if isinstance(image, str) and "/" not in image and isinstance(row_split, str):
        # The original release: problems.json names "image.png"; the file is under
        # <split>/<pid>/ (inside an images/ folder in some copies).
        for candidate in (f"{row_split}/{row.key}/{image}",
                          f"images/{row_split}/{row.key}/{image}"):
            if (image_root / candidate).is_file():
                image = candidate
                break
        else:
            raise row.error(f"image not found at {image_root}/{row_split}/{row.key}/{image} "
                            "(set --image-root to the folder holding train/ val/ test/)",
                            "image")
    _attach_image(item, row, image, "image", image_root)
    return item


# --- MMStar -------------------------------------------------------------------------------------

_OPTIONS = re.compile(r"\n?\s*Options?\s*:\s*", re.IGNORECASE)


def _options_from_question(row: Row, question: str) -> tuple[str, list[str]]:
    """Split 'Which...?\\nOptions: A: x, B: y, C: z' into the stem and ['x', 'y', 'z']."""
    found = _OPTIONS.search(question)
    if found is None:
        raise row.error("no options: expected columns A, B, ... or 'Options: A: ..., B: ...' "
                        "in the question", "question")
    stem, body = question[: found.start()].strip(), question[found.end():]
    choices: list[str] = []
    position = 0
    for letter_index, letter in enumerate(CHOICE_LETTERS):
        marker = re.compile(rf"(?:^|[\s,;(]){letter}\s*[:.)]\s*")
        match = marker.search(body, position)
        if match is None:
            break
        if letter_index:
            choices.append(body[position: match.start()].strip().rstrip(",;").strip())
        position = match.end()
    if position:
        choices.append(body[position:].strip().rstrip(",;").strip())
    if len(choices) < 2 or any(not choice for choice in choices):
        raise row.error("could not read the options (A: ..., B: ...) from the question",
                        "question")
    return stem, choices


def mmstar_item(row: Row, *, image_root: Path, split: str, category_field: str) -> RawItem:
    question = _text(row, "question")
    column_choices = []
    for letter in CHOICE_LETTERS:
        value = row.data.get(letter)
        if value is None or (isinstance(value, float) and value != value):  # NaN in TSV/pandas
            break
        column_choices.append(str(value).strip())
    if len(column_choices) >= 2:
        stem, choices = question, column_choices  # type: ignore[assignment]
    else:
        stem, choices = _options_from_question(row, question)  # type: ignore[arg-type]
    answer = (_text(row, "answer") or "").strip().upper()
    if answer not in CHOICE_LETTERS[: len(choices)]:
        raise row.error(f"answer must be one of {CHOICE_LETTERS[: len(choices)]!r}, got "
                        f"{answer!r}", "answer")
    index = _text(row, "index", required=False) or row.key
    item = _item(row, {
        "id": f"mmstar-{slug(index)}", "question": stem, "choices": choices, "answer": answer,
        "answer_type": "choice", "category": slug(row.data.get(category_field)),
        "split": split, "source": "mmstar",
        "meta": {"source_id": index,
                 **{k: row.data[k] for k in ("category", "l2_category")
                    if isinstance(row.data.get(k), str)}},
    })
    _attach_image(item, row, row.data.get("image"), "image", image_root)
    return item


@dataclass(frozen=True)
class Format:
    convert: Callable[..., RawItem | None]
    category_field: str


FORMATS: dict[str, Format] = {
    "mathvista": Format(mathvista_item, "task"),
    "scienceqa": Format(scienceqa_item, "subject"),
    "mmstar": Format(mmstar_item, "category"),
}


@dataclass
class ConvertStats:
    skipped_no_image: int = 0


def iter_converted(fmt: str, path: Path, *, image_root: Path | None = None,
                   split: str = "test", category_field: str | None = None,
                   stats: ConvertStats | None = None) -> Iterator[SourceRow]:
    """RawItems (or the InputErrors of bad rows, in place) for ``distill.ingest.ingest``."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}", file=path,
                         reason="config_error")
    spec = FORMATS[fmt]
    root = (image_root or path.parent).resolve()
    stats = stats if stats is not None else ConvertStats()
    for row in read_rows(path):
        if isinstance(row, InputError):
            yield row
            continue
        try:
            item = spec.convert(row, image_root=root, split=split,
                                category_field=category_field or spec.category_field)
        except InputError as exc:
            yield exc
            continue
        if item is None:
            stats.skipped_no_image += 1
            continue
        yield item
