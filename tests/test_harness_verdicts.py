"""Each harness's own per-item verdict, per benchmark, in the layouts its writer code
produces (verdicts.py cites the files): kept where the harness keeps it, recomputed as its
own scorer does where it keeps only the pieces; and through `distill eval import`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.shards import read_json_model
from distill.evaluate.harness.verdicts import (
    can_infer,
    lmms_dict_verdict,
    mathvista_post_check,
)
from distill.schemas import EvalResult
from tests.helpers import harness_files as hf

CHOICES = ["3/11", "8/11", "6/11", "3/5"]


@pytest.mark.parametrize(("details", "verdict"), [
    # MMStar: average = {question_id, l2_category, score}
    ({"question_id": 7, "l2_category": "math", "score": 1.0}, 1.0),
    # MathVista, lmms-eval >= 0.4: llm_as_judge_eval = {..., "true_false": bool}
    ({"question_id": "12", "extraction": "1.5", "prediction": "1.5", "true_false": False},
     0.0),
    ({"question_id": "13", "extraction": "B", "prediction": "8/11", "true_false": True}, 1.0),
    # MMMU: mmmu_acc = {id, answer, question_type, parsed_pred}: evaluate_mmmu decides
    ({"id": "validation_Art_1", "question_type": "multiple-choice", "answer": "B",
      "parsed_pred": ["B"]}, 1.0),
    ({"id": "validation_Art_2", "question_type": "multiple-choice", "answer": "B",
      "parsed_pred": ["C"]}, 0.0),
    ({"id": "validation_Math_3", "question_type": "open", "answer": "1.5",
      "parsed_pred": [[1.5, "x = 1.5"]]}, 1.0),
    ({"id": "validation_Math_4", "question_type": "open", "answer": "['12', '12.0']",
      "parsed_pred": [[13.0]]}, 0.0),
    ({"id": "validation_Bio_5", "question_type": "open", "answer": "mitochondria",
      "parsed_pred": [["the mitochondria of the cell"]]}, 1.0),
    # a dict without any verdict (a submission record alone)
    ({"question_id": "9", "prediction": "4"}, None),
])
def test_lmms_eval_dict_metrics(details: dict, verdict: float | None) -> None:
    assert lmms_dict_verdict(details) == verdict


def _mathvista_row(**fields) -> dict:
    row = {"index": 1, "question_type": "free_form", "answer_type": "integer",
           "answer": "14", "choices": None, "answer_option": None, "res": "14"}
    return row | fields


@pytest.mark.parametrize(("row", "hit"), [
    (_mathvista_row(), 1.0),
    (_mathvista_row(res="14.0"), 0.0),  # int("14.0") fails: VLMEvalKit counts it wrong
    (_mathvista_row(answer_type="float", answer="1.45", res="1.45"), 1.0),
    (_mathvista_row(answer_type="float", answer="1.45", res="1.4"), 0.0),
    (_mathvista_row(question_type="multi_choice", answer_type="text", answer="8/11",
                    answer_option="B", choices=str(CHOICES), res="B"), 1.0),
    (_mathvista_row(question_type="multi_choice", answer_type="text", answer="8/11",
                    answer_option="B", choices=str(CHOICES), res="8/11"), 1.0),
    (_mathvista_row(question_type="multi_choice", answer_type="text", answer="8/11",
                    answer_option="B", choices=str(CHOICES), res="C"), 0.0),
    # its text branch compares str(None): a free-text item is never a hit there
    (_mathvista_row(answer_type="text", answer="red", res="red"), 0.0),
    (_mathvista_row(res=None), 0.0),
])
def test_vlmevalkit_mathvista_post_check(row: dict, hit: float) -> None:
    assert mathvista_post_check(row) == hit


def test_can_infer_reads_a_letter_near_the_end_or_one_option_text() -> None:
    choices = dict(zip("ABCD", CHOICES, strict=True))
    assert can_infer("The correct answer is (B)", choices) == "B"
    assert can_infer("8/11", choices) == "B"
    assert can_infer("A or B", choices) is False
    assert can_infer("[" * 5000, choices) is False  # hostile text: no crash


def test_lmms_eval_mathvista_run_keeps_true_false(tmp_path: Path, eval_set_file) -> None:
    """A MathVista-style run (verdict in llm_as_judge_eval.true_false, no number metric)
    imports with the harness's score kept, not 'the harness kept no per-item score'."""
    folder = hf.lmms_run_07(tmp_path / "lmms_out", {101: "Answer: B", 102: "Answer: C"})
    samples = next(folder.glob("*_samples_*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    for row, verdict in zip(rows, (True, False), strict=True):
        pid = row["average"]["question_id"]
        for key in [k for k in row if isinstance(row[k], dict)]:
            del row[key]
        result = {"question_id": pid, "extraction": "B", "true_false": verdict}
        row["llm_as_judge_eval"] = row["submission"] = result
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / next(p.name for p in folder.glob("*_results.json"))).unlink()
    out = tmp_path / "results"
    assert main(["eval", "import", "lmms-eval", str(samples), "--data", str(eval_set_file),
                 "--out", str(out)]) == 0
    result = read_json_model(next(out.glob("*.json")), EvalResult)
    assert [i.harness.score for i in result.items] == [1.0, 0.0]
    assert {i.harness.metric for i in result.items} == {"llm_as_judge_eval"}


def test_vlmevalkit_mathvista_judged_file_is_found_and_post_checked(
        tmp_path: Path, eval_set_file, openpyxl) -> None:
    work = tmp_path / "outputs" / "MyVLM"
    rows = hf.vlm_rows({101: "The answer is B", 102: "I think (A)"})
    prediction = hf.write_xlsx(work / "MyVLM_MathVista_MINI.xlsx", rows)
    judged = [{**row, "question_type": "multi_choice", "answer_type": "text",
               "choices": str([row[k] for k in "ABCD"]), "answer_option": row["answer"],
               "res": res, "log": "Prefetch succeed"}
              for row, res in zip(rows, ("B", "A"), strict=True)]
    hf.write_xlsx(work / "MyVLM_MathVista_MINI_gpt-4o-mini.xlsx", judged)
    out = tmp_path / "results"
    assert main(["eval", "import", "vlmevalkit", str(prediction), "--data",
                 str(eval_set_file), "--out", str(out)]) == 0
    result = read_json_model(next(out.glob("*.json")), EvalResult)
    expected = [float(row["answer"] == res) for row, res in zip(rows, ("B", "A"), strict=True)]
    assert [i.harness.score for i in result.items] == expected
    assert {i.harness.metric for i in result.items} == {"post_check"}


@pytest.fixture
def eval_set_file(tmp_path: Path) -> Path:
    return hf.write_eval_set(tmp_path / "evalset")


@pytest.fixture
def openpyxl():
    return pytest.importorskip("openpyxl")
