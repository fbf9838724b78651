"""`distill eval import`: lmms-eval (0.7.x and 0.3.x layouts) and VLMEvalKit (xlsx, tsv)
runs read into EvalResults, matched to our items by the stated rule, judged by our judge
with the harness's own score kept beside it; bad input gives one located line and no file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.evalsets import load_eval_set
from distill.core.shards import read_json_model
from distill.evaluate.cache import CachedGeneration, input_hash
from distill.evaluate.runner import score
from distill.schemas import EvalResult
from tests.helpers import harness_files as hf

OUTPUTS = {101: "Answer: B", 102: "A", 103: "The ball count is three.\nAnswer: C",
           104: "Answer: A"}
# The harness's per-item scores: 103 is one it scored 0 although the answer is right.
SCORES = {101: 1.0, 102: 1.0, 103: 0.0, 104: 0.0}


@pytest.fixture
def eval_set_file(tmp_path: Path) -> Path:
    return hf.write_eval_set(tmp_path / "evalset")


def _import(args: list[str], out: Path) -> tuple[int, EvalResult | None]:
    code = main(["eval", "import", *args, "--out", str(out)])
    files = sorted(out.glob("*.json")) if out.exists() else []
    assert len(files) <= 1
    return code, read_json_model(files[0], EvalResult) if files else None


def _expected_verdicts(eval_set_file: Path, outputs: dict[str, str]) -> dict[str, str]:
    """What our judge says of each output, through the one function eval uses."""
    eval_set = load_eval_set(eval_set_file)
    verdicts = {}
    for sample_id, text in outputs.items():
        sample = eval_set.by_id[sample_id]
        output = CachedGeneration(input_hash=input_hash(sample), sample_id=sample_id, text=text,
                                  output_tokens=0, latency_s=0.0, finish_reason="stop")
        verdicts[sample_id] = score(sample, output).correctness
    return verdicts


def test_lmms_eval_07_run_keeps_both_verdicts_and_compare_lists_disagreements(
        tmp_path: Path, eval_set_file: Path, capsys) -> None:
    run = hf.lmms_run_07(tmp_path / "lmms_out", OUTPUTS, scores=SCORES)
    code, result = _import(["lmms-eval", str(tmp_path / "lmms_out"), "--data",
                            str(eval_set_file)], tmp_path / "results")
    assert code == 0 and result is not None
    assert result.model.kind == "harness" and result.model.name == "lmms-eval:qwen2_5_vl"
    harness_run = result.model.harness_run
    assert harness_run.task == "mmstar"
    assert harness_run.model_args == "pretrained=Qwen/Qwen2.5-VL-3B-Instruct"
    assert sorted(Path(p).name for p in harness_run.files) == [
        "20260801_101500_results.json", "20260801_101500_samples_mmstar.jsonl"]
    by_id = {item.sample_id: item for item in result.items}
    assert list(by_id) == [f"mmstar-{index}" for index in OUTPUTS]
    verdicts = _expected_verdicts(eval_set_file, {f"mmstar-{i}": t for i, t in OUTPUTS.items()})
    samples_file = run / "20260801_101500_samples_mmstar.jsonl"
    for line, index in enumerate(OUTPUTS, start=1):
        item = by_id[f"mmstar-{index}"]
        assert item.raw_output == OUTPUTS[index]
        assert item.correctness == verdicts[item.sample_id]
        assert item.harness.score == SCORES[index] and item.harness.metric == "average"
        assert item.harness.source == f"{samples_file}:{line}"
        assert item.output_tokens == len(OUTPUTS[index].split())
    assert verdicts["mmstar-103"] == "correct"  # right answer the harness scored 0

    results_file = next((tmp_path / "results").glob("*.json"))
    capsys.readouterr()
    assert main(["compare", str(results_file), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "lmms-eval vs our judge" in printed
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    disagreeing = [i for i in OUTPUTS if (verdicts[f"mmstar-{i}"] == "correct")
                   != (SCORES[i] >= 1.0)]
    assert 103 in disagreeing
    assert f"disagree on {len(disagreeing)}" in markdown
    for index in disagreeing:
        row = next(line for line in markdown.splitlines() if f"| mmstar-{index} |" in line)
        assert "the harness scored 0 (average)" in row
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert 'data-sample-id="mmstar-103"' in html
    # Lineage reads it: the eval set is found, and no training run of ours is claimed.
    assert main(["lineage", str(results_file)]) == 0
    assert "a harness model: no training run of ours behind it" in capsys.readouterr().out


def test_lmms_eval_03_layout_matches_by_doc_id_and_question(tmp_path: Path,
                                                           eval_set_file: Path) -> None:
    texts = ["Answer: B", "Answer: C", "Answer: C", "Answer: D"]
    hf.lmms_run_03(tmp_path / "lmms_out", texts)
    code, result = _import(["lmms-eval", str(tmp_path / "lmms_out" / "llava"), "--task",
                            "mmstar", "--data", str(eval_set_file)], tmp_path / "results")
    assert code == 0 and result is not None
    assert [item.raw_output for item in result.items] == texts
    assert [item.harness.score for item in result.items] == [1.0, 0.0, 1.0, 1.0]
    assert {item.harness.metric for item in result.items} == {"exact_match"}
    assert result.model.harness_run.model is None or result.model.name == "lmms-eval:llava"


def test_lmms_eval_rows_that_match_no_item_are_refused_with_file_and_row(
        tmp_path: Path, capsys) -> None:
    # Our eval set lacks the first item, so doc_id 0 names our first item (index 102) by
    # position, whose question is not the row's: no guess, an error at that row.
    eval_set = hf.write_eval_set(tmp_path / "evalset")
    lines = eval_set.read_text().splitlines()[1:]
    eval_set.write_text("\n".join(lines) + "\n")
    folder = hf.lmms_run_03(tmp_path / "lmms_out", ["Answer: B", "Answer: A"])
    samples = next(folder.glob("*_samples_*.jsonl"))
    code, result = _import(["lmms-eval", str(samples), "--data", str(eval_set)],
                           tmp_path / "results")
    err = capsys.readouterr().err
    assert code == 2 and result is None
    assert f"{samples}:1: gold answer 'B' differs from item 'mmstar-102'" in err
    assert len(err.strip().splitlines()) == 1


def test_lmms_eval_unknown_task_and_truncated_line(tmp_path: Path, eval_set_file: Path,
                                                   capsys) -> None:
    folder = hf.lmms_run_07(tmp_path / "lmms_out", OUTPUTS)
    samples = next(folder.glob("*_samples_*.jsonl"))
    # A samples file whose task its run's results file does not know.
    stray = samples.with_name(samples.name.replace("_mmstar", "_mmbench"))
    stray.write_text(samples.read_text())
    code, _ = _import(["lmms-eval", str(stray), "--data", str(eval_set_file)],
                      tmp_path / "results")
    err = capsys.readouterr().err
    assert code == 2 and f"{stray}: task 'mmbench'" in err and "unknown" in err
    stray.unlink()
    # A file whose name does not say its task.
    renamed = samples.with_name("samples.jsonl")
    renamed.write_text(samples.read_text())
    code, _ = _import(["lmms-eval", str(renamed), "--data", str(eval_set_file)],
                      tmp_path / "results")
    assert code == 2 and "its task is unknown" in capsys.readouterr().err
    renamed.unlink()
    # A line cut off mid-write.
    text = samples.read_text()
    samples.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 30])
    code, result = _import(["lmms-eval", str(samples), "--data", str(eval_set_file)],
                           tmp_path / "results")
    err = capsys.readouterr().err
    assert code == 2 and result is None
    assert f"{samples}:4" in err and "truncated" in err


@pytest.fixture
def openpyxl():
    return pytest.importorskip("openpyxl", reason="openpyxl is pinned in pyproject.toml")


def test_vlmevalkit_xlsx_with_judged_result(tmp_path: Path, eval_set_file: Path,
                                            openpyxl) -> None:
    work = tmp_path / "outputs" / "MyVLM"
    rows = hf.vlm_rows(OUTPUTS)
    prediction = hf.write_xlsx(work / "MyVLM_MMStar.xlsx", rows)
    hits = {101: 1, 102: 1, 103: 0, 104: 0}
    hf.write_xlsx(work / "MyVLM_MMStar_exact_matching_result.xlsx", hf.judged(rows, hits))
    code, result = _import(["vlmevalkit", str(prediction), "--data", str(eval_set_file)],
                           tmp_path / "results")
    assert code == 0 and result is not None
    assert result.model.name == "vlmevalkit:MyVLM"
    assert result.model.harness_run.task == "MMStar"
    assert len(result.model.harness_run.files) == 2
    for row_number, item in enumerate(result.items, start=2):
        index = int(item.sample_id.split("-")[1])
        assert item.raw_output == OUTPUTS[index]
        assert item.harness.metric == "hit" and item.harness.score == hits[index]
        assert item.harness.source == f"{prediction}:{row_number}"


def test_vlmevalkit_tsv_with_thinking_and_no_judged_file(tmp_path: Path,
                                                        eval_set_file: Path) -> None:
    rows = hf.vlm_rows({101: "Answer: B", 102: "Answer: A"})
    rows[0]["thinking"] = "It has four legs and barks."
    rows[1]["thinking"] = ""
    prediction = hf.write_tsv(tmp_path / "MyVLM" / "MyVLM_MMStar.tsv", rows)
    code, result = _import(["vlmevalkit", str(prediction), "--data", str(eval_set_file)],
                           tmp_path / "results")
    assert code == 0 and result is not None
    assert [item.raw_output for item in result.items] == [
        "<think>It has four legs and barks.</think>Answer: B", "Answer: A"]
    assert all(item.harness.score is None for item in result.items)


def test_vlmevalkit_bad_input(tmp_path: Path, eval_set_file: Path, openpyxl, capsys) -> None:
    rows = [{k: v for k, v in row.items() if k != "prediction"}
            for row in hf.vlm_rows(OUTPUTS)]
    no_prediction = hf.write_xlsx(tmp_path / "M" / "M_MMStar.xlsx", rows)
    code, result = _import(["vlmevalkit", str(no_prediction), "--data", str(eval_set_file)],
                           tmp_path / "results")
    err = capsys.readouterr().err
    assert code == 2 and result is None
    assert f"{no_prediction}:2: field 'prediction': no 'prediction' column" in err

    rows = hf.vlm_rows(OUTPUTS)
    rows[2]["index"] = 999  # an item we do not have
    unmatched = hf.write_tsv(tmp_path / "N" / "N_MMStar.tsv", rows)
    code, result = _import(["vlmevalkit", str(unmatched), "--data", str(eval_set_file)],
                           tmp_path / "results")
    err = capsys.readouterr().err
    assert code == 2 and result is None
    assert f"{unmatched}:4: no item has id or source id '999'" in err
    code, result = _import(["vlmevalkit", str(unmatched), "--data", str(eval_set_file),
                            "--allow-unmatched"], tmp_path / "results")
    printed = capsys.readouterr().out
    assert code == 0 and len(result.items) == 3
    assert "left out" in printed and "'999'" in printed and "mmstar-103" in printed


def test_two_rows_for_one_item_are_ambiguous(tmp_path: Path, eval_set_file: Path,
                                             capsys) -> None:
    rows = hf.vlm_rows(OUTPUTS)
    rows[1]["index"] = 101
    rows[1]["question"], rows[1]["answer"] = rows[0]["question"], rows[0]["answer"]
    path = hf.write_tsv(tmp_path / "M" / "M_MMStar.tsv", rows)
    code, _ = _import(["vlmevalkit", str(path), "--data", str(eval_set_file)],
                      tmp_path / "results")
    err = capsys.readouterr().err
    assert code == 2 and f"{path}:2: ambiguous: rows at lines 2, 3 all match item " \
                         "'mmstar-101'" in err


def test_lmms_task_over_an_eval_set_scores_itself(tmp_path: Path, eval_set_file: Path) -> None:
    import importlib.util

    import yaml

    assert main(["eval", "lmms-task", "--data", str(eval_set_file), "--out",
                 str(tmp_path / "tasks")]) == 0
    task_yaml = tmp_path / "tasks" / "distill_mmstar_cot.yaml"

    class TaskLoader(yaml.SafeLoader):
        pass

    TaskLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    config = yaml.load(task_yaml.read_text(), Loader=TaskLoader)  # noqa: S506 - SafeLoader
    assert config["dataset_path"] == "json" and config["test_split"] == "test"
    data_file = Path(config["dataset_kwargs"]["data_files"]["test"])
    docs = [json.loads(line) for line in data_file.read_text().splitlines()]
    assert [doc["sample_id"] for doc in docs] == [f"mmstar-{i}" for i in OUTPUTS]
    assert config["doc_to_messages"] == "distill_task_utils.doc_to_messages"
    spec = importlib.util.spec_from_file_location("distill_task_utils",
                                                  tmp_path / "tasks" / "distill_task_utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    messages = utils.doc_to_messages(docs[0])
    assert messages[0]["role"] == "system"
    assert messages[1]["content"][0]["url"].size == (16, 16)  # the item's own image
    assert "Which animal" in messages[1]["content"][1]["text"]
    assert "B. dog" in docs[0]["question"]
    right = utils.process_results(docs[0], ["I see a dog.\nAnswer: B"])
    wrong = utils.process_results(docs[0], ["Answer: A"])
    assert right["distill_exact_match"]["score"] == 1.0
    assert wrong["distill_exact_match"]["score"] == 0.0
    assert right["distill_exact_match"]["sample_id"] == "mmstar-101"


def test_match_by_position_when_the_harness_numbers_items_its_own_way(
        tmp_path: Path, eval_set_file: Path, capsys) -> None:
    rows = hf.vlm_rows(OUTPUTS)
    for number, row in enumerate(rows):
        row["index"] = number  # the harness's own numbering, not the benchmark's ids
    path = hf.write_tsv(tmp_path / "M" / "M_MMStar.tsv", rows)
    code, _ = _import(["vlmevalkit", str(path), "--data", str(eval_set_file)],
                      tmp_path / "results")
    assert code == 2 and f"{path}:2: no item has id or source id '0'" in capsys.readouterr().err
    code, result = _import(["vlmevalkit", str(path), "--data", str(eval_set_file), "--match",
                            "position"], tmp_path / "results")
    assert code == 0 and [item.raw_output for item in result.items] == list(OUTPUTS.values())
    # Position with its checks: rows out of order match nothing, they are not reordered.
    rows[0], rows[1] = rows[1], rows[0]
    swapped = hf.write_tsv(tmp_path / "S" / "S_MMStar.tsv", rows)
    code, _ = _import(["vlmevalkit", str(swapped), "--data", str(eval_set_file), "--match",
                       "position"], tmp_path / "other")
    assert code == 2 and f"{swapped}:2: gold answer 'A' differs from item 'mmstar-101'" in \
        capsys.readouterr().err


def test_vlmevalkit_json_predictions_on_an_eval_set_converted_from_its_tsv(
        tmp_path: Path) -> None:
    """The everyday path: VLMEvalKit's own MMStar.tsv converted by `distill eval convert`
    (ids from its index column), its PRED_FORMAT=json predictions imported by id."""
    import base64

    from tests.conftest import png_bytes

    header = "index\tquestion\tA\tB\tC\tD\tanswer\tcategory\tl2_category\timage"
    lines = [header]
    for seed, (index, stem, options, gold, category, l2) in enumerate(hf.ITEMS):
        image = base64.b64encode(png_bytes(seed, size=(40, 40))).decode()
        lines.append("\t".join([str(index), stem, *options, gold, category, l2, image]))
    (tmp_path / "MMStar.tsv").write_text("\n".join(lines) + "\n")
    assert main(["eval", "convert", "mmstar", str(tmp_path / "MMStar.tsv"), "--out",
                 str(tmp_path / "evalsets" / "mmstar")]) == 0
    prediction = tmp_path / "outputs" / "MyVLM" / "T20260801" / "MyVLM_MMStar.json"
    prediction.parent.mkdir(parents=True)
    prediction.write_text(json.dumps(hf.vlm_rows(OUTPUTS), indent=4))
    code, result = _import(["vlmevalkit", str(prediction), "--data",
                            str(tmp_path / "evalsets" / "mmstar")], tmp_path / "results")
    assert code == 0 and result.model.name == "vlmevalkit:MyVLM"
    assert [item.sample_id for item in result.items] == [f"mmstar-{i}" for i in OUTPUTS]
    assert [item.harness.source for item in result.items] == [f"{prediction}:{n}"
                                                              for n in range(1, 5)]
