"""The judge's API beyond one verdict: comparing answers with no gold (consensus), each
prompt's declared answer format read first, and `distill answers`, which shows how a
teacher's or a model's outputs are being read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_answer_corpus import CASES, corpus_sample

from distill.cli import main
from distill.core.answers import (
    AnswerSpec,
    Number,
    canonical_answer,
    judge_answer,
    read_number,
    read_output,
    same_answer,
    verdict_of,
)
from distill.core.answers.numbers import NotANumber
from distill.core.evalsets import load_eval_set
from distill.core.prompts import builtin_answer_format, load_prompt
from distill.evaluate.cache import CachedGeneration
from distill.evaluate.runner import score
from distill.schemas import EvalResult, ImageRef, ModelRef, Sample, content_hash
from testing.generate import builtin_teacher, make_ingest, read_outputs, write_teachers

_IMAGE = ImageRef(path="a.png", sha256="0" * 64)


def _sample(answer: str, answer_type: str, **kwargs) -> Sample:
    return Sample(id="s", image=_IMAGE, question=kwargs.pop("question", "q?"), answer=answer,
                  answer_type=answer_type, category="c", source="t", **kwargs)


# --- answers compared with each other, no gold needed --------------------------------------


def test_same_answer_uses_the_items_precision_and_tolerance_without_gold() -> None:
    mathvista = AnswerSpec("number", precision=2)
    assert same_answer("1.732", "$\\sqrt{3} \\approx 1.73$", mathvista)
    assert same_answer("2/3", "0.67", mathvista) and not same_answer("0.6", "0.67", mathvista)
    assert canonical_answer("1.7320", mathvista) == canonical_answer("1.73", mathvista) == "1.73"
    chartqa = AnswerSpec("number", relative_tolerance=0.05)
    assert same_answer("9.6", "9.8%", chartqa) and not same_answer("9.6", "10.4", chartqa)
    exact = AnswerSpec("number")
    assert same_answer("1,200 people", "1200", exact) and not same_answer("12", "13", exact)
    assert not same_answer("3 or 4", "3", exact)  # a hedge is no answer, so never "the same"


def test_same_answer_for_options_yes_no_and_text() -> None:
    options = AnswerSpec("choice", choices=("30°", "45°", "60°"))
    assert same_answer("(B)", "45 degrees", options)
    assert same_answer("Thus, **B** is correct", "B", options)
    assert not same_answer("A", "B", options) and not same_answer("A or B", "A", options)
    assert same_answer("No, it is not.", "no", AnswerSpec("yes_no"))
    text = AnswerSpec("text")
    assert same_answer("The Circle.", "circle", text)
    assert not same_answer("not a circle", "circle", text)


def test_spec_reads_precision_and_tolerance_from_sample_meta() -> None:
    sample = _sample("1.73", "number", meta={"precision": 2.0, "relative_tolerance": 0.05})
    spec = AnswerSpec.of(sample)
    assert (spec.precision, spec.relative_tolerance) == (2, 0.05)
    assert AnswerSpec.of(_sample("1", "number", meta={"precision": None})).precision is None
    assert judge_answer("1.732", _sample("1.73", "number", meta={"precision": 2})).reason \
        == "correct"
    near = judge_answer("1.74", _sample("1.73", "number", meta={"precision": 2}))
    assert (near.correctness, near.reason) == ("wrong", "near_miss")
    scale = judge_answer("0.3", _sample("30", "number", question="What percentage?"))
    assert scale.reason == "wrong_scale"


# --- the prompt's answer format first, the general reading as fallback --------------------


@pytest.mark.parametrize("name", ["cot", "direct", "think"])
def test_each_prompt_asks_for_the_layout_its_format_reads(name: str) -> None:
    prompt = load_prompt(name)
    system, user = prompt.render(_sample("7", "number"))
    assert "Answer:" in system + user or "answer" in (system + user).lower()
    reply = {"answer_line": "3 + 4 = 7.\nAnswer: 7", "direct": "Answer: 7",
             "think_tags": "<think>3 + 4 = 7</think>\nAnswer: 7"}[prompt.answer_format]
    parsed = read_output(reply, _sample("7", "number"), answer_format=prompt.answer_format)
    assert (parsed.final_answer, parsed.marker) == ("7", "answer_line")
    assert builtin_answer_format(prompt.id, prompt.hash) == prompt.answer_format
    assert builtin_answer_format(prompt.id, "0" * 64) is None  # an edited prompt: unknown


@pytest.mark.parametrize("answer_format", ["answer_line", "think_tags", "direct"])
def test_a_declared_format_never_changes_a_verdict_on_the_corpus(answer_format: str) -> None:
    """The format is a fast, strict first reading; outputs that do not follow it fall back
    to the general reading, so on every corpus output the verdict is the same (a one-line
    reply to a direct prompt is its answer even when it does not read: 'hedged', say,
    where the general reading says 'no_answer')."""
    for case in CASES:
        sample = corpus_sample(case)
        general = read_output(case["output"], sample, finish_reason=case["finish_reason"])
        declared = read_output(case["output"], sample, answer_format=answer_format,
                               finish_reason=case["finish_reason"])
        assert verdict_of(declared, sample).correctness == case["verdict"], case["id"]
        if general.reason == declared.reason == "ok":
            assert declared.final_answer == general.final_answer, case["id"]


def test_the_format_reading_ignores_drafts_inside_thinking() -> None:
    text = "<think>Answer: 3? No, 2 + 3 = 5.</think>\nAnswer: 5"
    parsed = read_output(text, _sample("5", "number"), answer_format="think_tags")
    assert parsed.final_answer == "5" and parsed.reasoning == "Answer: 3? No, 2 + 3 = 5."


# --- distill answers: how outputs are read, by reason, with examples -----------------------


def test_answers_report_on_a_generate_folder(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    samples = make_ingest(tmp_path / "in", {"train": 30})
    teachers = write_teachers(tmp_path / "t.yaml", {"knn": builtin_teacher("knn", k=2)})
    out = tmp_path / "out"
    assert main(["generate", "--samples", str(samples), "--teachers", str(teachers),
                 "--out", str(out)]) == 0
    traces, _ = read_outputs(out)
    assert traces and all(t.answer_format == "answer_line" for t in traces)
    capsys.readouterr()
    assert main(["answers", str(out), "--examples", "2"]) == 0
    report = capsys.readouterr().out
    assert f"answers of {out}: {len(traces)} outputs" in report
    assert f"answers read from: answer_line {len(traces)}" in report
    if "wrong / wrong_value" in report:  # the digit readers err on some items
        assert "gold '" in report and "Answer:" in report


def test_answers_report_on_an_eval_result(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_ingest(tmp_path / "eval", {"test": 4})
    eval_set = load_eval_set(folder)
    samples = list(eval_set.samples)
    outputs = [
        "Answer: 3 or 4",  # hedged
        "<think>The digits are 2 and 5. So the sum",  # cut at the token limit
        "Let me think.\n\n**Final Answer**\n\\[ \\boxed{" + samples[2].answer + "} \\]",
        "The image shows some digits.",  # no answer
    ]
    items = [score(sample, CachedGeneration(input_hash="h", sample_id=sample.id, text=text,
                                            output_tokens=9, latency_s=0.1,
                                            finish_reason="length" if i == 1 else "stop"))
             for i, (sample, text) in enumerate(zip(samples, outputs, strict=True))]
    assert [item.correctness for item in items] == ["unparseable", "unparseable", "correct",
                                                    "unparseable"]
    result = EvalResult(result_id=content_hash({"t": 1}), created_at=datetime.now(UTC),
                        model=ModelRef(kind="engine", name="m"), eval_set=eval_set.spec,
                        eval_set_hash=eval_set.hash, mode="cot", generation={},
                        metrics={}, items=items)
    path = tmp_path / "result.json"
    path.write_text(result.model_dump_json(), encoding="utf-8")
    capsys.readouterr()
    assert main(["answers", str(path)]) == 0
    report = capsys.readouterr().out
    assert "correct 1 (25.0%), wrong 0 (0.0%), unparseable 3 (75.0%)" in report
    for reason in ("hedged", "truncated", "no_answer"):
        assert f"unparseable / {reason}: 1" in report
    assert "answers read from: boxed 1" in report


# --- numbers as models write them ---------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("1.2 \\times 10^{5}", 1.2e5), ("1.2e5", 1.2e5), ("3.0×10⁻⁴ m", 3.0e-4), ("6.02E23", 6.02e23),
    ("\\frac{\\sqrt{3}}{2}", 3 ** 0.5 / 2), ("-\\frac{3}{4}", -0.75), ("\\dfrac{1}{8}", 0.125),
    ("2\\sqrt{3}", 2 * 3 ** 0.5), ("\\frac{\\pi}{2}", 3.141592653589793 / 2),
    ("5 cm^2", 5.0), ("12 cm²", 12.0), ("$1,200", 1200.0), ("1{,}200", 1200.0),
    ("−7 °C", -7.0), ("45^\\circ", 45.0), ("twenty-five", 25.0), ("x = 4", 4.0),
    ("\\text{approximately } 3.5\\ \\text{kg}", 3.5), ("5:2", 2.5),
    ("In 2015, it was 42.", 42.0), ("42 (up from 30)", 42.0), ("10 because 2 x 5 = 10", 10.0),
])
def test_numbers_as_models_write_them(text: str, value: float) -> None:
    number = read_number(text)
    assert isinstance(number, Number) and number.value == pytest.approx(value, rel=1e-9)


@pytest.mark.parametrize(("text", "reason"), [
    ("3 or 4", "hedged"), ("between 10 and 12", "hedged"), ("10-12", "hedged"),
    ("3 apples and 4 pears", "multiple_answers"), ("cannot be determined", "hedged"),
    ("many", "not_a_number"), ("", "empty_answer"), ("1/0", "not_a_number"),
])
def test_what_is_not_one_number(text: str, reason: str) -> None:
    assert read_number(text) == NotANumber(reason)


def test_percent_and_scale_words_keep_both_meanings() -> None:
    assert read_number("45%").values == (45.0, 0.45)
    assert read_number("1.2 million").values == (1.2e6, 1.2)
