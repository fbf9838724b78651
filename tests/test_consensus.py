"""Items without gold answers, end to end: ingest withholds the gold, the filter derives
labels from the teachers' consensus, marks them as derived, reports items left without
any, and training uses the derived labels; eval refuses an eval set without gold."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.answers import same_answer
from distill.core.digits import digits_of, gold_answer
from distill.core.errors import DistillError, InputError
from distill.core.evalsets import load_eval_set, require_gold
from distill.core.shards import iter_records
from distill.filter.consensus import ItemAnswer, group_answers, score_item
from distill.filter.export import export_version
from distill.filter.pipeline import FilterOptions, run_filter
from distill.filter.policy import load_policy
from distill.filter.store import DatasetStore
from distill.generate.runner import GenerateOptions, run_generate
from distill.ingest.pipeline import IngestOptions, ingest, open_source
from distill.ingest.sources.jsonl import infer_answer_type
from distill.schemas import ImageRef, Sample, ScoredTrace
from distill.train.data import load_training_set
from testing.filter_data import make_trace, write_generate_dir
from testing.generate import builtin_teacher, write_teachers
from tests.conftest import png_bytes, write_jsonl


def sample(answer: str | None, answer_type: str = "number", **extra) -> Sample:
    return Sample(id="s", image=ImageRef(path="a.png", sha256="0" * 64), question="q?",
                  answer=answer, answer_type=answer_type, category="c", source="t", **extra)


# --- labels from answers ---------------------------------------------------------------------


def test_answers_the_judge_calls_equal_count_as_one() -> None:
    number = sample(None)
    groups = group_answers(["15", "15", "14", "", "15"], number)
    assert groups.answers == ["15", "14"] and groups.sizes == [3, 1]
    assert groups.of == [0, 0, 1, -1, 0]
    text = sample(None, "text")
    same_colour = lambda a, b: a.split()[0] == b.split()[0]  # noqa: E731 - a judge stand-in
    plain = group_answers(["red car", "red automobile", "blue car"], text)
    assert plain.sizes == [1, 1, 1]  # no rule makes these equal
    judged = group_answers(["red car", "red automobile", "blue car"], text, same_colour)
    assert judged.sizes == [2, 1] and judged.of == [0, 0, 1]


def test_a_strict_majority_becomes_the_label_a_tie_does_not() -> None:
    item = sample(None)
    out = score_item([ItemAnswer("a", "7", False), ItemAnswer("a", "7", False),
                      ItemAnswer("b", "7", False), ItemAnswer("b", "9", False)], item)
    assert {(s["label"], s["label_source"]) for s in out} == {("7", "consensus")}
    assert [s["agrees_with_label"] for s in out] == [True, True, True, False]
    assert out[0]["majority_fraction"] == 0.75 and out[0]["majority_count"] == 3
    assert out[0]["majority_teachers"] == 2 and out[3]["teacher_majority_share"] == 0.5
    assert out[0]["pass_rate_k"] == 0.0  # no gold, no pass rate
    tie = score_item([ItemAnswer("a", "7", False), ItemAnswer("b", "9", False)], item)
    assert {(s["label"], s["label_source"]) for s in tie} == {("", "none")}
    assert not any(s["agrees_with_label"] for s in tie)
    nothing = score_item([ItemAnswer("a", "", False)], item)
    assert nothing[0]["label_source"] == "none" and nothing[0]["majority_answer"] == ""


def test_judge_scores_break_a_tie_and_say_so() -> None:
    item = sample(None)
    scored = [ItemAnswer("a", "7", False, 0.25), ItemAnswer("b", "9", False, 1.0)]
    out = score_item(scored, item)
    assert {(s["label"], s["label_source"]) for s in out} == {("9", "judge")}
    assert [s["agrees_with_label"] for s in out] == [False, True]
    even = [ItemAnswer("a", "7", False, 0.5), ItemAnswer("b", "9", False, 0.5)]
    assert score_item(even, item)[0]["label_source"] == "none"
    half = [ItemAnswer("a", "7", False, 0.5), ItemAnswer("b", "9", False, None)]
    assert score_item(half, item)[0]["label_source"] == "none"


def test_gold_stays_the_label_where_there_is_one() -> None:
    out = score_item([ItemAnswer("a", "7", False), ItemAnswer("b", "7", False),
                      ItemAnswer("c", "8", True)], sample("8"))
    assert {(s["label"], s["label_source"]) for s in out} == {("8", "gold")}
    assert [s["agrees_with_label"] for s in out] == [False, False, True]
    assert out[0]["majority_answer"] == "7"


def test_answer_type_is_inferred_from_the_question_by_its_stated_rule() -> None:
    assert infer_answer_type(None, None, "Is the cup red?") == "yes_no"
    assert infer_answer_type(None, None, "How many birds are there?") == "number"
    assert infer_answer_type(None, None, "What number is on the door?") == "number"
    assert infer_answer_type(None, None, "What is written on the sign?") == "text"
    assert infer_answer_type(None, ["a", "b"], "Which one?") == "choice"
    assert infer_answer_type("12", None, "Is it?") == "number"  # gold decides when given


# --- the digits pool with the train split's gold withheld -------------------------------------


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pool")
    rows, total = open_source("digits", None, counts={"train": 40, "test": 12})
    ingest(rows, IngestOptions(out=root / "ingest", shard_size=20, withhold_gold=("train",),
                               gold_out=root / "gold.jsonl"), total=total)
    teachers = write_teachers(root / "teachers.yaml", {"knn": builtin_teacher("knn"),
                                                       "logreg": builtin_teacher("logreg")})
    run_generate(GenerateOptions(root / "ingest", str(teachers), root / "traces",
                                 splits=("train",)))
    result = run_filter(FilterOptions(traces=root / "traces", store=root / "store",
                                      policy=load_policy("consensus"),
                                      eval_sets=[f"{root / 'ingest'}:test"]))
    gold = {row["id"]: row["answer"]
            for row in map(json.loads, (root / "gold.jsonl").read_text().splitlines())}
    return {"root": root, "result": result, "gold": gold,
            "version": DatasetStore(root / "store").version_dir(result.version)}


def scored_rows(version: Path) -> list[ScoredTrace]:
    return [r for p in sorted(version.glob("scored/*/*.jsonl"))
            for r in iter_records(p, ScoredTrace)]


def test_ingest_withholds_the_gold_outside_the_pipeline(pool) -> None:
    root, gold = pool["root"], pool["gold"]
    samples = [s for p in sorted((root / "ingest" / "samples").glob("*/*.jsonl"))
               for s in iter_records(p, Sample)]
    train = [s for s in samples if s.split == "train"]
    assert len(train) == len(gold) == 40 and all(s.answer is None for s in train)
    assert all(s.answer is not None for s in samples if s.split == "test")
    assert all(gold[s.id] == gold_answer(s.category, digits_of(s)) for s in train)
    manifest = json.loads((root / "ingest" / "manifest.json").read_text())
    assert manifest["counts"]["samples_without_gold"] == 40
    assert manifest["config"]["withheld_gold"]["splits"] == ["train"]
    with pytest.raises(DistillError, match="inside"):
        ingest(iter([]), IngestOptions(out=root / "x", withhold_gold=("train",),
                                       gold_out=root / "x" / "gold.jsonl"))


def test_consensus_labels_are_derived_marked_and_mostly_right(pool) -> None:
    rows = scored_rows(pool["version"])
    gold = pool["gold"]
    assert rows and {r.signals["correctness"] for r in rows} == {"no_gold"}
    kept = [r for r in rows if r.verdict == "keep"]
    assert kept and all(r.label_source == "consensus" and r.signals["agrees_with_label"]
                        and r.signals["majority_fraction"] >= 0.75 for r in kept)
    assert all(same_answer(r.trace.final_answer, r.label, r.sample) for r in kept)
    labels = {r.sample.id: r for r in kept}
    right = sum(same_answer(r.label, gold[i], r.sample) for i, r in labels.items())
    # Two real digit readers agreeing on >= 3 of 4 answers are rarely both wrong.
    assert right / len(labels) >= 0.9, (right, len(labels))
    counts = pool["result"].manifest.counts
    assert counts["kept_items:label_consensus"] == len(labels)
    assert counts["items:label_consensus"] + counts.get("items:label_none", 0) == 40
    report = (pool["version"] / "report" / "report.md").read_text()
    assert "## Labels: gold or derived" in report and "derived from the teachers" in report


def test_training_uses_the_derived_labels_and_says_so(pool) -> None:
    training = load_training_set(pool["version"], target="gold")
    assert training.label_sources == Counter({"consensus": len(training.items)})
    assert training.derived_labels == len(training.items)
    rows = {r.trace.trace_key: r for r in scored_rows(pool["version"]) if r.verdict == "keep"}
    for item in training.items:
        assert item.label_source == "consensus"
        assert item.target.endswith(next(r.label for r in rows.values()
                                         if r.sample.id == item.sample.id))
    with pytest.raises(InputError, match="no gold answer") as info:
        load_training_set(pool["root"] / "ingest", target="gold", split="train")
    assert info.value.field == "answer"


def test_exports_carry_the_label_and_its_source(pool, tmp_path) -> None:
    store = DatasetStore(pool["root"] / "store")
    export_version(store, pool["result"].version, "jsonl", tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows and all(r["answer"] is None and r["label_source"] == "consensus"
                        and r["label"] for r in rows)


def test_eval_refuses_a_set_without_gold(pool, tmp_path, capsys) -> None:
    eval_set = load_eval_set(f"{pool['root'] / 'ingest'}:train")
    with pytest.raises(InputError, match="40 of 40 eval items have no gold") as info:
        require_gold(eval_set)
    assert info.value.field == "answer"
    require_gold(load_eval_set(f"{pool['root'] / 'ingest'}:test"))
    # From the command line: one error line, exit 2, before any model is looked for.
    code = main(["eval", "--model", f"siqvl:{tmp_path / 'no-such-run'}", "--data",
                 f"{pool['root'] / 'ingest'}:train", "--out", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "have no gold answer" in err
    assert "no-such-run" not in err and not (tmp_path / "results").exists()


# --- items left without any label are reported -----------------------------------------------


def scripted(sample: Sample) -> list:
    """Two teachers: nothing for count_even items (every call failed upstream), a number
    for a yes/no question on sum_is_even items (no answer of the asked type), else the
    true answer from both."""
    if sample.category == "count_even":
        return []
    if sample.category == "sum_is_even":
        answer = str(sum(digits_of(sample)))
    else:
        answer = gold_answer(sample.category, digits_of(sample))
    return [make_trace(sample, teacher, 0, f"I read {digits_of(sample)}.\nAnswer: {answer}")
            for teacher in ("t1", "t2")]


def test_items_without_gold_or_any_answer_are_reported_not_dropped(tmp_path) -> None:
    rows, total = open_source("digits", None, counts={"train": 24})
    ingest(rows, IngestOptions(out=tmp_path / "ingest", withhold_gold=("train",),
                               gold_out=tmp_path / "gold.jsonl"), total=total)
    write_generate_dir(tmp_path / "gen", tmp_path / "ingest", scripted)
    result = run_filter(FilterOptions(traces=tmp_path / "gen", store=tmp_path / "store",
                                      policy=load_policy("consensus")))
    samples = list(iter_records(next((tmp_path / "ingest").glob("samples/train/*.jsonl")),
                                Sample))
    by_category = Counter(s.category for s in samples)
    counts = result.manifest.counts
    assert counts["items_unlabeled:no_traces"] == by_category["count_even"]
    assert counts["items_unlabeled:no_answer"] == by_category["sum_is_even"]
    assert counts["kept_items:label_consensus"] == (by_category["sum"]
                                                    + by_category["max_minus_min"])
    report = result.report.read_text()
    assert "have neither a gold answer nor a derived label" in report
    missing = next(s.id for s in samples if s.category == "count_even")
    assert f"{missing} (no_traces)" in report


def test_truncated_outputs_are_no_answers_to_agree_with(tmp_path) -> None:
    """Two traces cut at the token limit that got as far as 'Answer: 9' are unparseable
    to the judge, so they are no votes: the one finished trace's 7 is the label."""
    (tmp_path / "a.png").write_bytes(png_bytes(5))
    write_jsonl(tmp_path / "items.jsonl", [
        {"id": "dots", "image": "a.png", "question": "How many dots are there?"}])
    rows, _ = open_source("jsonl", tmp_path / "items.jsonl")
    ingest(rows, IngestOptions(out=tmp_path / "ingest"))
    write_generate_dir(tmp_path / "gen", tmp_path / "ingest", lambda item: [
        make_trace(item, "t1", 0, "I count nine.\nAnswer: 9", finish_reason="length"),
        make_trace(item, "t2", 0, "I count nine.\nAnswer: 9", finish_reason="length"),
        make_trace(item, "t3", 0, "I count seven.\nAnswer: 7")])
    policy = load_policy("consensus")
    # The policy keeps none of the three (the label's one vote is a third): asked for.
    result = run_filter(FilterOptions(traces=tmp_path / "gen", store=tmp_path / "store",
                                      policy=policy, allow_empty=True))
    rows_ = scored_rows(DatasetStore(tmp_path / "store").version_dir(result.version))
    by_teacher = {row.trace.teacher_id: row.signals for row in rows_}
    assert {(s["label"], s["label_source"]) for s in by_teacher.values()} == {("7", "consensus")}
    for teacher in ("t1", "t2"):
        assert by_teacher[teacher]["answer_canonical"] == ""
        assert by_teacher[teacher]["answer_reason"] == "truncated"
        assert by_teacher[teacher]["correctness"] == "no_gold"
        assert not by_teacher[teacher]["agrees_with_label"]
    assert by_teacher["t3"]["answer_reason"] == "no_gold"
    assert by_teacher["t3"]["majority_count"] == 1
    assert by_teacher["t3"]["majority_fraction"] == pytest.approx(1 / 3)
    # The report counts the two outputs without an answer, not the answered one.
    assert dict(result.stats.answer_reasons) == {"no_gold/truncated": 2}


def test_agreement_counts_whoever_answered_a_routed_item(tmp_path) -> None:
    """Teachers routed by category (as the seed's pipeline routes them): an item's
    agreement is over the teachers that answered it, however many that is."""
    rows, total = open_source("digits", None, counts={"train": 16})
    ingest(rows, IngestOptions(out=tmp_path / "ingest", withhold_gold=("train",),
                               gold_out=tmp_path / "gold.jsonl"), total=total)
    teachers = write_teachers(tmp_path / "teachers.yaml",
                              {"knn": builtin_teacher("knn"), "logreg": builtin_teacher("logreg")},
                              routing={"default": ["knn", "logreg"], "sum": ["logreg"]})
    run_generate(GenerateOptions(tmp_path / "ingest", str(teachers), tmp_path / "traces"))
    policy = load_policy("consensus")
    result = run_filter(FilterOptions(traces=tmp_path / "traces", store=tmp_path / "store",
                                      policy=policy))
    rows_ = scored_rows(DatasetStore(tmp_path / "store").version_dir(result.version))
    by_category: dict[str, set] = {}
    for row in rows_:
        by_category.setdefault(row.sample.category, set()).add(
            (row.signals["n_teachers"], row.signals["n_samples_k"]))
        assert row.signals["label_source"] in ("consensus", "none")
    assert by_category["sum"] == {(1, 2)}  # logreg alone, its k=2 samples
    assert all(found == {(2, 2)} for category, found in by_category.items() if category != "sum")


def test_eval_set_conversion_refuses_rows_without_gold(tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(3))
    write_jsonl(tmp_path / "items.jsonl", [
        {"id": "ok", "image": "a.png", "question": "How many?", "answer": "3"},
        {"id": "none", "image": "a.png", "question": "How many?"}])
    rows, _ = open_source("jsonl", tmp_path / "items.jsonl")
    with pytest.raises(InputError, match="no gold answer") as info:
        ingest(rows, IngestOptions(out=tmp_path / "eval", require_gold=True))
    assert (info.value.field, info.value.line) == ("answer", 2)
    rows, _ = open_source("jsonl", tmp_path / "items.jsonl")
    summary = ingest(rows, IngestOptions(out=tmp_path / "pool"))  # a pool takes both
    assert summary.total == 2 and summary.no_gold == 1
