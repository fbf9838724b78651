"""HallusionBench (github.com/tianyi-lab/HallusionBench: ``HallusionBench.json``, a list of
records; images under ``hallusion_bench/`` beside it): ``category`` (VD visual dependent, VS
visual supplement), ``subcategory``, ``visual_input`` ("0": no image, "1"/"2": an image),
``set_id``, ``figure_id``, ``question_id``, ``question``, ``gt_answer`` ("1" yes, "0" no),
``gt_answer_details``, ``filename`` (``./hallusion_bench/VD/...png``, relative to the JSON's
folder; set --image-root otherwise).

Questions without an image (``visual_input`` "0") are skipped. Answers are yes/no. The id
joins category, subcategory, set, figure and question ids, as the benchmark's own scorer
groups them; the category is ``subcategory``.
"""

from __future__ import annotations

from pathlib import Path

from distill.core.paths import id_part, slug
from distill.ingest.converters.common import Skipped
from distill.ingest.converters.fields import attach_image, make_item, text_field
from distill.ingest.converters.rows import Row
from distill.ingest.sources.base import RawItem

_ID_PARTS = ("category", "subcategory", "set_id", "figure_id", "question_id")


def hallusionbench_item(row: Row, *, image_root: Path, split: str,
                        category_field: str) -> RawItem:
    filename = row.data.get("filename")
    if str(row.data.get("visual_input", "1")) == "0" or not filename:
        raise Skipped("no image")
    question = text_field(row, "question")
    gold = str(row.data.get("gt_answer", "")).strip()
    if gold not in ("0", "1"):
        raise row.error(f"must be '1' (yes) or '0' (no), got {gold!r}", "gt_answer")
    key = "_".join(str(row.data.get(part, "")) for part in _ID_PARTS)
    item = make_item(row, {
        "id": f"hallusionbench-{id_part(key)}", "question": question,
        "answer": "yes" if gold == "1" else "no", "answer_type": "yes_no",
        "category": slug(row.data.get(category_field)), "split": split,
        "source": "hallusionbench",
        "meta": {"source_id": key, "hb_category": row.data.get("category"),
                 "figure_id": row.data.get("figure_id"),
                 "gt_answer_details": row.data.get("gt_answer_details")},
    })
    attach_image(item, row, str(filename).removeprefix("./"), "filename", image_root)
    return item
