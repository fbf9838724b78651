"""The demo's CoT student through vLLM: ``distill eval`` gives the verdicts it gives
through transformers, on the 600 held-out test items, item by item.

The student is trained as ``distill demo`` trains it (data/demo.yaml: the digits draw, the
built-in teachers, the default policy, stage 0, ``digits-cot``; the first training seed),
by the demo's own stage functions, which also evaluate it through transformers as the
demo does (batched greedy decoding, 96 new tokens). Then the same student, from the same
folder, is evaluated by ``distill eval --model engine:vllm:RUN/final``.

Cost on 2 cores: the demo's stages for one student (~5-6 min idle: ingest, generate,
filter, stage 0, 900 training steps, the HF eval) and one vLLM engine (~1 min to start,
~10 s for the 600 items). Run with ``.venv-vllm/bin/python -m pytest -m vllm
tests/test_demo_student_vllm.py`` (CI's vLLM env).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
vllm = pytest.importorskip("vllm")

from distill.cli import main  # noqa: E402
from distill.core.shards import read_json_model  # noqa: E402
from distill.schemas import EvalResult  # noqa: E402

pytestmark = pytest.mark.vllm


def train_demo_student(out: Path) -> tuple[Path, Path, Path]:
    """(ingest folder, the CoT student's run folder, its HF result), as the demo makes them."""
    from distill.demo import (
        DemoRun,
        finish_vision,
        load_plan,
        run_filter,
        run_generate,
        run_ingest,
        start_vision,
        train_all,
    )

    plan = load_plan("demo")
    seed = plan.training_seeds[0]
    plan = plan.model_copy(update={"students": {"cot": plan.students["cot"]}, "seeds": [seed],
                                   "baseline": "cot"})
    run = DemoRun(out=out, plan=plan)
    run_ingest(run)
    vision_job = start_vision(run)
    try:
        run_generate(run)
        dataset = run_filter(run)
        vision = finish_vision(run, vision_job)
    finally:
        if vision_job is not None:
            vision_job.stop()
    train_all(run, dataset, vision)  # trains, then evaluates it as the demo does
    return run.ingest_dir, run.run_dir("cot", seed), run.result_path("cot", seed)


def test_the_demo_student_scores_the_same_through_vllm_item_by_item(tmp_path):
    samples, run, hf_path = train_demo_student(tmp_path / "demo")
    hf = read_json_model(hf_path, EvalResult)
    assert hf.metrics["n"] == 600 and hf.metrics["accuracy"] > 0.5  # a student that reasons
    out = tmp_path / "results"
    assert main(["eval", "--model", f"engine:vllm:{run / 'final'}", "--data", f"{samples}:test",
                 "--max-new-tokens", str(int(hf.generation["max_new_tokens"])),
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--engine-option", "dtype=float32", "--engine-option", "enforce_eager=true",
                 "--engine-option", "max_model_len=512"]) == 0
    [path] = list(out.glob("*.json"))
    served = read_json_model(path, EvalResult)
    assert [i.sample_id for i in served.items] == [i.sample_id for i in hf.items]
    differ = [(a.sample_id, a.correctness, b.correctness) for a, b in
              zip(hf.items, served.items, strict=True) if a.correctness != b.correctness]
    assert differ == []
    assert served.metrics["accuracy"] == hf.metrics["accuracy"]
    same_text = sum(a.raw_output.strip() == b.raw_output.strip()
                    for a, b in zip(hf.items, served.items, strict=True))
    print(f"accuracy {hf.metrics['accuracy']:.4f} both ways; {same_text}/600 identical outputs")
