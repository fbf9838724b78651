"""Reading users' text files: the one place where bytes become text and JSON values.

Every reader of a user's file (ingest sources, benchmark converters, harness importers,
config files, shard readers) goes through here, so the same three hostile-input rules hold
everywhere, each as an ``InputError`` naming the file and the line:

* bytes that are not UTF-8 (a Latin-1 export, a binary file with a .jsonl name);
* nesting deeper than ``MAX_DEPTH`` (``[[[[...]]]]`` made the json module, and every
  recursive walk after it, raise RecursionError);
* a JSON object with a key given twice (``json.loads`` keeps the last one silently, so a
  record could lose a field, or a results file a model, and still exit 0).

Readers of line-based files get a bad line as an ``InputError`` in its place, so
``--on-error skip`` can send it to rejects.jsonl and go on.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from distill.core.errors import InputError

MAX_DEPTH = 64  # no record, config or results file we read nests this deep


def decode(data: bytes, *, file: str | Path, line: int | None = None) -> str:
    """UTF-8 text of ``data`` (a leading BOM dropped); a bad byte names its line."""
    try:
        return data.decode("utf-8-sig" if line in (None, 1) else "utf-8")
    except UnicodeDecodeError as exc:
        at = line if line is not None else data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not valid UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}{'' if line is None else ' of the line'}); save the "
                         f"file as UTF-8", file=file, line=at, reason="bad_encoding") from None


def read_text(path: Path | str, *, what: str = "file") -> str:
    """The whole UTF-8 text of a file; missing, unreadable or undecodable -> InputError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=path, reason="missing_file") from None
    except IsADirectoryError:
        raise InputError(f"is a folder, expected a {what}", file=path,
                         reason="bad_file") from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", file=path,
                         reason="bad_file") from None
    return decode(data, file=path)


def _open_bytes(path: Path) -> BinaryIO:
    """A user's file opened for reading bytes; a folder or an unreadable path is one error."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except IsADirectoryError:
        raise InputError("is a folder, expected a file", file=path, reason="bad_file") from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}", file=path,
                         reason="bad_file") from None


def iter_text_lines(path: Path | str) -> Iterator[tuple[int, str | InputError]]:
    """(line number, text) for each non-blank line; a line that is not UTF-8 comes as an
    InputError in its place (the rest of the file is still read)."""
    path = Path(path)
    with _open_bytes(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = decode(raw, file=path, line=number)
            except InputError as error:
                yield number, error
                continue
            if text.strip():
                yield number, text


def parse_json(text: str | bytes, *, file: str | Path, line: int | None = None) -> Any:
    """A JSON value from text, refusing bad JSON, duplicate keys and deep nesting."""
    if isinstance(text, bytes):
        text = decode(text, file=file, line=line)
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        at = line if line is not None else exc.lineno
        raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=file,
                         line=at, reason="bad_json") from None
    except _DuplicateKey as exc:
        raise InputError(f"key {exc.key!r} appears twice in one JSON object; "
                         f"which one is meant is unclear", file=file, line=line,
                         field=exc.key, reason="duplicate_key") from None
    except RecursionError:
        raise InputError(f"JSON nested too deeply (at most {MAX_DEPTH} levels)", file=file,
                         line=line, reason="bad_json") from None
    check_depth(value, file=file, line=line)  # what parsed can still be too deep to walk
    return value


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_depth(value: Any, *, file: str | Path, line: int | None = None,
                limit: int = MAX_DEPTH) -> None:
    """Refuse an already-parsed value nested deeper than ``limit``, or holding a lone
    surrogate (JSON's ``"\\ud800"`` escape parses to text no UTF-8 writer can write)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                raise InputError("text holds a lone UTF-16 surrogate (an escape like "
                                 "\\ud800 without its pair): not valid Unicode", file=file,
                                 line=line, reason="bad_encoding")
            continue
        if depth > limit:
            raise InputError(f"nested more than {limit} levels deep", file=file, line=line,
                             reason="bad_input")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
            stack.extend((key, depth) for key in item)  # keys are text too
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)


class _DuplicateKey(Exception):  # noqa: N818 - internal signal, turned into an InputError
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what surrogateescape leaves for a bad byte


def iter_tsv(path: Path | str) -> Iterator[tuple[int, dict[str, str] | InputError]]:
    """(line number, record) for each row of a tab-separated file with a header line.

    Bytes that are not UTF-8, or a row with more fields than the header, make that row an
    InputError in its place; the other rows are still read."""
    path = Path(path)
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    with _open_bytes(path) as handle:
        lines = (raw.decode("utf-8", "surrogateescape") for raw in handle)
        reader = csv.DictReader(lines, delimiter="\t")
        try:
            end = 0 if reader.fieldnames is None else reader.line_num
            for data in reader:
                number, end = end + 1, reader.line_num  # where the record starts
                if None in data:
                    yield number, InputError("row has more fields than the header", file=path,
                                             line=number, reason="bad_file")
                elif any(_UNDECODABLE.search(text) for text in _texts(data)):
                    yield number, InputError("not valid UTF-8 text; save the file as UTF-8",
                                             file=path, line=number, reason="bad_encoding")
                else:
                    yield number, data
        except csv.Error as exc:
            raise InputError(f"not a readable TSV file: {exc}", file=path,
                             line=reader.line_num, reason="bad_file") from None


def _texts(record: dict[str | None, Any]) -> Iterator[str]:
    for key, value in record.items():
        if isinstance(key, str):
            yield key
        if isinstance(value, str):
            yield value
