"""MMStar: parquet or JSONL rows with ``index, question, image, answer, category,
l2_category``, or VLMEvalKit-style TSV (base64 images; options in ``A``..``F`` columns).
Options are taken from the ``A``.. columns, else parsed out of the question text
(``Options: A: ..., B: ...``)."""

from __future__ import annotations

import re
from pathlib import Path

from distill.core.paths import id_part, slug
from distill.ingest.converters.fields import attach_image, make_item, text_field
from distill.ingest.converters.rows import Row
from distill.ingest.sources.base import RawItem
from distill.schemas.sample import CHOICE_LETTERS

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
    question = text_field(row, "question")
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
    answer = (text_field(row, "answer") or "").strip().upper()
    if answer not in CHOICE_LETTERS[: len(choices)]:
        raise row.error(f"answer must be one of {CHOICE_LETTERS[: len(choices)]!r}, got "
                        f"{answer!r}", "answer")
    index = text_field(row, "index", required=False) or row.key
    item = make_item(row, {
        "id": f"mmstar-{id_part(index)}", "question": stem, "choices": choices, "answer": answer,
        "answer_type": "choice", "category": slug(row.data.get(category_field)),
        "split": split, "source": "mmstar",
        "meta": {"source_id": index,
                 **{k: row.data[k] for k in ("category", "l2_category")
                    if isinstance(row.data.get(k), str)}},
    })
    attach_image(item, row, row.data.get("image"), "image", image_root)
    return item
