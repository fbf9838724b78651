"""MMMU, AI2D, ChartQA, MathVerse and HallusionBench, each from a small file laid out as its
publishers ship it (see each converter module's docstring), through `distill eval convert`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.cli import main
from distill.core.answers import judge
from distill.core.errors import InputError
from distill.core.evalsets import load_eval_set
from distill.ingest.converters import ConvertStats, iter_converted
from tests.conftest import png_bytes


def _convert(fmt: str, source: Path, out: Path, *extra: str) -> list:
    assert main(["eval", "convert", fmt, str(source), "--out", str(out), *extra]) == 0
    return list(load_eval_set(out).samples)


def _image(seed: int) -> dict:
    return {"bytes": png_bytes(seed), "path": f"{seed}.png"}


def test_mmmu_parquet_single_image_items_and_skipped_multi_image(tmp_path: Path,
                                                                 capsys) -> None:
    nothing = {f"image_{n}": None for n in range(1, 8)}
    rows = [
        {**nothing, "id": "validation_Accounting_1", "question": "<image 1> What is the "
         "net income?", "options": "['$10', '$20', '$30']", "explanation": "",
         "image_1": _image(1), "img_type": "['Tables']", "answer": "B",
         "topic_difficulty": "Medium", "question_type": "multiple-choice",
         "subfield": "Financial Accounting"},
        {**nothing, "id": "validation_Physics_3", "question": "Compare <image 1> and "
         "<image 2>.", "options": "['left', 'right']", "image_1": _image(2),
         "image_2": _image(3), "img_type": "['Diagrams']", "answer": "A",
         "topic_difficulty": "Hard", "question_type": "multiple-choice", "subfield": "Optics",
         "explanation": ""},
        {**nothing, "id": "validation_Math_7", "question": "What is x in <image 1>?",
         "options": "[]", "image_1": _image(4), "img_type": "['Plots']", "answer": "1,200",
         "topic_difficulty": "Easy", "question_type": "open", "subfield": "Algebra",
         "explanation": ""},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "validation-00000-of-00001.parquet")
    samples = _convert("mmmu", tmp_path / "validation-00000-of-00001.parquet",
                       tmp_path / "out")
    assert "skipped 1 item(s): several images" in capsys.readouterr().err
    choice, open_ended = samples
    assert (choice.id, choice.answer, choice.choices) == ("mmmu-validation_Accounting_1", "B",
                                                          ["$10", "$20", "$30"])
    assert choice.category == "accounting" and choice.question.startswith("<image 1>")
    assert choice.meta["source_id"] == "validation_Accounting_1"
    assert (open_ended.answer_type, open_ended.answer) == ("number", "1200")
    assert (tmp_path / "out" / choice.image.path).read_bytes() == png_bytes(1)


def test_ai2d_rows_with_option_index_answers(tmp_path: Path) -> None:
    rows = [{"question": "Which stage comes after the egg?",
             "options": ["larva", "pupa", "adult", "egg"], "answer": "0",
             "image": _image(5)},
            {"question": "What eats grass?", "options": ["fox", "rabbit"], "answer": 1,
             "image": _image(6)}]
    pq.write_table(pa.Table.from_pylist([{**rows[0], "answer": "0"},
                                         {**rows[1], "answer": "1"}]),
                   tmp_path / "test.parquet")
    first, second = _convert("ai2d", tmp_path / "test.parquet", tmp_path / "out")
    assert (first.id, first.answer, first.choices[0]) == ("ai2d-0", "A", "larva")
    assert (second.answer, second.category, second.meta["source_id"]) == ("B", "diagram", "1")


def test_chartqa_authors_release_and_harness_parquet(tmp_path: Path) -> None:
    release = tmp_path / "ChartQA Dataset" / "test"
    (release / "png").mkdir(parents=True)
    (release / "png" / "41699051005347.png").write_bytes(png_bytes(7))
    (release / "png" / "multi_col_100.png").write_bytes(png_bytes(8))
    (release / "test_human.json").write_text(json.dumps([
        {"imgname": "41699051005347.png", "query": "What is the value of Japan?",
         "label": "1,234"},
        {"imgname": "multi_col_100.png", "query": "Which year is highest?", "label": "2019"},
        {"imgname": "multi_col_100.png", "query": "Is the line rising?", "label": "Yes"},
    ]))
    samples = _convert("chartqa", release / "test_human.json", tmp_path / "out")
    assert [(s.id, s.answer, s.answer_type) for s in samples] == [
        ("chartqa-test_human-0", "1234", "number"), ("chartqa-test_human-1", "2019", "number"),
        ("chartqa-test_human-2", "Yes", "text")]
    assert {s.category for s in samples} == {"test_human"}
    assert (tmp_path / "out" / samples[0].image.path).read_bytes() == png_bytes(7)
    # Exact by default; ChartQA's relaxed accuracy (5%) as an option, for number items only.
    assert judge("Answer: 1,200", samples[0]) == "wrong"
    relaxed = _convert("chartqa", release / "test_human.json", tmp_path / "relaxed",
                       "--relative-tolerance", "0.05")
    assert [s.meta.get("relative_tolerance") for s in relaxed] == [0.05, 0.05, None]
    assert judge("Answer: 1,200", relaxed[0]) == "correct"  # 2.8% off
    assert judge("Answer: 1,300", relaxed[0]) == "wrong"  # 5.3% off
    assert [s.content_hash() for s in relaxed] == [s.content_hash() for s in samples]

    pq.write_table(pa.Table.from_pylist([
        {"type": "augmented_test", "question": "How many bars?", "answer": "4",
         "image": _image(9)}]), tmp_path / "test-00000-of-00001.parquet")
    (sample,) = _convert("chartqa", tmp_path / "test-00000-of-00001.parquet", tmp_path / "o2")
    assert (sample.category, sample.answer) == ("augmented_test", "4")


def test_mathverse_choices_from_the_text_and_text_only_skipped(tmp_path: Path,
                                                                capsys) -> None:
    (tmp_path / "images_version_1-4").mkdir()
    (tmp_path / "images_version_1-4" / "image_1.png").write_bytes(png_bytes(10))
    meta = {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry",
            "subfield": "Angle"}
    records = [
        {"sample_index": "1", "problem_index": "1", "problem_version": "Text Dominant",
         "question": "As shown in the figure, find angle 1.\nChoices:\nA:30°\nB:40°\nC:50°",
         "image": "images_version_1-4/image_1.png", "answer": "B",
         "question_type": "multi-choice", "metadata": meta, "query_wo": "...",
         "query_cot": "...", "question_for_eval": "..."},
        {"sample_index": "2", "problem_index": "1", "problem_version": "Vision Only",
         "question": "", "image": "images_version_1-4/image_1.png", "answer": "C",
         "question_type": "multi-choice", "metadata": meta,
         "query_wo": "According to the question shown in the image, please directly answer "
                     "the question.", "query_cot": "...", "question_for_eval": "..."},
        {"sample_index": "3", "problem_index": "1", "problem_version": "Text Only",
         "question": "In triangle ABC ...", "image": "", "answer": "B",
         "question_type": "multi-choice", "metadata": meta, "query_wo": "...",
         "query_cot": "...", "question_for_eval": "..."},
        {"sample_index": "4", "problem_index": "2", "problem_version": "Vision Intensive",
         "question": "Find the length of AB.", "image": "images_version_1-4/image_1.png",
         "answer": "5", "question_type": "free-form", "metadata": meta, "query_wo": "...",
         "query_cot": "...", "question_for_eval": "..."},
    ]
    (tmp_path / "testmini.json").write_text(json.dumps(records))
    text_dominant, vision_only, free_form = _convert("mathverse", tmp_path / "testmini.json",
                                                     tmp_path / "out")
    assert "skipped 1 item(s): no image" in capsys.readouterr().err
    assert text_dominant.question == "As shown in the figure, find angle 1."
    assert (text_dominant.choices, text_dominant.answer) == (["30°", "40°", "50°"], "B")
    assert text_dominant.category == "text_dominant"
    assert vision_only.answer_type == "text" and vision_only.answer == "C"
    assert vision_only.question.startswith("According to the question shown")
    assert (free_form.answer_type, free_form.answer) == ("number", "5")


def test_hallusionbench_json_yes_no_and_no_visual_skipped(tmp_path: Path) -> None:
    (tmp_path / "hallusion_bench" / "VD" / "math").mkdir(parents=True)
    (tmp_path / "hallusion_bench" / "VD" / "math" / "0_0.png").write_bytes(png_bytes(11))
    records = [
        {"category": "VD", "subcategory": "math", "visual_input": "1", "set_id": "0",
         "figure_id": "0", "sample_note": "circle", "question_id": "0",
         "question": "Is the angle 90 degrees?", "gt_answer_details": "it is 90",
         "gt_answer": "1", "filename": "./hallusion_bench/VD/math/0_0.png"},
        {"category": "VS", "subcategory": "chart", "visual_input": "0", "set_id": "1",
         "figure_id": "0", "sample_note": "", "question_id": "0",
         "question": "Is 2020 higher than 2019?", "gt_answer_details": "",
         "gt_answer": "0", "filename": None},
    ]
    (tmp_path / "HallusionBench.json").write_text(json.dumps(records))
    stats = ConvertStats()
    rows = list(iter_converted("hallusionbench", tmp_path / "HallusionBench.json",
                               stats=stats))
    assert len(rows) == 1 and stats.skipped == {"no image": 1}
    (sample,) = _convert("hallusionbench", tmp_path / "HallusionBench.json", tmp_path / "out")
    assert (sample.id, sample.answer, sample.answer_type, sample.category) == (
        "hallusionbench-VD_math_0_0_0", "yes", "yes_no", "math")


@pytest.mark.parametrize(("fmt", "record", "expected"), [
    ("mmmu", {"id": "validation_Art_1", "question": "Which <image 1>?", "options": "['a', "
              "'b']", "answer": "C", "question_type": "multiple-choice", "image_1": "a.png"},
     r"hb.json\[0\]: field 'answer': answer 'C' is not a letter of the 2 options"),
    ("mmmu", {"id": "validation_Art_2", "question": "q <image 1>", "options": "[oops",
              "answer": "A", "question_type": "multiple-choice", "image_1": "a.png"},
     r"hb.json\[0\]: field 'options': not a list literal"),
    ("ai2d", {"question": "q?", "options": ["x", "y"], "answer": "5", "image": "a.png"},
     r"hb.json\[0\]: field 'answer': index 5 is out of range for 2 options"),
    ("hallusionbench", {"question": "q?", "gt_answer": "maybe", "visual_input": "1",
                        "filename": "a.png", "subcategory": "x"},
     r"hb.json\[0\]: field 'gt_answer': must be '1' \(yes\) or '0' \(no\)"),
    ("chartqa", {"imgname": "a.png", "label": "3"},
     r"hb.json\[0\]: field 'query': required field is missing"),
])
def test_new_converter_errors_name_file_row_and_field(image_dir: Path, fmt: str, record: dict,
                                                      expected: str) -> None:
    source = image_dir / "hb.json"
    source.write_text(json.dumps([record]))
    with pytest.raises(InputError, match=expected):
        for row in iter_converted(fmt, source):
            if isinstance(row, InputError):
                raise row
