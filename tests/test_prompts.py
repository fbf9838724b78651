"""Prompt templates: rendered per sample, named by content, strict about placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.errors import InputError
from distill.core.paths import PROMPTS_DIR
from distill.core.prompts import load_prompt
from distill.schemas import ImageRef, Sample

SAMPLE = Sample(id="s", image=ImageRef(path="a.png", sha256="0" * 64),
                question="Which animal is shown?", choices=["cat", "dog"], answer="B",
                answer_type="choice", category="animals", source="t")


@pytest.mark.parametrize("name", sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml")))
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
    with pytest.raises(InputError, match=r"shipped: \['cot', 'direct', 'think'\]"):
        load_prompt("nonexistent")
