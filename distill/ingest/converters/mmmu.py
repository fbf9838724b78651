"""MMMU (MMMU/MMMU on the Hugging Face Hub: parquet per subject and split, or the same rows as
JSONL): ``id`` (``validation_Accounting_1``), ``question`` (with ``<image 1>`` placeholders),
``options`` (a Python-literal list in a string, e.g. ``"['A', 'B']"``), ``answer`` (a letter
for ``question_type`` ``multiple-choice``, text for ``open``), ``image_1`` .. ``image_7``
({bytes, path} structs or None), ``img_type``, ``subfield``, ``topic_difficulty``,
``explanation``.

Only single-image questions are converted: an item with more than one image (columns
image_2.. set, or ``<image 2>`` referred to) is skipped and counted. The question text is
kept as published (``<image 1>`` included), so a harness's prompt that quotes it still
matches on import. The category is the subject, read from the id.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from distill.core.paths import id_part, slug
from distill.ingest.converters.common import Skipped, answer_type_of, plain_number
from distill.ingest.converters.fields import attach_image, make_item, text_field
from distill.ingest.converters.rows import Row
from distill.ingest.sources.base import RawItem
from distill.schemas.sample import CHOICE_LETTERS

IMAGE_COLUMNS = tuple(f"image_{n}" for n in range(1, 8))
_PLACEHOLDER = re.compile(r"<image (\d+)>")
_ID = re.compile(r"^(?:dev|validation|test)_(?P<subject>.+)_\d+$")


def _options(row: Row) -> list[str]:
    value = row.data.get("options")
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value) if value.strip() else []
        except (ValueError, SyntaxError):
            raise row.error("not a list literal like \"['x', 'y']\"", "options") from None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise row.error("must be a list of options", "options")
    return [str(v).strip() for v in value]


def mmmu_item(row: Row, *, image_root: Path, split: str, category_field: str) -> RawItem:
    item_id = text_field(row, "id", required=False) or row.key
    question = text_field(row, "question")
    options = _options(row)
    images = [column for column in IMAGE_COLUMNS if row.data.get(column) not in (None, "")]
    referred = {int(n) for n in _PLACEHOLDER.findall(question + " " + " ".join(options))}
    if len(images) > 1 or len(referred - {1}) > 0:
        raise Skipped("several images")
    if not images:
        raise Skipped("no image")
    answer = text_field(row, "answer")
    kind = row.data.get("question_type") or ("multiple-choice" if options else "open")
    subject = _ID.match(item_id)
    category = (row.data.get(category_field) if category_field != "subject"
                else (subject["subject"] if subject else row.data.get("subfield")))
    fields: dict[str, Any] = {
        "id": f"mmmu-{id_part(item_id)}", "question": question, "split": split,
        "source": "mmmu", "category": slug(category),
        "meta": {"source_id": item_id, "question_type": kind,
                 **{k: row.data[k] for k in ("subfield", "topic_difficulty", "img_type")
                    if isinstance(row.data.get(k), str)}},
    }
    if kind == "multiple-choice":
        letter = answer.strip().upper()  # type: ignore[union-attr]
        if len(options) < 2 or letter not in CHOICE_LETTERS[: len(options)]:
            raise row.error(f"answer {answer!r} is not a letter of the {len(options)} options",
                            "answer")
        fields |= {"choices": options, "answer": letter, "answer_type": "choice"}
    else:
        kind_of = answer_type_of(answer)  # type: ignore[arg-type]
        fields |= {"answer": plain_number(answer) if kind_of == "number" else answer,  # type: ignore[arg-type]
                   "answer_type": kind_of}
    item = make_item(row, fields)
    attach_image(item, row, row.data[images[0]], images[0], image_root)
    return item
