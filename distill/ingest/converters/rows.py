"""Records of an eval set's file (.json list or dict keyed by id, .jsonl, .parquet, .tsv),
each with where it came from, so every error names the file, the row and the field."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.errors import InputError
from distill.core.text import iter_tsv, parse_json, read_text
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
    loaded = parse_json(read_text(path), file=path)
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
    batches = table.iter_batches(batch_size=256)
    while True:
        try:
            batch = next(batches, None)
            rows = [] if batch is None else batch.to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ...
            raise InputError(f"corrupt parquet data after row {number}: {exc}", file=path,
                             reason="bad_file") from None
        if batch is None:
            return
        for data in rows:
            number += 1
            yield Row(data, str(path), number, str(number - 1))


def _tsv_rows(path: Path) -> Iterator[Row | InputError]:
    for index, (number, data) in enumerate(iter_tsv(path)):
        if isinstance(data, InputError):
            yield data
            continue
        yield Row({k: v for k, v in data.items() if v not in (None, "")}, str(path),
                  number, str(index))
