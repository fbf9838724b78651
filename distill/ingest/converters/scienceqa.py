"""ScienceQA: the original problems.json (dict keyed by pid, each with ``split``; images at
``<image-root>/<split>/<pid>/image.png``), or parquet/JSONL rows with ``image, question,
choices, answer (index), hint, subject, ...``. Items without an image are skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.core.paths import id_part, slug
from distill.ingest.converters.fields import attach_image, choices_field, make_item, text_field
from distill.ingest.converters.rows import Row
from distill.ingest.sources.base import RawItem
from distill.schemas.sample import CHOICE_LETTERS


def scienceqa_item(row: Row, *, image_root: Path, split: str,
                   category_field: str) -> RawItem | None:
    """None for a text-only item (no image)."""
    image = row.data.get("image")
    if image is None or (isinstance(image, dict) and not image.get("bytes")
                         and not image.get("path")):
        return None
    question = text_field(row, "question")
    choices = choices_field(row)
    if not choices or len(choices) < 2:
        raise row.error("needs at least two choices", "choices")
    answer = row.data.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise row.error("must be the index of the correct choice (an integer)", "answer")
    if not 0 <= answer < len(choices):
        raise row.error(f"index {answer} is out of range for {len(choices)} choices", "answer")
    hint = text_field(row, "hint", required=False)
    row_split = row.data.get("split")
    fields: dict[str, Any] = {
        "id": f"scienceqa-{id_part(row.key)}",
        "question": f"Context: {hint.strip()}\n{question}" if hint else question,
        "choices": choices, "answer": CHOICE_LETTERS[answer], "answer_type": "choice",
        "category": slug(row.data.get(category_field)), "split": split, "source": "scienceqa",
        "meta": {"source_id": row.key, "source_split": row_split,
                 **{k: row.data[k] for k in ("grade", "subject", "topic", "skill")
                    if isinstance(row.data.get(k), str)}},
    }
    item = make_item(row, fields)
    if isinstance(image, str) and "/" not in image and isinstance(row_split, str):
        # The original release: problems.json names "image.png"; the file is under
        # <split>/<pid>/ (inside an images/ folder in some copies).
        for candidate in (f"{row_split}/{row.key}/{image}",
                          f"images/{row_split}/{row.key}/{image}"):
            if (image_root / candidate).is_file():
                image = candidate
                break
        else:
            raise row.error(f"image not found at {image_root}/{row_split}/{row.key}/{image} "
                            "(set --image-root to the folder holding train/ val/ test/)",
                            "image")
    attach_image(item, row, image, "image", image_root)
    return item
