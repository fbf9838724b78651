"""Prompt templates: rendered per sample, named by content, strict about placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.errors import InputError
from distill.core.paths import PROMPTS_DIR
from distill.core.prompts import load_prompt, shipped_prompts
from distill.schemas import ImageRef, Sample

SAMPLE = Sample(id="s", image=ImageRef(path="a.png", sha256="0" * 64),
                question="Which animal is shown?", choices=["cat", "dog"], answer="B",
                answer_type="choice", category="animals", source="t")


TEACHER_PROMPTS = [path.stem for path in shipped_prompts("teacher")]


@pytest.mark.parametrize("name", TEACHER_PROMPTS)
def test_shipped_prompts_render_every_answer_type(name: str) -> None:
    prompt = load_prompt(name)
    system, user = prompt.render(SAMPLE)
    assert "Which animal is shown?" in user and "A. cat\nB. dog" in user
    number = SAMPLE.model_copy(update={"choices": None, "answer": "3", "answer_type": "number"})
    assert "number" in prompt.render(number)[1] and "A. cat" not in prompt.render(number)[1]
    assert system and len(prompt.hash) == 64


def test_hash_follows_content_not_file_name(tmp_path: Path) -> None:
    text = (PROMPTS_DIR / "cot.yaml").read_text()
    (tmp_path / "copy.yaml").write_text(text)
    (tmp_path / "edited.yaml").write_text(text.replace("step by step", "carefully"))
    assert load_prompt(tmp_path / "copy.yaml").hash == load_prompt("cot").hash
    assert load_prompt(tmp_path / "edited.yaml").hash != load_prompt("cot").hash


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("id: x\nanswer_format: answer_line\nuser: '{{ questoin }}'\n", "user",
         "unknown placeholder(s) ['questoin']"),
        ("id: x\nanswer_format: answer_line\nuser: '{{ question '\n", "user", "syntax"),
        ("id: x\nanswer_format: essay\nuser: '{{ question }}'\n", "answer_format", "one of"),
        ("id: x\nanswer_format: direct\nuser: q\ntemperature: 1\n", "temperature", "unknown key"),
        ("answer_format: direct\nuser: q\n", "id", "required"),
    ],
)
def test_bad_prompt_files_fail_naming_file_and_field(tmp_path: Path, text, field, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_prompt(path)
    assert info.value.file == str(path) and info.value.field == field
    assert message in str(info.value)


def test_unknown_prompt_name_lists_the_shipped_ones() -> None:
    shipped = (r"shipped: \['answer-extract', 'cot', 'direct', 'judge-rubric', 'judge-same', "
               r"'question-cot', 'question-direct', 'think'\]")
    with pytest.raises(InputError, match=shipped):
        load_prompt("nonexistent")


def test_the_extraction_prompt_is_no_teacher_prompt() -> None:
    """The answer judge's model tier shows a model another model's response; no teacher or
    student is ever given that prompt."""
    extract = load_prompt("answer-extract", kind="extract")
    system, user = extract.render(Sample(id="s", image=ImageRef(path="a.png", sha256="0" * 64),
                                         question="How many?", answer="3",
                                         answer_type="number", category="c", source="t"),
                                  response="There are 3.")
    assert "There are 3." in user and "Answer: NONE" in user and system
    with pytest.raises(InputError, match="a teacher prompt is needed"):
        load_prompt("answer-extract")


def test_teacher_prompt_hashes_did_not_move() -> None:
    """Judge prompts added placeholders of their own; the teacher prompts' identity (and
    every trace key made with them) stayed where it was."""
    assert {name: load_prompt(name).hash[:16] for name in ("cot", "direct", "think")} == {
        "cot": "5d11b675e81254e9", "direct": "91e9ddb2cd88447a", "think": "5eef670856503262"}


def test_judge_prompts_take_what_they_judge() -> None:
    rubric = load_prompt("judge-rubric", "judge")
    assert rubric.score_range == (1, 5) and rubric.answer_format == "score"
    _, user = rubric.render(SAMPLE, reasoning="I see a cat.", answer="A")
    assert "I see a cat." in user and "final answer: A" in user and "A. cat" in user
    same = load_prompt("judge-same", "judge")
    _, user = same.render(SAMPLE, answer_a="a cat", answer_b="kitty")
    assert "Answer A: a cat" in user and "Answer B: kitty" in user
    with pytest.raises(InputError, match="a teacher prompt is needed") as info:
        load_prompt("judge-rubric")
    assert info.value.field == "kind"
    with pytest.raises(InputError, match="a judge prompt is needed"):
        load_prompt("cot", "judge")


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("id: j\nkind: judge\nanswer_format: score\nuser: '{{ reasoning }}'\n", "score_range",
         "needs score_range"),
        ("id: j\nkind: judge\nanswer_format: score\nscore_range: [5, 1]\nuser: q\n",
         "score_range", "LOW < HIGH"),
        ("id: j\nkind: judge\nanswer_format: same\nuser: '{{ reasoning }}'\n", "user",
         "unknown placeholder(s) ['reasoning']"),
        ("id: j\nanswer_format: answer_line\nuser: '{{ answer }}'\n", "user",
         "unknown placeholder(s) ['answer']"),
        ("id: j\nkind: judge\nanswer_format: answer_line\nuser: q\n", "answer_format",
         "one of ['score', 'same']"),
    ],
)
def test_bad_judge_prompts_fail_naming_the_field(tmp_path: Path, text, field, message) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_prompt(path, "judge")
    assert info.value.field == field and message in str(info.value)


def test_shipped_prompts_are_told_apart_by_kind() -> None:
    assert [p.stem for p in shipped_prompts("teacher")] == ["cot", "direct", "think"]
    assert [p.stem for p in shipped_prompts("judge")] == ["judge-rubric", "judge-same"]
    assert [p.stem for p in shipped_prompts("student")] == ["question-cot", "question-direct"]


def test_a_student_prompt_is_never_a_teachers_and_keeps_its_answer_format() -> None:
    """The question alone is for a student trained from scratch: a teacher given it would
    not know to end on an "Answer:" line. An eval of that student still reads its outputs
    in the prompt's format (the runner looks the format up by id and hash)."""
    from distill.core.prompts import STUDENT_KINDS, builtin_answer_format

    with pytest.raises(InputError, match="a teacher prompt is needed"):
        load_prompt("question-cot")
    for name, answer_format in (("question-cot", "answer_line"), ("question-direct", "direct")):
        prompt = load_prompt(name, kind=STUDENT_KINDS)
        assert prompt.render(SAMPLE)[1] == "Which animal is shown?\nOptions:\nA. cat\nB. dog"
        assert builtin_answer_format(prompt.id, prompt.hash) == answer_format
    assert load_prompt("cot", kind=STUDENT_KINDS).id == "cot"  # a teacher's, as by default
