"""AI2D as the evaluation harnesses read it (lmms-lab/ai2d on the Hugging Face Hub, the
test split of AllenAI's AI2D diagrams; parquet or the same rows as JSONL): ``question``,
``options`` (a list of texts), ``answer`` (the index of the right option, as a string or an
int) and ``image`` ({bytes, path} struct, or a path under --image-root). Items have no id
of their own: the row's position (0-based) is the id, as a harness's doc_id is.
"""

from __future__ import annotations

from pathlib import Path

from distill.core.paths import id_part, slug
from distill.ingest.converters.fields import attach_image, choices_field, make_item, text_field
from distill.ingest.converters.rows import Row
from distill.ingest.sources.base import RawItem
from distill.schemas.sample import CHOICE_LETTERS


def ai2d_item(row: Row, *, image_root: Path, split: str, category_field: str) -> RawItem:
    question = text_field(row, "question")
    choices = choices_field(row, "options")
    if not choices or len(choices) < 2:
        raise row.error("needs at least two options", "options")
    raw = row.data.get("answer")
    try:
        index = int(str(raw).strip())
    except ValueError:
        raise row.error(f"must be the index of the right option, got {raw!r}",
                        "answer") from None
    if not 0 <= index < len(choices):
        raise row.error(f"index {index} is out of range for {len(choices)} options", "answer")
    key = text_field(row, "id", required=False) or row.key
    item = make_item(row, {
        "id": f"ai2d-{id_part(key)}", "question": question, "choices": choices,
        "answer": CHOICE_LETTERS[index], "answer_type": "choice",
        "category": slug(row.data.get(category_field), "diagram"), "split": split,
        "source": "ai2d", "meta": {"source_id": key},
    })
    attach_image(item, row, row.data.get("image"), "image", image_root)
    return item
