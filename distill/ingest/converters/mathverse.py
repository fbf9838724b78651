"""MathVerse (AI4Math/MathVerse on the Hugging Face Hub: ``testmini.json``, a list of
records, or the same rows as parquet/JSONL): ``sample_index``, ``problem_index``,
``problem_version`` (Text Dominant, Text Lite, Vision Intensive, Vision Dominant, Vision
Only, Text Only), ``question``, ``image`` (a path under --image-root, or bytes),
``answer``, ``question_type`` (``multi-choice`` / ``free-form``), ``query_wo``,
``query_cot``, ``question_for_eval``, ``metadata`` {split, source, subject, subfield}.

Text Only items carry no image and are skipped. A multi-choice question lists its options
in the text (``Choices:\\nA:...\\nB:...``); when they are there they become the choices and
the stem the question, otherwise (Vision Only: the options are in the picture) the whole
question is kept and the gold letter is a text answer. An empty ``question`` (Vision Only)
takes ``query_wo``. The category is ``problem_version``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from distill.core.paths import id_part, slug
from distill.ingest.converters.common import Skipped, answer_type_of, plain_number
from distill.ingest.converters.fields import attach_image, make_item, text_field
from distill.ingest.converters.rows import Row
from distill.ingest.sources.base import RawItem
from distill.schemas.sample import CHOICE_LETTERS

_CHOICES = re.compile(r"\n\s*Choices\s*:\s*\n", re.IGNORECASE)
_OPTION = re.compile(r"^\s*\(?([A-Z])\)?\s*[:.)]\s*(.*)$")


def _split_choices(question: str) -> tuple[str, list[str]] | None:
    found = _CHOICES.search(question)
    if found is None:
        return None
    options = []
    for expected, line in zip(CHOICE_LETTERS, question[found.end():].strip().splitlines(),
                              strict=False):
        match = _OPTION.match(line)
        if match is None or match[1] != expected or not match[2].strip():
            return None
        options.append(match[2].strip())
    return (question[: found.start()].strip(), options) if len(options) >= 2 else None


def mathverse_item(row: Row, *, image_root: Path, split: str,
                   category_field: str) -> RawItem:
    image = row.data.get("image")
    if image in (None, "") or row.data.get("problem_version") == "Text Only":
        raise Skipped("no image")
    question = (text_field(row, "question", required=False)
                or text_field(row, "query_wo"))
    answer = text_field(row, "answer").strip()  # type: ignore[union-attr]
    key = text_field(row, "sample_index", required=False) or row.key
    metadata = row.data.get("metadata") if isinstance(row.data.get("metadata"), dict) else {}
    kind = row.data.get("question_type") or "free-form"
    fields: dict[str, Any] = {
        "id": f"mathverse-{id_part(key)}", "split": split, "source": "mathverse",
        "category": slug(row.data.get(category_field) or metadata.get(category_field)),
        "meta": {"source_id": key, "question_type": kind,
                 "problem_index": row.data.get("problem_index"),
                 **{k: metadata[k] for k in ("subject", "subfield", "source")
                    if isinstance(metadata.get(k), str)}},
    }
    split_up = _split_choices(question) if kind == "multi-choice" else None  # type: ignore[arg-type]
    if split_up is not None and answer.upper() in CHOICE_LETTERS[: len(split_up[1])]:
        fields |= {"question": split_up[0], "choices": split_up[1], "answer": answer.upper(),
                   "answer_type": "choice"}
    else:
        answer_kind = answer_type_of(answer)
        fields |= {"question": question,
                   "answer": plain_number(answer) if answer_kind == "number" else answer,
                   "answer_type": answer_kind}
    item = make_item(row, fields)
    attach_image(item, row, image, "image", image_root)
    return item
