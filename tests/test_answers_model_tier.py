"""The answer judge's model tier (issue 21): an extraction model, asked through an engine
of the project, reads only what the rules could not; its verdicts carry their own marker,
its replies are cached, and `distill answers --extract-model` counts them apart. Run with
the built-in ``extract`` model, on CPU."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from distill.answers_report import _model_tier
from distill.cli import main
from distill.core.answers import judge_output
from distill.core.answers.model_tier import MODEL_MARKER, ModelTier
from distill.core.evalsets import load_eval_set
from distill.evaluate.cache import CachedGeneration
from distill.evaluate.runner import score
from distill.schemas import EvalResult, ImageRef, ModelRef, Sample, content_hash
from testing.generate import make_ingest

_IMAGE = ImageRef(path="a.png", sha256="0" * 64)
_CHOICES = ["a red cube", "a blue ball", "a green cone", "a gray cylinder"]


def _sample(answer: str = "C") -> Sample:
    return Sample(id="s1", image=_IMAGE, question="Which object is nearest?", answer=answer,
                  answer_type="choice", choices=_CHOICES, category="c", source="t")


def _rows(outputs: list[tuple[str, str | None]]) -> list:
    sample = _sample()
    return [(f"i{n}", sample, text, judge_output(text, sample, finish_reason=finish))
            for n, (text, finish) in enumerate(outputs)]


def test_only_outputs_the_rules_could_not_read_are_asked_and_marked(tmp_path: Path) -> None:
    rows = _rows([("Hard to say at first, but I'd lean to C on this one", "stop"),
                  ("The answer is (B) a blue ball.", "stop"),
                  ("<think>It is probably C, but let me look again at the", "length")])
    assert [row[3].correctness for row in rows] == ["unparseable", "wrong", "unparseable"]
    tier = _model_tier("builtin:extract", tmp_path / "cache")
    reread = tier.reread(rows)
    assert tier.asked == 1  # not the readable one, not the truncated one
    first, second, third = (row[3] for row in reread)
    assert (first.correctness, first.canonical, first.marker) == ("correct", "C", MODEL_MARKER)
    assert second == rows[1][3]
    assert (third.correctness, third.reason) == ("unparseable", "truncated")


def test_replies_are_cached_by_model_prompt_item_and_output(tmp_path: Path) -> None:
    rows = _rows([("Hard to say at first, but I'd lean to C on this one", "stop")])
    _model_tier("builtin:extract", tmp_path / "cache").reread(rows)
    again = _model_tier("builtin:extract", tmp_path / "cache")
    assert again.reread(rows)[0][3].marker == MODEL_MARKER and again.asked == 0
    other = _rows([("Hard to say at first, but I'd lean to D on this one", "stop")])
    assert again.reread(other)[0][3].correctness == "wrong" and again.asked == 1


def test_a_model_that_finds_no_answer_leaves_the_verdict_alone() -> None:
    rows = _rows([("I cannot see the objects well enough to pick one", "stop")])
    tier = ModelTier(lambda prompts: ["Answer: NONE"] * len(prompts), "stub")
    assert tier.reread(rows)[0][3] == rows[0][3]
    failed = ModelTier(lambda prompts: [None] * len(prompts), "failing")
    assert failed.reread(rows)[0][3] == rows[0][3] and not failed.replies


def test_the_model_tier_is_off_by_default_and_counted_apart(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_ingest(tmp_path / "eval", {"test": 8})
    eval_set = load_eval_set(folder)
    sample = next(s for s in eval_set.samples if s.answer_type == "number")
    text = f"Cells tallied in order: 97, 98, {sample.answer}"  # several numbers: no rule reads it
    item = score(sample, CachedGeneration(input_hash="h", sample_id=sample.id, text=text,
                                          output_tokens=9, latency_s=0.1, finish_reason="stop"))
    assert item.correctness == "unparseable"
    result = EvalResult(result_id=content_hash({"t": 2}), created_at=datetime.now(UTC),
                        model=ModelRef(kind="engine", name="m"), eval_set=eval_set.spec,
                        eval_set_hash=eval_set.hash, mode="cot", generation={},
                        metrics={}, items=[item])
    path = tmp_path / "result.json"
    path.write_text(result.model_dump_json(), encoding="utf-8")
    capsys.readouterr()
    assert main(["answers", str(path)]) == 0
    assert "unparseable 1 (100.0%)" in capsys.readouterr().out
    assert main(["answers", str(path), "--extract-model", "builtin:extract",
                 "--extract-cache", str(tmp_path / "cache")]) == 0
    report = capsys.readouterr().out
    assert "correct 1 (100.0%)" in report and f"answers read from: {MODEL_MARKER} 1" in report
    assert "read by the extraction model builtin:extract: 1 outputs (correct 1, wrong 0); " \
           "1 asked now" in report
