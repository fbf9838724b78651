"""Records of an eval set's file (.json list or dict keyed by id, .jsonl, .parquet, .tsv),
each with where it came from, so every error names the file, the row and the field."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.errors import InputError
from distill.ingest.sources.jsonl import iter_json_objects


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
