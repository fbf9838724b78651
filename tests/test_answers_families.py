"""The answer judge on outputs of model families it was not first written for (issue 21):
their delimiters (Kimi-VL's ◁think▷, GLM-4.1V's boxes, gpt-oss's harmony channels, kept
special tokens), Chinese answer statements, closing sentences with no cue word, mixed
numbers, options whose text holds a capital letter, and free text with a contrast.

The tuned split of the family corpus (tests/fixtures/answers/families.jsonl) must pass
case by case, like the main corpus. The held-out split is measured by
bench/answer_extraction.py only, never asserted here: a test would make it a tuning set.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from distill.core.answers import judge_output, parse_output, read_number, yes_no
from distill.core.answers.delimiters import DELIMITERS, canonical_delimiters
from distill.schemas import ImageRef, Sample

FIXTURES = Path(__file__).parent / "fixtures" / "answers"
_IMAGE = ImageRef(path="a.png", sha256="0" * 64)


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text("utf-8").splitlines()]


TUNED = _load("families.jsonl")
HELD_OUT = _load("families_heldout.jsonl")


def _sample(case: dict) -> Sample:
    return Sample(id="s", image=_IMAGE, question=case["question"], answer=case["gold"],
                  answer_type=case["answer_type"], choices=case.get("choices"), category="c",
                  source=case["benchmark"])


def test_the_family_corpus_spans_families_languages_and_cites_its_sources() -> None:
    main = _load("corpus.jsonl") + _load("holdout.jsonl")
    assert len(main) + len(TUNED) + len(HELD_OUT) >= 600
    assert len(HELD_OUT) >= 150
    for split in (TUNED, HELD_OUT):
        families = Counter(case["style"] for case in split)
        assert len(families) >= 20
        assert {case["lang"] for case in split} == {"en", "zh"}
        assert all(case["source"] for case in split)
        assert set(Counter(case["verdict"] for case in split)) == {"correct", "wrong",
                                                                   "unparseable"}
    assert not {case["id"] for case in TUNED} & {case["id"] for case in HELD_OUT}


@pytest.mark.parametrize("case", TUNED, ids=[case["id"] for case in TUNED])
def test_the_judge_agrees_with_the_grader_on_the_tuned_family_split(case: dict) -> None:
    verdict = judge_output(case["output"], _sample(case), finish_reason=case["finish_reason"])
    assert verdict.correctness == case["verdict"], verdict


def test_every_delimiter_cites_the_file_it_came_from() -> None:
    assert all(d.source and d.families for d in DELIMITERS)
    assert len({d.token for d in DELIMITERS}) == len(DELIMITERS)


@pytest.mark.parametrize(("raw", "canonical"), [
    ("◁think▷count them◁/think▷There are 5.", "<think>count them</think>There are 5."),
    ("<think>x</think><answer><|begin_of_box|>B<|end_of_box|></answer><|user|>\nnext",
     "<think>x</think><answer>\\boxed{B}</answer>"),
    ("<|channel|>analysis<|message|>4?<|end|><|start|>assistant<|channel|>final<|message|>"
     "It is 5.<|return|>", "<think>4?</think>It is 5."),
    ("[THINK]hmm[/THINK]$\\boxed{3}$", "<think>hmm</think>$\\boxed{3}$"),
    ("Yes.<|im_end|>\n<|im_start|>user\nNo?", "Yes."),
    ("B<|end|><|endoftext|>", "B"),
    ("Step 1: 8 + 8 = 16.\nAnswer: 16", "Step 1: 8 + 8 = 16.\nAnswer: 16"),
])
def test_family_delimiters_become_the_extractors_spelling(raw: str, canonical: str) -> None:
    assert canonical_delimiters(raw) == canonical


def test_text_without_special_tokens_is_returned_as_it_is() -> None:
    text = "The final answer is 16.\nAnswer: 16"
    assert canonical_delimiters(text) is text


@pytest.mark.parametrize(("statement", "value"), [
    ("2\\frac{1}{2}", 2.5), ("2 1/2", 2.5), ("1½", 1.5), ("¾ of the cake", 0.75),
    ("There are 2\\frac{1}{2} pizzas in total.", 2.5), ("图中一共有6只鸭子。", 6.0),
    ("∠2的度数是50°。", 50.0),
])
def test_mixed_numbers_fractions_and_chinese_units_read_as_one_number(statement: str,
                                                                      value: float) -> None:
    number = read_number(statement)
    assert getattr(number, "value", None) == value, number


def test_a_hedge_between_a_mixed_number_and_another_stays_a_hedge() -> None:
    assert getattr(read_number("3 1/2 or 4"), "reason", None) == "hedged"


def _choice(output: str, choices: list[str], gold: str) -> str:
    sample = Sample(id="s", image=_IMAGE, question="q?", answer=gold, answer_type="choice",
                    choices=choices, category="c", source="t")
    return judge_output(output, sample).correctness


@pytest.mark.parametrize("output", ["The answer is (B) Vitamin C.", "**Answer:** (B) Vitamin C",
                                    "Citrus is rich in it.\n\nB) Vitamin C", "Vitamin C"])
def test_a_letter_inside_an_option_text_is_not_a_second_answer(output: str) -> None:
    assert _choice(output, ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"], "B") == "correct"


def test_an_option_unit_letter_is_not_an_answer() -> None:
    assert _choice("(B) 1 A", ["0.5 A", "1 A", "2 A", "4 A"], "B") == "correct"
    assert _choice("(C) 2 A", ["0.5 A", "1 A", "2 A", "4 A"], "B") == "wrong"


@pytest.mark.parametrize(("statement", "answer"), [
    ("Yes, the light is green, although no cars are waiting.", "yes"),
    ("是的，猫在桌子上。", "yes"), ("不是。天空晴朗。", "no"), ("所以，是的。", "yes"),
    ("Yes. No, wait.", None), ("yes or no", None),
])
def test_yes_no_is_read_from_the_replys_first_word(statement: str, answer: str | None) -> None:
    assert yes_no(statement) == answer


def _number(output: str, gold: str = "57", finish_reason: str | None = None) -> str:
    sample = Sample(id="s", image=_IMAGE, question="How many?", answer=gold,
                    answer_type="number", category="c", source="t")
    return judge_output(output, sample, finish_reason=finish_reason).correctness


def test_a_tentative_answer_in_unfinished_thinking_is_no_answer() -> None:
    assert _number("<think>\n50 + 7, so the answer is 57? Hmm, wait, let me check") \
        == "unparseable"
    assert _number("◁think▷所以答案是57？不对，我再检查一下") == "unparseable"
    assert _number("<think>\n50 + 7 = 57.\n</think>\n\nThe answer is 57.") == "correct"


@pytest.mark.parametrize("output", [
    "I count two on the branch and three on the ground.\n\nThere are 5 birds in the picture.",
    "先数池塘里的，有3只；岸边还有2只。\n最终答案：5", "解析：3+2=5。\n答案是5。",
    "◁think▷3 + 2◁/think▷图中一共有5只鸭子。", "Two plus three.\n\n*Answer*: 5",
])
def test_closing_statements_with_no_english_cue_word_are_read(output: str) -> None:
    assert _number(output, gold="5") == "correct"


def _text(output: str, gold: str) -> str:
    sample = Sample(id="s", image=_IMAGE, question="What species of bird is shown?",
                    answer=gold, answer_type="text", category="c", source="t")
    return judge_output(output, sample).correctness


def test_free_text_in_a_concluding_sentence_with_a_contrast() -> None:
    assert _text("So it is a peregrine falcon, not a hawk.", "peregrine falcon") == "correct"
    assert _text("So it is a hawk, not a peregrine falcon.", "peregrine falcon") == "wrong"
    assert _text('The answer is "**peregrine falcon**".', "peregrine falcon") == "correct"
    assert _text("图中的人骑的是自行车。", "自行车") == "correct"
    assert _text("图中的人骑的是摩托车，而不是自行车。", "自行车") == "wrong"


def test_the_demo_teachers_format_reads_as_before() -> None:
    parsed = parse_output("Step 1: 8 + 8 = 16.\nAnswer: 16", answer_format="answer_line")
    assert (parsed.final_answer, parsed.marker) == ("16", "answer_line")


@pytest.mark.parametrize(("output", "gold", "verdict"), [
    ("Step 1: Observe.\nFour upstairs, four downstairs.\n\nConclusion: The house has 8 "
     "windows.", "8", "correct"),
    ("Step 1: Observe.\n3 + 5.\n\n结论： 一共有8个。", "8", "correct"),
    ("长方形面积=长×宽=8×5=40。\n\n可能是40或26，无法确定。", "40", "unparseable"),
    ("上层有5本，下层有7本，5+7=12。\n\n书架上一共有10本书。", "12", "wrong"),
    ("图中共有8个苹果。 篮子里有6个，桌子上有3个，6+3=9。", "9", "wrong"),
])
def test_conclusions_headings_and_chinese_leads(output: str, gold: str, verdict: str) -> None:
    """A 'Conclusion:' label is a statement, a 'Step 1:' line or a Chinese sentence of
    reasoning is no lead answer, a one-line reply is read by its first sentence, and a
    reply that ends in doubt has no answer."""
    assert _number(output, gold=gold) == verdict


@pytest.mark.parametrize(("output", "gold", "verdict"), [
    ("解：前排6名，后排8名。\n答：一共有14名学生。", "14", "correct"),
    ("前排坐着6名，后排站着8名，6+8=14。我认为是12。", "14", "wrong"),
    ("Two on each side and one at each end. I'd say 6.", "6", "correct"),
    ("◁think▷two and four◁/think▷## Summary\nThere are 6 chairs.", "6", "correct"),
])
def test_short_chinese_labels_opinions_and_summary_headings(output: str, gold: str,
                                                            verdict: str) -> None:
    """'答：' is an answer label, 'I'd say' / '我认为是' state an answer, and a markdown
    heading ('## Summary') is never a reply's lead answer."""
    assert _number(output, gold=gold) == verdict
