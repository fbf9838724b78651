"""ChartQA, in the two layouts it ships in:

* the authors' release (github.com/vis-nlp/ChartQA, ``ChartQA Dataset/test/test_human.json``
  and ``test_augmented.json``): a list of ``{"imgname", "query", "label"}``, the images in
  ``test/png/`` (set --image-root to the folder holding ``png/``, or to ``png/`` itself);
* the harnesses' copy (lmms-lab/ChartQA on the Hugging Face Hub, parquet): ``type``
  (``human_test`` / ``augmented_test``), ``question``, ``answer``, ``image``.

Answers are numbers or short texts. The official metric is relaxed accuracy (numbers
within 5%); `distill eval convert chartqa ... --relative-tolerance 0.05` records it in each
number item's meta for the judge, else numbers are judged exactly. The category is ``type``
when present, else the file's stem (``test_human``).
"""

from __future__ import annotations

from pathlib import Path

from distill.core.paths import id_part, slug
from distill.ingest.converters.common import answer_type_of, plain_number
from distill.ingest.converters.fields import attach_image, make_item, text_field
from distill.ingest.converters.rows import Row
from distill.ingest.sources.base import RawItem


def chartqa_item(row: Row, *, image_root: Path, split: str, category_field: str) -> RawItem:
    original = "query" in row.data or "imgname" in row.data
    question = text_field(row, "query" if original else "question")
    answer = text_field(row, "label" if original else "answer")
    kind = answer_type_of(answer)  # type: ignore[arg-type]
    category = row.data.get(category_field) or Path(row.file.split("[")[0]).stem
    item = make_item(row, {
        "id": f"chartqa-{id_part(category)}-{id_part(row.key)}", "question": question,
        "answer": plain_number(answer) if kind == "number" else answer,  # type: ignore[arg-type]
        "answer_type": kind, "category": slug(category), "split": split,
        "source": "chartqa", "meta": {"source_id": row.key,
                                      "imgname": row.data.get("imgname")},
    })
    if original:
        name = text_field(row, "imgname")
        image = name if (image_root / name).is_file() else f"png/{name}"  # type: ignore[operator]
        attach_image(item, row, image, "imgname", image_root)
    else:
        attach_image(item, row, row.data.get("image"), "image", image_root)
    return item
