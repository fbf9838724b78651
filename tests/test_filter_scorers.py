"""Each scorer on hand-written good and bad traces of real digits samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from filter_fixtures import good_text, ingest_digits, reasoning, wrong_answer

from distill.core.answers import canonical_answer
from distill.core.shards import iter_records
from distill.filter.consensus import ItemAnswer, score_item
from distill.filter.scorers import (
    ScorerSuite,
    load_refusal_phrases,
    tag_structure,
)
from distill.schemas import ImageRef, Sample
from testing.filter_data import make_trace


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sample]:
    """One real digits sample per category."""
    folder = ingest_digits(tmp_path_factory.mktemp("scorers") / "ingest", {"train": 24})
    by_category: dict[str, Sample] = {}
    for shard in sorted((folder / "samples" / "train").glob("*.jsonl")):
        for sample in iter_records(shard, Sample):
            by_category.setdefault(sample.category, sample)
    return by_category


@pytest.fixture(scope="module")
def suite() -> ScorerSuite:
    return ScorerSuite()


def score(suite: ScorerSuite, sample: Sample, text: str, **kwargs) -> dict:
    return suite.score_trace(make_trace(sample, "t", 0, text, **kwargs), sample)


def test_a_good_trace_passes_every_check(suite: ScorerSuite, samples: dict) -> None:
    sample = samples["sum"]
    signals = score(suite, sample, good_text(sample), completion_tokens=42)
    assert signals["correctness"] == "correct"
    assert signals["answer_canonical"] == sample.answer
    assert signals["has_reasoning"] and signals["reasoning_words"] >= 8
    assert signals["tags_balanced"] and signals["think_blocks"] == 1
    assert signals["has_answer_line"] and not signals["truncated"]
    assert not signals["has_loop"] and signals["repetition_ratio"] < 0.2
    assert not signals["refusal"]
    assert signals["garbage_ratio"] == 0.0 and signals["latin_ratio"] == 1.0
    assert signals["length_tokens"] == 42 and signals["length_chars"] > 40


def test_a_wrong_answer_in_the_right_format_is_wrong_not_unparseable(
        suite: ScorerSuite, samples: dict) -> None:
    for category in ("sum", "sum_is_even"):
        sample = samples[category]
        text = f"<think>\n{reasoning(sample)}\n</think>\nAnswer: {wrong_answer(sample)}"
        signals = score(suite, sample, text)
        assert signals["correctness"] == "wrong", category
        assert signals["tags_balanced"] and signals["has_answer_line"]


def test_an_answer_of_the_wrong_type_is_unparseable(suite: ScorerSuite, samples: dict) -> None:
    sample = samples["max_minus_min"]
    signals = score(suite, sample, f"{reasoning(sample)}\nAnswer: it depends on the picture")
    assert signals["correctness"] == "unparseable"
    assert signals["answer_canonical"] == ""


def test_choice_and_text_answers_are_judged_by_type(suite: ScorerSuite, samples: dict) -> None:
    base = samples["sum"]
    choice = Sample(id="c1", image=base.image, question="Which colour is the ink?",
                    choices=["red", "black", "blue"], answer="B", answer_type="choice",
                    category="colour", source="test")
    assert score(suite, choice, "The ink is dark.\nAnswer: (B)")["correctness"] == "correct"
    assert score(suite, choice, "The ink is dark.\nAnswer: black")["correctness"] == "correct"
    assert score(suite, choice, "The ink is dark.\nAnswer: A")["correctness"] == "wrong"
    assert score(suite, choice, "Hmm.\nAnswer: A or B")["correctness"] == "unparseable"
    text = Sample(id="t1", image=ImageRef(path="x.png", sha256="0" * 64),
                  question="What is drawn?", answer="The digits", answer_type="text",
                  category="what", source="test")
    assert score(suite, text, "Look.\nAnswer: digits.")["correctness"] == "correct"
    assert score(suite, text, "Look.\nAnswer: letters")["correctness"] == "wrong"


def test_a_truncated_trace_is_flagged(suite: ScorerSuite, samples: dict) -> None:
    sample = samples["sum"]
    text = good_text(sample)
    signals = score(suite, sample, text[: len(text) // 2], finish_reason="length",
                    final_answer=sample.answer)
    assert signals["truncated"]
    assert not signals["tags_balanced"]  # the </think> was cut off
    # Cut at the token limit: unparseable, not judged on whatever it said last.
    signals = score(suite, sample, text, finish_reason="length", final_answer=sample.answer)
    assert (signals["correctness"], signals["answer_reason"]) == ("unparseable", "truncated")


def test_correctness_reads_the_raw_text_with_the_judge_and_says_why(
        suite: ScorerSuite, samples: dict) -> None:
    """Traces generated before a judge change (their recorded final answer was misread)
    are judged by the current rules from their raw text."""
    sample = samples["sum"]
    r1 = (f"{reasoning(sample)}\n\n**Final Answer**\n\\[\n\\boxed{{{sample.answer}}}\n\\]")
    signals = score(suite, sample, r1, final_answer="\\[")
    assert (signals["correctness"], signals["answer_reason"]) == ("correct", "correct")
    assert signals["answer_canonical"] == sample.answer
    hedge = score(suite, sample, f"{reasoning(sample)}\nAnswer: 3 or 4")
    assert (hedge["correctness"], hedge["answer_reason"]) == ("unparseable", "hedged")
    wrong = score(suite, sample, f"{reasoning(sample)}\nAnswer: {wrong_answer(sample)}")
    assert wrong["answer_reason"] in ("wrong_value", "near_miss", "wrong_scale")


@pytest.mark.parametrize("text, blocks, balanced", [
    ("<think>a</think>Answer: 1", 1, True),
    ("a b c</think>\nAnswer: 1", 1, True),  # opening tag was in the prompt
    ("<think>a</think><think>b</think>Answer: 1", 2, True),
    ("<think>a<think>b</think></think>Answer: 1", 2, False),  # nested
    ("<think>a</thinking>Answer: 1", 1, False),  # closed by another name
    ("<think>a Answer: 1", 1, False),  # never closed
    ("<think>a</think>b</think>Answer: 1", 1, False),  # stray close
    ("</think><think>x<reasoning>y</think>", 3, False),  # soup
])
def test_thinking_tag_soup(text: str, blocks: int, balanced: bool) -> None:
    assert tag_structure(text) == (blocks, balanced)


def test_loops_are_caught_and_ordinary_repetition_is_not(suite: ScorerSuite,
                                                          samples: dict) -> None:
    sample = samples["sum"]
    word_loop = good_text(sample).replace(
        "</think>", " ".join(["Let me count the digits again."] * 8) + "</think>")
    line_loop = (reasoning(sample) + "\n" + "\n".join(["Checking."] * 4)
                 + f"\nAnswer: {sample.answer}")
    char_loop = good_text(sample) + " " + "!" * 60
    for text in (word_loop, line_loop, char_loop):
        assert score(suite, sample, text)["has_loop"], text[-80:]
    assert score(suite, sample, word_loop)["repetition_ratio"] > 0.3
    assert score(suite, sample, word_loop)["max_ngram_repeats"] >= 4
    # Arithmetic restates numbers a lot; that is not a loop.
    assert not score(suite, sample, good_text(sample))["has_loop"]


def test_refusals_come_from_the_phrase_file(suite: ScorerSuite, samples: dict) -> None:
    sample = samples["count_even"]
    for text in ("I'm sorry, but I cannot see the image you sent.\nAnswer: 0",
                 "As an AI language model I can\u2019t view images.\nAnswer: 1",
                 "(NO IMAGE WAS PROVIDED)\nAnswer: 2"):
        assert score(suite, sample, text)["refusal"], text
    assert not score(suite, sample, good_text(sample))["refusal"]
    # A word that merely contains a phrase does not count.
    assert not score(suite, sample, "Fasan AI birds.\nAnswer: 2")["refusal"]
    assert "as an ai" in load_refusal_phrases()
    custom = ScorerSuite(refusal_phrases=["digits are"])
    assert custom.score_trace(make_trace(sample, "t", 0, good_text(sample)), sample)["refusal"]
    assert custom.versions["refusal"] != suite.versions["refusal"]


def test_garbage_and_foreign_script(suite: ScorerSuite, samples: dict) -> None:
    sample = samples["sum"]
    soup = good_text(sample) + " \ufffd\x07\ufffd" * 30
    blob = good_text(sample) + " " + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 3
    cyrillic = "Цифры на картинке: три и пять, сумма восемь.\nAnswer: 8"
    assert score(suite, sample, soup)["garbage_ratio"] > 0.2
    assert score(suite, sample, blob)["garbage_ratio"] > 0.3
    assert score(suite, sample, cyrillic)["latin_ratio"] < 0.2  # "Answer" is Latin
    assert score(suite, sample, cyrillic + " mixed with english words")["latin_ratio"] < 0.8


def test_length_is_estimated_without_engine_counts(suite: ScorerSuite, samples: dict) -> None:
    sample = samples["sum"]
    estimated = score(suite, sample, good_text(sample))["length_tokens"]
    assert 20 < estimated < 120
    assert score(suite, sample, good_text(sample), completion_tokens=7)["length_tokens"] == 7


def test_agreement_across_teachers_and_samples(samples: dict) -> None:
    sample = samples["sum"]
    answers = [ItemAnswer("big", "15", True), ItemAnswer("big", "15", True),
               ItemAnswer("big", "14", False), ItemAnswer("small", "14", False),
               ItemAnswer("small", "", False), ItemAnswer("odd", "15", True)]
    out = score_item(answers, sample)
    assert all(s["majority_answer"] == "15" for s in out)
    assert out[0]["majority_fraction"] == pytest.approx(0.5)
    assert [s["agrees_with_majority"] for s in out] == [True, True, False, False, False, True]
    assert out[0]["pass_rate_k"] == pytest.approx(2 / 3) and out[0]["n_samples_k"] == 3
    assert out[3]["pass_rate_k"] == 0.0 and out[5]["pass_rate_k"] == 1.0
    assert all(s["pass_rate_item"] == pytest.approx(0.5) for s in out)
    assert all(s["n_teachers"] == 3 for s in out)
    # big and odd answer 15, small answers 14: a '15' trace agrees with 2 of 3 teachers.
    assert out[0]["agreement_teachers"] == pytest.approx(2 / 3)
    assert out[3]["agreement_teachers"] == pytest.approx(1 / 3)
    assert out[4]["agreement_teachers"] == 0.0  # no answer agrees with nothing
    # Ties are broken by the answer, not by the order the traces came in.
    tie = [ItemAnswer("a", "3", True), ItemAnswer("b", "2", False)]
    assert score_item(tie, sample)[0]["majority_answer"] \
        == score_item(tie[::-1], sample)[0]["majority_answer"]


def test_canonical_answers_spell_one_meaning_one_way(samples: dict) -> None:
    number = samples["sum"]
    assert {canonical_answer(a, number) for a in ("15", "15.0", "15 digits", "**15**.")} \
        == {"15"}
    assert canonical_answer("-0", number) == "0"
    assert canonical_answer("none", number) is None
    yes_no = samples["sum_is_even"]
    assert canonical_answer("Yes.", yes_no) == "yes" and canonical_answer("maybe", yes_no) is None


def test_scorer_versions_cover_every_scorer(suite: ScorerSuite, tmp_path: Path) -> None:
    assert set(suite.versions) == {"correctness", "format", "repetition", "refusal",
                                   "garbage", "length", "agreement", "judge"}
