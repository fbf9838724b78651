"""No output text, however malformed or long, makes the judge raise or take more than
50 ms.

The time measured is the judging thread's CPU time (``time.thread_time``), not wall time:
the machine is shared, and wall time under load would make this test flaky. What it
checks is bounded work: no regex that backtracks catastrophically, no parser that recurses
without limit, no symbolic call on an input whose cost is not small, input lengths capped.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.core.answers import judge_output, same_answer
from distill.schemas import ImageRef, Sample

BUDGET_S = 0.05
_IMAGE = ImageRef(path="a.png", sha256="0" * 64)


def _sample(answer: str, answer_type: str, choices: list[str] | None = None,
            meta: dict | None = None, question: str = "How many? Is it 3 or 4.5?") -> Sample:
    return Sample(id="s", image=_IMAGE, question=question, answer=answer,
                  answer_type=answer_type, choices=choices, category="c", source="t",
                  meta=meta or {})


SAMPLES = [
    _sample("8", "number"), _sample("1.73", "number", meta={"precision": 2}),
    _sample("9.6", "number", meta={"relative_tolerance": 0.05}),
    _sample("B", "choice", ["30°", "45°", "A cat", "1/2"]),
    _sample("yes", "yes_no"), _sample("red circle", "text"),
    _sample("x^2 + 1", "text"), _sample("\\frac{\\pi}{2}", "text"),
]
# Pieces that each path of the judge reacts to, repeated up to thousands of times.
_PIECES = st.sampled_from([
    "(", ")", "{", "}", "[", "\\frac{", "\\sqrt{", "\\sqrt[", "^", "^{", "\\boxed{", "\\fbox{",
    "Answer:", "**Final Answer**\n", "the answer is ", "<think>", "</think>", "<answer>",
    "</answer>", "**", "$", "$$", "\\[", "So ", "Thus, ", "yes ", "no ", "A ", "(A) ", "B.",
    "10^", "e5", "\\times 10^{", "×", "=", " is ", "\\text{", "π", "√", "%", " million",
    "9", "1,", "-", "−", ".", " ", "\n", "\n\n", "or ", "x", "²", "１", "\\pi", "\\cdot",
    "between 1 and ", ":", "1/0", "0.5", "\\left(", "not ", "because ", "\x00", "\ufeff",
])
_TEXT = st.lists(st.tuples(st.one_of(_PIECES, st.text(max_size=12)), st.integers(1, 3000)),
                 max_size=10).map(lambda parts: "".join(piece * n for piece, n in parts))


def _judge_time(text: str, sample: Sample, **kwargs: str) -> float:
    start = time.thread_time()
    verdict = judge_output(text, sample, **kwargs)
    elapsed = time.thread_time() - start
    assert verdict.correctness in ("correct", "wrong", "unparseable")
    return elapsed


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """First calls compile regexes and fill caches: not what is bounded here."""
    for sample in SAMPLES:
        judge_output("Answer: \\frac{1}{2} x^2 + 1", sample)
        judge_output("<think>a</think>\\boxed{x^2+1}", sample)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=_TEXT, sample=st.sampled_from(SAMPLES),
       answer_format=st.sampled_from([None, "answer_line", "think_tags", "direct"]))
def test_no_output_makes_the_judge_slow_or_raise(text: str, sample: Sample,
                                                  answer_format: str | None) -> None:
    assert _judge_time(text, sample, answer_format=answer_format) < BUDGET_S
    assert _judge_time(text, sample, finish_reason="stop") < BUDGET_S


@pytest.mark.parametrize("text", [
    "(" * 1_000_000, "1" * 1_000_000, "\\frac{" * 200_000, "\\boxed{" * 200_000,
    "Answer: " + "9" * 1_000_000, "<think>" + "step. " * 200_000 + "</think>\\boxed{5}",
    "</think>" * 100_000, "\\sqrt{" * 300 + "2" + "}" * 300, "√" * 5000 + "4",
    "2^{2^{2^{2^{2^{2^{2}}}}}}", "10^{10^{10}}", "Answer: " + "(x+1)^9" * 4,
    "So " + "1 or " * 50_000, " " * 1_000_000 + "Answer:" + " " * 1_000_000,
    "**Final Answer**\n\\[\n" + "\\boxed{1}" * 50_000,
])
def test_pathological_outputs_are_judged_quickly(text: str) -> None:
    for sample in SAMPLES:
        assert _judge_time(text, sample) < BUDGET_S, sample.answer


def test_formula_answers_stay_within_the_budget() -> None:
    formula = _sample("(x+1)^2", "text")
    for text in ("Answer: x^2 + 2x + 1", "Answer: (x+1)(x+1)", "Answer: x^9 - 1",
                 "Answer: \\frac{x^2-1}{x-1}", "Answer: \\sin(x)^2 + \\cos(x)^2"):
        assert _judge_time(text, formula) < BUDGET_S, text
    start = time.thread_time()
    assert same_answer("(x + 1)^{2}", "(x+1)^2", formula)
    assert time.thread_time() - start < BUDGET_S
