"""One row of another harness's per-item output, read into a common shape.

Readers (``lmms_eval``, ``vlmevalkit``) turn a harness's files into ``HarnessRow``s; the
matcher pairs them with our eval set's items; the importer judges them. A row keeps where it
came from so every problem names the file and the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.errors import InputError
from distill.core.text import parse_json, read_text


@dataclass(frozen=True)
class HarnessRow:
    file: Path
    line: int  # line of a JSONL/TSV file, or row number of a spreadsheet (header = row 1)
    position: int | None  # lmms-eval doc_id (restarts per task) / row order, 0-based
    key: str | None  # the item's own id when the harness kept one (sample id, index, pid)
    question: str | None  # question or prompt text, when the harness kept it
    target: str | None  # the harness's gold answer, when it kept it
    raw_output: str  # the model's text, as unprocessed as the harness kept it
    extracted: str | None = None  # the answer the harness parsed out of it
    metric: str | None = None
    score: float | None = None
    output_tokens: int | None = None
    # 'length' (cut at the token limit) or 'stop', when the harness recorded enough to tell
    # (lmms-eval 0.7: token_counts and the task's max_new_tokens); None when it did not.
    finish_reason: str | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def error(self, message: str, field: str | None = None) -> InputError:
        return InputError(message, file=self.file, line=self.line, field=field,
                          reason="schema_error")


def as_text(value: object) -> str | None:
    """A cell or JSON value as text (None and empty stay None; 3.0 -> '3')."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN: an empty spreadsheet cell read by pandas
            return None
        if value.is_integer():
            return str(int(value))
    text = str(value)
    return text if text.strip() else None


def as_score(value: object) -> float | None:
    """A per-item score: numbers and booleans (VLMEvalKit writes True/False), else None."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return None if value != value else float(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return 1.0 if value.strip().lower() == "true" else 0.0
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def read_json(path: Path) -> Any:
    """A whole JSON file; bad JSON is an error at its line."""
    return parse_json(read_text(path), file=path)
