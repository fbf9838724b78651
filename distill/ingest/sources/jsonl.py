"""Items from a JSONL file in the toolkit's input format (one JSON object a line).

Each line: ``id`` (optional: derived from file and line), ``image`` (a path relative to
the image root, default the file's folder) or ``image_b64``, ``question``, ``answer``
(a string; a JSON number is accepted for numeric answers; absent or null for an item
without a gold answer), optional ``choices``, ``answer_type`` (inferred when absent: from
the answer, or from the question when there is no answer, see ``infer_answer_type``),
``category``, ``source``, ``split``, ``meta``. Unknown keys are errors: a typo never
silently loses a field.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill.core.errors import InputError
from distill.core.text import iter_text_lines, parse_json
from distill.ingest.sources.base import RawItem, SourceRow

ALLOWED_KEYS = {
    "id", "image", "image_b64", "question", "answer", "choices", "answer_type",
    "category", "source", "split", "meta",
}


# A question that opens with one of these words asks for yes or no ("Is the cup red?").
_YES_NO_OPENING = re.compile(
    r"^\s*(is|are|was|were|does|do|did|can|could|has|have|had|will|would|should|must|may)\b",
    re.IGNORECASE)
# A question that asks for a quantity ("How many cats...?", "What number is on the door?").
_NUMBER_QUESTION = re.compile(r"^\s*how\s+(many|much)\b|\b(what|which)\s+number\b",
                              re.IGNORECASE)


def infer_answer_type(answer: str | None, choices: list[str] | None,
                      question: str | None = None) -> str:
    """The answer type when a file does not say.

    With a gold answer: choices -> choice, 'yes'/'no' -> yes_no, a number -> number, else
    text. Without one, from the question, by this rule: choices -> choice; a question
    opening with is/are/was/were/does/do/did/can/could/has/have/had/will/would/should/
    must/may -> yes_no; one opening with 'how many'/'how much' or asking 'what number' /
    'which number' -> number; anything else -> text. Give ``answer_type`` where the rule
    guesses wrong."""
    if choices:
        return "choice"
    if answer is None:
        text = question or ""
        if _YES_NO_OPENING.match(text):
            return "yes_no"
        return "number" if _NUMBER_QUESTION.search(text) else "text"
    if answer.strip().lower() in ("yes", "no"):
        return "yes_no"
    try:
        float(answer.replace(",", ""))
        return "number"
    except ValueError:
        return "text"


def row_to_item(row: dict[str, Any], *, file: str, line: int | None, image_root: Path,
                default_id: str, default_source: str) -> RawItem:
    """Map one input row to a RawItem; wrong shapes raise InputError naming the field."""
    def fail(field: str, message: str) -> InputError:
        return InputError(message, file=file, line=line, field=field, reason="schema_error")

    unknown = sorted(set(row) - ALLOWED_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown field; allowed fields are {sorted(ALLOWED_KEYS)}")
    answer = row.get("answer")
    if isinstance(answer, bool):
        raise fail("answer", "must be a string, got a boolean (write \"yes\" or \"no\")")
    if isinstance(answer, int | float):
        answer = str(answer)
    fields: dict[str, Any] = {
        key: row[key]
        for key in ("id", "question", "choices", "answer_type", "category", "split", "meta")
        if key in row
    }
    if answer is not None:
        fields["answer"] = answer
    fields.setdefault("id", default_id)
    fields.setdefault("category", "default")
    fields["source"] = row.get("source", default_source)
    if "answer_type" not in fields and (answer is None or isinstance(answer, str)):
        choices = row.get("choices") if isinstance(row.get("choices"), list) else None
        question = row.get("question") if isinstance(row.get("question"), str) else None
        fields["answer_type"] = infer_answer_type(answer, choices, question)
    has_path, has_b64 = "image" in row, "image_b64" in row
    if has_path == has_b64:
        raise fail("image", "each row needs exactly one of 'image' (a path) or 'image_b64'")
    if has_path:
        if not isinstance(row["image"], str):
            raise fail("image", f"must be a path string, got {type(row['image']).__name__}")
        return RawItem(fields=fields, file=file, line=line, image_path=row["image"],
                       image_root=image_root)
    if not isinstance(row["image_b64"], str):
        raise fail("image_b64", "must be a base64 string")
    try:
        data = base64.b64decode(row["image_b64"], validate=True)
    except binascii.Error as exc:
        raise fail("image_b64", f"not valid base64: {exc}") from None
    return RawItem(fields=fields, file=file, line=line, image_bytes=data)


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]] | InputError]:
    """(line number, object) for each line of a user's JSONL file; a line that is not a
    JSON object is yielded as an InputError in its place, so callers can skip or stop."""
    for number, text in iter_text_lines(path):
        if isinstance(text, InputError):
            yield text
            continue
        try:
            row = parse_json(text, file=path, line=number)
        except InputError as error:
            yield error
            continue
        if not isinstance(row, dict):
            yield InputError(f"each line must be a JSON object, got {type(row).__name__}",
                             file=path, line=number, reason="bad_json")
            continue
        yield number, row


def iter_jsonl(path: Path, image_root: Path | None = None) -> Iterator[SourceRow]:
    """Rows of a JSONL file; bad lines are yielded as InputErrors in their place."""
    image_root = image_root or path.parent
    for entry in iter_json_objects(path):
        if isinstance(entry, InputError):
            yield entry
            continue
        number, row = entry
        try:
            yield row_to_item(row, file=str(path), line=number, image_root=image_root,
                              default_id=f"{path.stem}-{number}", default_source=path.name)
        except InputError as exc:
            yield exc
