"""End to end on CPU: a tiny SiQ-VL student trained for a few steps on real digits data,
evaluated on the digits test split in both modes, compared, and traced back through its
run and dataset version to the ingested samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.cli import main
from distill.core.answers import parse_output
from distill.core.evalsets import load_eval_set
from distill.core.shards import read_json_model
from distill.evaluate.lineage import trace_lineage
from distill.schemas import EvalResult

# The student lives in the train package; its modules are imported where they are used.
pytest.importorskip("distill.train.siqvl.build", reason="the SiQ-VL student (train package)")

MAX_NEW = 40


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> dict[str, Path]:
    from tests.train_support import tiny_trained_student

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_trained_student(tmp_path_factory.mktemp("siqvl-eval"))
    torch.set_num_threads(previous)


def test_tiny_student_eval_compare_and_lineage(student, capsys) -> None:
    root, run = student["root"], student["run"]
    out = root / "results"
    assert main(["eval", "--model", f"siqvl:{run}", "--data", str(student["ingest"]),
                 "--mode", "cot", "--mode", "direct", "--out", str(out),
                 "--cache-dir", str(root / "cache"), "--max-new-tokens", str(MAX_NEW),
                 "--batch-size", "4"]) == 0
    cot_file = next(out.glob("*-cot-*.json"))
    direct_file = next(out.glob("*-direct-*.json"))
    cot = read_json_model(cot_file, EvalResult)
    direct = read_json_model(direct_file, EvalResult)
    assert cot.model.kind == "siqvl" and cot.model.name == "run/final"
    # Relative to the result's folder, like every path a result names.
    assert (out / cot.model.run_manifest).resolve() == (run / "manifest.json").resolve()
    assert len(cot.items) == len(direct.items) == 8
    assert all(0 < item.output_tokens <= MAX_NEW for item in cot.items + direct.items)
    # The student learned the answer format: its outputs mostly hold an answer line. This
    # tiny one never stops by itself, though, and an output cut at the token limit is
    # unparseable (the judge does not score what a model might still have revised).
    assert sum(parse_output(item.raw_output).final_answer is not None
               for item in cot.items) >= len(cot.items) // 2
    cut = [item for item in cot.items if item.output_tokens >= MAX_NEW]
    assert all(item.correctness == "unparseable" for item in cut)
    assert cot.metrics["unparseable_rate"] >= len(cut) / len(cot.items)
    # The predictor adds nothing to the train package's own generation.
    from distill.train.inference import generate_answers
    from distill.train.siqvl.build import load_student

    model, processor = load_student(run / "final")
    eval_set = load_eval_set(student["ingest"])
    expected = generate_answers(model, processor, list(eval_set.samples), eval_set.image_root,
                                mode="cot", max_new_tokens=MAX_NEW, batch_size=8)
    assert [item.raw_output for item in cot.items] == [text for text, _ in expected]

    assert main(["compare", str(cot_file), str(direct_file), "--out", str(root / "cmp")]) == 0
    assert (root / "cmp" / "compare.html").is_file()

    statuses = [(link.kind, link.status) for link in trace_lineage(cot_file)]
    assert statuses == [("eval result", "ok"), ("eval set", "ok"), ("model", "ok"),
                        ("run", "ok"), ("dataset", "ok"), ("traces", "not recorded"),
                        ("samples", "ok")]
    capsys.readouterr()
    assert main(["lineage", str(cot_file)]) == 0
    printed = capsys.readouterr().out
    assert "teachers oracle-digits" in printed and "stage cot, 30 steps" in printed
