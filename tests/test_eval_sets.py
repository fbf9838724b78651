"""Eval sets (ingest folders and Sample JSONL) and the MathVista / ScienceQA / MMStar
converters on small hand-made files in those layouts; bad input names file, line, field."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.cli import main
from distill.core.answers import judge
from distill.core.errors import InputError
from distill.core.evalsets import load_eval_set
from distill.ingest.converters import iter_converted
from distill.ingest.pipeline import IngestOptions, ingest
from distill.ingest.sources.digits import DigitsConfig, iter_digits
from tests.conftest import png_bytes, write_jsonl


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evalsets") / "digits"
    ingest(iter_digits(DigitsConfig(seed=1, counts={"val": 4, "test": 12})),
           IngestOptions(out=out))
    return out


def test_ingest_folder_splits_and_specs(digits_dir: Path) -> None:
    test = load_eval_set(digits_dir)
    assert len(test.samples) == 12 and {s.split for s in test.samples} == {"test"}
    assert test.spec == f"{digits_dir.resolve()}:test" and test.name == "digits:test"
    assert test.image_root == digits_dir.resolve()
    val = load_eval_set(f"{digits_dir}:val")
    assert len(val.samples) == 4 and load_eval_set(digits_dir, split="val").hash == val.hash
    assert val.hash != test.hash
    # The stored spec loads the same items again.
    assert load_eval_set(test.spec).hash == test.hash
    with pytest.raises(InputError, match=r"no split 'dev'.*\['test', 'val'\]"):
        load_eval_set(digits_dir, split="dev")


def test_jsonl_of_samples_hashes_like_the_folder_in_any_order(digits_dir: Path) -> None:
    test = load_eval_set(digits_dir)
    rows = [sample.model_dump_json() for sample in test.samples]
    random.Random(0).shuffle(rows)
    path = write_jsonl(digits_dir / "shuffled.jsonl", rows)
    try:
        from_file = load_eval_set(path)
        assert from_file.hash == test.hash and from_file.name == "shuffled"
        assert from_file.image_root == digits_dir.resolve()
        with pytest.raises(InputError, match="only be chosen for an ingest folder"):
            load_eval_set(path, split="test")
    finally:
        path.unlink()


def test_bad_eval_set_files_name_file_line_and_field(digits_dir: Path, tmp_path: Path) -> None:
    rows = [s.model_dump(mode="json") for s in load_eval_set(digits_dir).samples[:3]]
    bad = dict(rows[1], answer_type="numbr")
    path = write_jsonl(tmp_path / "bad.jsonl", [rows[0], bad, rows[2]])
    with pytest.raises(InputError) as info:
        load_eval_set(path)
    assert (info.value.line, info.value.field) == (2, "answer_type")
    assert str(info.value).startswith(f"{path}:2: field 'answer_type'")
    write_jsonl(path, [rows[0], rows[1], rows[0]])
    with pytest.raises(InputError, match=r"bad.jsonl:3: field 'id': duplicate sample id"):
        load_eval_set(path)
    write_jsonl(path, [rows[0], "{not json"])
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        load_eval_set(path)
    with pytest.raises(InputError, match="eval set not found"):
        load_eval_set(tmp_path / "nothing-here")
    # The CLI says the same in one line and exits 2.
    assert main(["eval", "--model", "hf:x", "--data", str(path)]) == 2


def test_changed_shard_and_wrong_stage_are_refused(digits_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_dir, copy)
    shard = next((copy / "samples" / "test").glob("*.jsonl"))
    shard.write_text(shard.read_text().replace("What is", "What's", 1))
    with pytest.raises(InputError, match="shard changed since ingestion"):
        load_eval_set(copy)
    assert load_eval_set(copy, verify=False).samples  # still readable on request
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"stage": "ingest"',
                                                     '"stage": "generate"'))
    with pytest.raises(InputError, match="'generate' stage folder"):
        load_eval_set(copy)


# --- converters ---------------------------------------------------------------------------------


def _convert(fmt: str, source: Path, out: Path, *extra: str) -> list:
    assert main(["eval", "convert", fmt, str(source), "--out", str(out), *extra]) == 0
    return list(load_eval_set(out).samples)


def test_mathvista_json_dict_keyed_by_pid(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for pid in ("1", "2", "3"):
        (tmp_path / "images" / f"{pid}.png").write_bytes(png_bytes(int(pid)))
    meta = {"split": "testmini", "task": "figure question answering", "grade": "college"}
    records = {
        "1": {"pid": "1", "question": "What is the angle?", "image": "images/1.png",
              "choices": ["30°", "45°", "60°"], "unit": None, "precision": None,
              "answer": "45°", "question_type": "multi_choice", "answer_type": "text",
              "metadata": meta},
        "2": {"pid": "2", "question": "How many bars are there?", "image": "images/2.png",
              "choices": None, "unit": "", "precision": None, "answer": "7",
              "question_type": "free_form", "answer_type": "integer",
              "metadata": dict(meta, task="math word problem")},
        "3": {"pid": "3", "question": "What is the slope?", "image": "images/3.png",
              "choices": None, "unit": None, "precision": 2.0, "answer": "1.25",
              "question_type": "free_form", "answer_type": "float", "metadata": meta},
    }
    source = tmp_path / "testmini.json"
    source.write_text(json.dumps(records))
    samples = {s.id: s for s in _convert("mathvista", source, tmp_path / "out")}
    choice, count, slope = samples["mathvista-1"], samples["mathvista-2"], samples["mathvista-3"]
    assert choice.answer_type == "choice" and choice.answer == "B"
    assert choice.choices == ["30°", "45°", "60°"]
    assert choice.category == "figure_question_answering" and choice.split == "test"
    assert (count.answer_type, count.answer, count.category) == ("number", "7",
                                                                 "math_word_problem")
    assert slope.answer == "1.25" and slope.meta["precision"] == 2.0
    # The judge grades to the item's stated precision, as MathVista does.
    assert judge("Answer: 1.2483", slope) == "correct" and judge("1.2", slope) == "wrong"
    assert judge("Answer: 45 degrees", choice) == "correct"
    out_images = tmp_path / "out" / choice.image.path
    assert out_images.read_bytes() == png_bytes(1)


def test_mathvista_parquet_with_decoded_image_bytes(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([
        {"pid": "10", "question": "Which is larger?", "image": "images/10.jpg",
         "decoded_image": {"bytes": png_bytes(10), "path": "10.jpg"},
         "choices": ["left", "right"], "answer": "right", "question_type": "multi_choice",
         "answer_type": "text", "metadata": {"task": "visual question answering"}},
    ])
    pq.write_table(table, tmp_path / "testmini.parquet")
    (sample,) = _convert("mathvista", tmp_path / "testmini.parquet", tmp_path / "out")
    assert (sample.answer, sample.category) == ("B", "visual_question_answering")
    assert (tmp_path / "out" / sample.image.path).read_bytes() == png_bytes(10)


def test_scienceqa_problems_json_with_split_folders(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "test" / "5").mkdir(parents=True)
    (images / "test" / "5" / "image.png").write_bytes(png_bytes(5))
    problems = {
        "5": {"question": "Which animal is a mammal?", "choices": ["frog", "whale", "trout"],
              "answer": 1, "hint": "Look at the picture.", "image": "image.png",
              "task": "closed choice", "grade": "grade4", "subject": "natural science",
              "topic": "biology", "category": "Classification", "skill": "x",
              "lecture": "...", "solution": "...", "split": "test"},
        "6": {"question": "Which word comes first?", "choices": ["cat", "dog"], "answer": 0,
              "hint": "", "image": None, "subject": "language science", "split": "test"},
    }
    source = tmp_path / "problems.json"
    source.write_text(json.dumps(problems))
    (sample,) = _convert("scienceqa", source, tmp_path / "out", "--image-root", str(images))
    assert sample.id == "scienceqa-5" and sample.answer == "B"
    assert sample.question == "Context: Look at the picture.\nWhich animal is a mammal?"
    assert sample.category == "natural_science" and sample.meta["grade"] == "grade4"
    again = list(load_eval_set(tmp_path / "out").samples)
    assert again == [sample]


def test_scienceqa_parquet_hf_layout_and_category_field(tmp_path: Path) -> None:
    rows = [{"image": {"bytes": png_bytes(i), "path": None} if i != 1 else None,
             "question": f"Question {i}?", "choices": ["yes", "no"], "answer": i % 2,
             "hint": "", "subject": "social science", "topic": "geography"}
            for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    stats_rows = list(iter_converted("scienceqa", tmp_path / "test.parquet",
                                     category_field="topic"))
    assert len(stats_rows) == 2  # the text-only row is skipped
    samples = _convert("scienceqa", tmp_path / "test.parquet", tmp_path / "out",
                       "--category-field", "topic")
    assert [(s.id, s.answer, s.category) for s in samples] == [
        ("scienceqa-0", "A", "geography"), ("scienceqa-2", "A", "geography")]


def test_mmstar_parquet_with_options_in_the_question(tmp_path: Path) -> None:
    rows = [
        {"index": 0, "question": "Which shape is shown?\nOptions: A: a circle, B: a square, "
         "C: a triangle, D: a star", "image": {"bytes": png_bytes(20), "path": None},
         "answer": "C", "category": "coarse perception", "l2_category": "image style",
         "meta_info": {"source": "x"}},
        {"index": 1, "question": "What color?\nOptions: A: red (dark), B: blue",
         "image": {"bytes": png_bytes(21), "path": None}, "answer": "b",
         "category": "fine-grained perception", "l2_category": "attribute",
         "meta_info": {"source": "y"}},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mmstar.parquet")
    first, second = _convert("mmstar", tmp_path / "mmstar.parquet", tmp_path / "out")
    assert first.question == "Which shape is shown?"
    assert first.choices == ["a circle", "a square", "a triangle", "a star"]
    assert (first.answer, first.category) == ("C", "coarse_perception")
    assert second.choices == ["red (dark)", "blue"] and second.answer == "B"
    assert second.category == "fine_grained_perception"


def test_mmstar_vlmevalkit_tsv_with_base64_images(tmp_path: Path) -> None:
    image = base64.b64encode(png_bytes(30, size=(40, 40))).decode()
    lines = ["index\tquestion\tA\tB\tC\tanswer\tcategory\timage",
             f"7\tHow many dots?\t1\t2\t3\tC\tinstance reasoning\t{image}"]
    (tmp_path / "MMStar.tsv").write_text("\n".join(lines) + "\n")
    (sample,) = _convert("mmstar", tmp_path / "MMStar.tsv", tmp_path / "out")
    assert (sample.id, sample.choices, sample.answer) == ("mmstar-7", ["1", "2", "3"], "C")
    assert (tmp_path / "out" / sample.image.path).read_bytes() == png_bytes(30, size=(40, 40))


@pytest.mark.parametrize(("fmt", "name", "content", "expected"), [
    ("mathvista", "mv.json",
     {"9": {"pid": "9", "question": "q?", "image": "a.png", "choices": ["x", "y"],
            "answer": "z", "question_type": "multi_choice"}},
     r"mv.json\[9\]: field 'answer': answer 'z' is not one of the choices"),
    ("mathvista", "mv.jsonl",
     [{"pid": "1", "question": "q?", "image": "a.png", "answer": "1"},
      {"pid": "2", "image": "a.png", "answer": "1"}],
     r"mv.jsonl:2: field 'question': required field is missing"),
    ("scienceqa", "sq.jsonl",
     [{"question": "q?", "choices": ["a", "b"], "answer": 2, "image": "a.png"}],
     r"sq.jsonl:1: field 'answer': index 2 is out of range for 2 choices"),
    ("mmstar", "ms.jsonl",
     [{"index": 1, "question": "What is it?", "answer": "A", "image": "a.png"}],
     r"ms.jsonl:1: field 'question': no options"),
    ("mmstar", "ms.jsonl",
     [{"index": 1, "question": "Pick.\nOptions: A: x, B: y", "answer": "E",
       "image": "a.png"}],
     r"ms.jsonl:1: field 'answer': answer must be one of 'AB', got 'E'"),
    ("mmstar", "ms.jsonl",
     [{"index": 1, "question": "Pick.\nOptions: A: x, B: y", "answer": "A",
       "image": "missing.png"}],
     r"ms.jsonl:1: field 'image': image file not found"),
])
def test_converter_errors_name_file_row_and_field(tmp_path: Path, image_dir: Path, fmt: str,
                                                  name: str, content, expected: str) -> None:
    source = image_dir / name
    if name.endswith(".jsonl"):
        write_jsonl(source, content)
    else:
        source.write_text(json.dumps(content))
    with pytest.raises(InputError, match=expected):
        list(ingest(iter_converted(fmt, source), IngestOptions(out=tmp_path / "out")).counts)
    assert not (tmp_path / "out").exists()  # a failed conversion leaves nothing behind


def test_converter_skip_mode_keeps_good_rows(tmp_path: Path, image_dir: Path) -> None:
    rows = [{"index": i, "question": "Pick.\nOptions: A: x, B: y",
             "answer": "A" if i != 1 else "Q", "image": "a.png"} for i in range(3)]
    source = write_jsonl(image_dir / "ms.jsonl", [*rows, "{torn"])
    out = tmp_path / "out"
    assert main(["eval", "convert", "mmstar", str(source), "--out", str(out),
                 "--on-error", "skip"]) == 0
    assert [s.id for s in load_eval_set(out).samples] == ["mmstar-0", "mmstar-2"]
    rejects = (out / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 2 and "ms.jsonl:2" in rejects[0] and "ms.jsonl:4" in rejects[1]
