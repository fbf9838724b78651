"""MathVista: testmini.json (dict keyed by pid, or a list), JSONL or parquet rows with
``pid, question, image, choices, answer, question_type, answer_type, unit, precision,
metadata`` (``decoded_image`` bytes when present). Multiple-choice answers are choice
*texts*, turned into letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.core.paths import id_part, slug
from distill.ingest.converters.fields import attach_image, choices_field, make_item, text_field
from distill.ingest.converters.rows import Row
from distill.ingest.sources.base import RawItem
from distill.schemas.sample import CHOICE_LETTERS


def mathvista_item(row: Row, *, image_root: Path, split: str, category_field: str) -> RawItem:
    pid = text_field(row, "pid", required=False) or row.key
    question = text_field(row, "question")
    choices = choices_field(row)
    answer = text_field(row, "answer")
    question_type = row.data.get("question_type") or ("multi_choice" if choices else
                                                      "free_form")
    metadata = row.data.get("metadata") if isinstance(row.data.get("metadata"), dict) else {}
    fields: dict[str, Any] = {
        "id": f"mathvista-{id_part(pid)}", "question": question, "split": split,
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
    item = make_item(row, fields)
    image = row.data.get("decoded_image") or row.data.get("image")
    attach_image(item, row, image, "image", image_root)
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
