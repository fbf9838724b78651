"""The `easy-vqa` package's real shapes VQA set (4,000 train + 1,000 test images of
colored shapes, about 48k questions), read from the installed package's files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from distill.ingest.sources.base import RawItem, SourceRow

SOURCE = "easy-vqa"


SHAPES = {"circle", "rectangle", "triangle"}


def question_category(answer: str) -> str:
    """presence (yes/no), shape or color: the three kinds of easy-vqa question."""
    if answer in ("yes", "no"):
        return "presence"
    return "shape" if answer in SHAPES else "color"


def iter_easy_vqa(splits: tuple[str, ...] = ("train", "test"),
                  limit_per_split: int | None = None) -> Iterator[SourceRow]:
    import easy_vqa

    readers = {
        "train": (easy_vqa.get_train_questions, easy_vqa.get_train_image_paths),
        "test": (easy_vqa.get_test_questions, easy_vqa.get_test_image_paths),
    }
    for split in splits:
        get_questions, get_images = readers[split]
        questions, answers, image_ids = get_questions()
        image_paths = get_images()
        root = Path(next(iter(image_paths.values()))).parent
        for index, (question, answer, image_id) in enumerate(
            zip(questions, answers, image_ids, strict=True)
        ):
            if limit_per_split is not None and index >= limit_per_split:
                break
            answer_type = "yes_no" if answer in ("yes", "no") else "text"
            yield RawItem(
                fields={
                    "id": f"easyvqa-{split}-{index:06d}",
                    "question": question[0].upper() + question[1:],
                    "answer": answer,
                    "answer_type": answer_type,
                    "category": question_category(answer),
                    "source": SOURCE,
                    "split": split,
                    "meta": {"image_id": int(image_id)},
                },
                file=f"{SOURCE}[{split}]",
                line=index,
                image_path=Path(image_paths[image_id]).name,
                image_root=root,
            )
