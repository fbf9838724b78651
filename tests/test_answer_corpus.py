"""The answer judge on a hand-written corpus of outputs in the styles of today's reasoning
VLMs (Qwen2.5-VL, Qwen3-VL-Thinking, InternVL, R1-style math models), on MathVista,
MMStar, ScienceQA, MMMU, ChartQA and yes/no items.

Each case holds the gold answer, the answer type, the item's precision or tolerance where
it has one, and the verdict a careful human grader gives (tests/fixtures/answers/
corpus.jsonl; its ``note`` says why for the cases that need it). Every case must pass:
the verdicts are the grader's, not what the code happens to output.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from distill.core.answers import judge, judge_output, parse_output
from distill.schemas import ImageRef, Sample

CORPUS = Path(__file__).parent / "fixtures" / "answers" / "corpus.jsonl"
_IMAGE = ImageRef(path="a.png", sha256="0" * 64)


def load_corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def corpus_sample(case: dict) -> Sample:
    meta = {key: case[key] for key in ("precision", "relative_tolerance") if key in case}
    return Sample(id="s", image=_IMAGE, question=case["question"], answer=case["gold"],
                  answer_type=case["answer_type"], choices=case.get("choices"), category="c",
                  source=case["benchmark"], meta=meta)


CASES = load_corpus()


def test_the_corpus_covers_every_benchmark_style_and_verdict() -> None:
    assert len(CASES) >= 300
    assert len({case["id"] for case in CASES}) == len(CASES)
    benchmarks = Counter(case["benchmark"] for case in CASES)
    assert set(benchmarks) == {"mathvista", "mmstar", "scienceqa", "mmmu", "chartqa", "yesno"}
    assert min(benchmarks.values()) >= 40
    verdicts = Counter(case["verdict"] for case in CASES)
    assert min(verdicts.values()) >= 30
    truncated = [case for case in CASES if case["finish_reason"] == "length"]
    assert len(truncated) >= 10 and all(case["verdict"] == "unparseable" for case in truncated)
    for style in ("qwen2.5-vl", "qwen3-vl-thinking", "internvl", "r1", "self-correct"):
        assert sum(case["style"] == style for case in CASES) >= 10, style


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_the_judge_agrees_with_the_grader(case: dict) -> None:
    sample = corpus_sample(case)
    verdict = judge_output(case["output"], sample, finish_reason=case["finish_reason"])
    assert verdict.correctness == case["verdict"], (verdict, case.get("note"))
    # Generate records the answer; filter and eval judge the recorded answer: same verdict.
    parsed = parse_output(case["output"], sample, finish_reason=case["finish_reason"])
    if parsed.reason == "ok":
        assert judge(parsed.final_answer, sample) == case["verdict"]
