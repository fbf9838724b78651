"""Answer extraction and judging on a table of real-looking model outputs, and a
property-based test that no input makes the parser, the extractor or the judge crash."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.core.answers import (
    choice_letter,
    clean_answer,
    judge,
    normalize_text,
    parse_number,
    parse_output,
    yes_no,
)
from distill.schemas import ImageRef, Sample
from distill.schemas.sample import CHOICE_LETTERS

_IMAGE = ImageRef(path="a.png", sha256="0" * 64)
_CHOICES = ["30°", "45°", "60°", "90°"]


def sample(answer: str, answer_type: str = "number", choices: list[str] | None = None) -> Sample:
    if answer_type == "choice" and choices is None:
        choices = _CHOICES
    return Sample(id="s", image=_IMAGE, question="q?", answer=answer, answer_type=answer_type,
                  choices=choices, category="c", source="test")


# (raw model output, gold answer, answer type, expected extracted answer, expected judgment)
TABLE = [
    # --- chain of thought in thinking tags --------------------------------------------------
    ("<think>The digits are 3 and 5. 3 + 5 = 8.</think>\nAnswer: 8", "8", "number", "8",
     "correct"),
    ("<think>\nTop-left is 7, bottom-right is 2.\n7 - 2 = 5\n</think>\n\nThe answer is 5.",
     "5", "number", "5", "correct"),
    # Qwen-style: the opening tag is in the prompt, only the closing tag is generated.
    ("I see a 4 and a 6. 4 + 6 = 10, which is even.\n</think>\n\nAnswer: yes", "yes",
     "yes_no", "yes", "correct"),
    # An answer inside the thinking is a draft; the one after the tags counts.
    ("<think>Answer: 7? No wait, the last digit is a 1, so 3+4+1 = 8.</think>Answer: 8", "8",
     "number", "8", "correct"),
    ("<thinking>2 and 9 -> 9 - 2 = 7</thinking>\n**Final Answer:** 7", "7", "number", "7",
     "correct"),
    # Truncated thinking: no answer was ever given.
    ("<think>The first digit looks like a 3, or maybe an 8. Let me look again at the",
     "11", "number", None, "unparseable"),
    # --- answer lines -------------------------------------------------------------------------
    ("Step 1: the digits are 1, 2, 6.\nStep 2: 1 + 2 + 6 = 9.\nAnswer: 9", "9", "number", "9",
     "correct"),
    ("Adding them up gives 12.\n\nFinal answer: 12.", "12", "number", "12", "correct"),
    ("ANSWER: 14", "14", "number", "14", "correct"),
    ("**Answer**: 3", "3", "number", "3", "correct"),
    ("Answer:8", "8", "number", "8", "correct"),
    ("Answer: 8\n\nI hope this helps!", "8", "number", "8", "correct"),
    ("Answer: 6\nWait, I misread the 0. Recounting: 3 digits are even.\nAnswer: 3", "3",
     "number", "3", "correct"),
    ("The sum is 11, so the answer is 11.", "11", "number", "11", "correct"),
    ("So the final answer is: 4", "4", "number", "4", "correct"),
    ("Let me add.\n\n### Final Answer\n\n13", "13", "number", "13", "correct"),
    # --- boxed --------------------------------------------------------------------------------
    ("We have 3 + 4 = 7.\nTherefore the sum is $\\boxed{7}$.", "7", "number", "7", "correct"),
    ("The ratio is \\boxed{\\frac{3}{4}}", "0.75", "number", "\\frac{3}{4}", "correct"),
    ("**Final Answer**\n\n\\boxed{B}", "B", "choice", "B", "correct"),
    ("Answer: \\boxed{10}", "10", "number", "10", "correct"),
    ("First \\boxed{3}, but correcting the misread digit: \\boxed{5}", "5", "number", "5",
     "correct"),
    # --- numbers with units and spellings ----------------------------------------------------
    ("Answer: 15 apples", "15", "number", "15 apples", "correct"),
    ("Answer: 3.0 cm", "3", "number", "3.0 cm", "correct"),
    ("Answer: 45%", "45", "number", "45%", "correct"),
    ("Answer: 1,200", "1200", "number", "1,200", "correct"),
    ("Answer: $12$", "12", "number", "12", "correct"),
    ("Answer: −3", "-3", "number", "−3", "correct"),
    ("Answer: 2.50", "2.5", "number", "2.50", "correct"),
    ("Answer: 7", "8", "number", "7", "wrong"),
    ("Answer: three", "3", "number", "three", "correct"),
    ("Answer: Three.", "4", "number", "Three", "wrong"),
    ("Answer: 12 cm²", "12", "number", "12 cm²", "correct"),
    ("Answer: 1/2", "0.5", "number", "1/2", "correct"),
    ("Answer: none of them", "0", "number", "none of them", "unparseable"),
    # --- choice letters in several styles -----------------------------------------------------
    ("Answer: B", "B", "choice", "B", "correct"),
    ("Answer: (C)", "B", "choice", "(C)", "wrong"),
    ("Answer: B. 45°", "B", "choice", "B. 45°", "correct"),
    ("Answer: (b)", "B", "choice", "(b)", "correct"),
    ("Answer: **D**", "D", "choice", "D", "correct"),
    ("The correct answer is (A).", "A", "choice", "(A)", "correct"),
    ("Answer: option C", "C", "choice", "option C", "correct"),
    ("Answer: 45°", "B", "choice", "45°", "correct"),
    ("Answer: A or B", "A", "choice", "A or B", "unparseable"),
    ("Answer: E", "A", "choice", "E", "unparseable"),
    # --- yes / no ------------------------------------------------------------------------------
    ("Answer: No.", "no", "yes_no", "No", "correct"),
    ("Answer: **Yes**", "yes", "yes_no", "Yes", "correct"),
    ("Answer: Yes, the sum (14) is even.", "no", "yes_no", "Yes, the sum (14) is even",
     "wrong"),
    ("Answer: The sum is 9, so no.", "no", "yes_no", "The sum is 9, so no", "correct"),
    ("Answer: maybe", "yes", "yes_no", "maybe", "unparseable"),
    # --- direct-mode outputs: the whole (short) output is the answer ---------------------------
    ("8", "8", "number", "8", "correct"),
    ("B", "B", "choice", "B", "correct"),
    ("yes", "yes", "yes_no", "yes", "correct"),
    ("  12.\n", "12", "number", "12", "correct"),
    # --- text answers -------------------------------------------------------------------------
    ("Answer: The Circle.", "circle", "text", "The Circle", "correct"),
    ("Answer: blue", "red", "text", "blue", "wrong"),
    # --- garbage ------------------------------------------------------------------------------
    ("", "8", "number", None, "unparseable"),
    ("   \n\n", "8", "number", None, "unparseable"),
    ("the the the the the the the the the the the the the the the the the the the the", "8",
     "number", None, "unparseable"),
    ("I'm sorry, but I can't help with identifying the content of this image in detail.",
     "8", "number", None, "unparseable"),
    ("Answer:", "8", "number", None, "unparseable"),
    ("<think></think>", "yes", "yes_no", None, "unparseable"),
    ("\\boxed{", "8", "number", None, "unparseable"),
    ("Answer: ???", "8", "number", "???", "unparseable"),
]


@pytest.mark.parametrize(("raw", "gold", "answer_type", "extracted", "correctness"), TABLE,
                         ids=[f"{i:02d}" for i in range(len(TABLE))])
def test_extraction_table(raw: str, gold: str, answer_type: str, extracted: str | None,
                          correctness: str) -> None:
    parsed = parse_output(raw)
    assert parsed.final_answer == extracted
    assert judge(parsed.final_answer, sample(gold, answer_type)) == correctness


def test_reasoning_is_split_from_the_answer() -> None:
    parsed = parse_output("<think>3 + 5 = 8</think>\nAnswer: 8")
    assert parsed.reasoning == "3 + 5 = 8"
    assert parsed.has_think_tags and parsed.tags_balanced and parsed.has_answer_line
    parsed = parse_output("Step 1: 3 + 5 = 8.\nAnswer: 8")
    assert parsed.reasoning == "Step 1: 3 + 5 = 8."
    assert not parsed.has_think_tags
    unbalanced = parse_output("<think>a<think>b</think>Answer: 1")
    assert unbalanced.has_think_tags and not unbalanced.tags_balanced


def test_a_long_line_without_an_answer_marker_is_not_an_answer() -> None:
    text = "The image shows several handwritten digits arranged in a grid of two rows"
    assert parse_output(text).final_answer is None


@pytest.mark.parametrize(("text", "value"), [
    ("15", 15.0), ("-3.5", -3.5), ("1,200", 1200.0), ("3/4", 0.75), ("15 apples", 15.0),
    ("45%", 45.0), ("−2", -2.0), (".5", 0.5), ("seven", 7.0), ("Twelve", 12.0),
    ("none", None), ("", None), ("1/0", None), ("abc", None),
])
def test_parse_number(text: str, value: float | None) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(("text", "letter"), [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B) 45°", "B"), ("B: 45°", "B"), ("**B**", "B"),
    ("b", "B"), ("Option B", "B"), ("the letter B", "B"), ("45°", "B"), ("A or B", None),
    ("E", None), ("I think", None), ("", None),
])
def test_choice_letter_styles(text: str, letter: str | None) -> None:
    assert choice_letter(text, _CHOICES) == letter


@pytest.mark.parametrize(("text", "value"), [
    ("yes", "yes"), ("No.", "no"), ("TRUE", "yes"), ("Yes, it is.", "yes"),
    ("The sum is odd, so no.", "no"), ("yes and no", None), ("perhaps", None), ("", None),
])
def test_yes_no(text: str, value: str | None) -> None:
    assert yes_no(text) == value


def test_clean_answer_strips_decoration() -> None:
    assert clean_answer(" **$\\boxed{42}$**. ") == "42"
    assert clean_answer("`B`") == "B"
    assert normalize_text("The  Red, Circle!") == "red circle"


# --- property-based: no input crashes the parser, the extractor or the judge -----------------

_ANSWERISH = st.sampled_from([
    "Answer:", "answer is", "Final Answer:", "**Answer**:", "\\boxed{", "}", "<think>",
    "</think>", "<thinking>", "</reasoning>", "$", "**", "(", ")", "B", "b)", "yes", "No",
    "1/0", "3/4", "-", "−", ",", "1,000", ".", "\\frac{1}{2}", "^", "\\sqrt{", "\n", "###",
    "seven", "%", "option", "0" * 400, "９", "²", "\x00", "\ufeff", "１/０",
])
_TEXT = st.lists(st.one_of(_ANSWERISH, st.text(max_size=20)), max_size=25).map("".join)
_SAMPLES = st.sampled_from([
    sample("8"), sample("-2.5"), sample("3/4"), sample("B", "choice"),
    sample("B", "choice", ["yes", "no", "maybe"]), sample("yes", "yes_no"),
    sample("no", "yes_no"), sample("red circle", "text"),
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXT, gold=_SAMPLES)
def test_no_input_crashes_the_parser_or_the_judge(text: str, gold: Sample) -> None:
    parsed = parse_output(text)
    assert parsed.final_answer is None or parsed.final_answer.strip()
    assert isinstance(parsed.reasoning, str)
    assert judge(parsed.final_answer, gold) in ("correct", "wrong", "unparseable")
    assert judge(text, gold) in ("correct", "wrong", "unparseable")
    value = parse_number(text)
    assert value is None or isinstance(value, float)
    choices = gold.choices or ["a", "b"]
    assert choice_letter(text, choices) in (None, *CHOICE_LETTERS[: len(choices)])
    assert yes_no(text) in (None, "yes", "no")
    clean_answer(text)
