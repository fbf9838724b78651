"""The README's main job, reduced: every stage runs, every output holds to its schema, and
every result traces back to the teachers' traces and the ingested samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main
from distill.core.config_files import KeyProblem
from distill.core.shards import iter_records, read_json_model
from distill.demo import QUICK_PLAN, DemoPlan, load_plan
from distill.evaluate.lineage import trace_lineage
from distill.schemas import (
    DatasetManifest,
    EvalResult,
    Rejection,
    RunManifest,
    Sample,
    ScoredTrace,
    StageManifest,
    Trace,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def records(folder: Path, refs, model) -> list:
    return [record for ref in refs for record in iter_records(folder / ref.name, model)]


def test_every_stage_output_holds_to_its_schema(demo: Path) -> None:
    plan = load_plan(QUICK_PLAN)
    ingest = read_json_model(demo / "ingest" / "manifest.json", StageManifest)
    samples = records(demo / "ingest", ingest.shards, Sample)
    assert len(samples) == sum(plan.counts.values())

    generate = read_json_model(demo / "traces" / "manifest.json", StageManifest)
    assert generate.stage == "generate"
    traces = records(demo / "traces", generate.shards, Trace)
    records(demo / "traces", generate.rejects, Rejection)
    train_ids = {s.id for s in samples if s.split == "train"}
    assert {t.sample_id for t in traces} == train_ids
    assert len({t.trace_key for t in traces}) == len(traces)

    versions = list((demo / "datasets" / "versions").iterdir())
    assert len(versions) == 1
    dataset = read_json_model(versions[0] / "manifest.json", DatasetManifest)
    kept = records(versions[0], dataset.shards, ScoredTrace)
    assert kept and all(r.verdict == "keep" for r in kept)
    assert {r.trace.trace_key for r in kept} <= {t.trace_key for t in traces}
    assert all(r.sample.split == "train" for r in kept)
    assert len(dataset.eval_sets) == len(plan.decontaminate)

    for name, seed in plan.runs():
        run_dir = demo / "runs" / name / f"seed-{seed}"
        run = read_json_model(run_dir / "manifest.json", RunManifest)
        assert run.dataset_version == dataset.version and run.config["seed"] == seed
        assert (run_dir / "final" / "config.json").exists()
        result = read_json_model(demo / "results" / name / f"seed-{seed}.json", EvalResult)
        assert len(result.items) == plan.counts["test"]
        assert {i.sample_id for i in result.items} == {s.id for s in samples
                                                       if s.split == "test"}


def test_each_result_traces_back_to_the_traces_and_samples(demo: Path) -> None:
    for name, seed in load_plan(QUICK_PLAN).runs():
        links = trace_lineage(demo / "results" / name / f"seed-{seed}.json")
        assert [link.status for link in links if link.status == "broken"] == []
        kinds = [link.kind for link in links]
        for kind in ("eval result", "eval set", "model", "run", "dataset", "traces", "samples"):
            assert kind in kinds
        details = " ".join(d for link in links for d in link.details)
        assert "teachers knn, logreg" in details
        assert "decontaminated against the evaluated set" in details


def test_the_report_is_written(demo: Path) -> None:
    report = demo / "report"
    for name in ("demo.md", "compare.md", "accuracy.png", "compare.html", "seeds.png"):
        assert (report / name).stat().st_size > 0
    text = (report / "demo.md").read_text()
    assert "| cot | " in text and "| direct | " in text and "seeds 0, 1" in text
    assert "| cot - direct | 0, 1 |" in text  # the gain, paired seed by seed
    assert "## Across training seeds" in (report / "compare.md").read_text()


def test_a_continued_student_starts_from_its_parents_model_and_counts_its_budget(demo: Path):
    plan = load_plan(QUICK_PLAN)
    for seed in plan.training_seeds:
        run = read_json_model(demo / "runs" / "direct-more" / f"seed-{seed}" / "manifest.json",
                              RunManifest)
        # Relative to the run's folder (lineage follows it in a moved project).
        assert run.parent_checkpoint == f"../../direct/seed-{seed}/final"
        assert run.steps == 6 and run.config["data_start"] == 12
    row = next(line for line in (demo / "report" / "demo.md").read_text().splitlines()
               if line.startswith("| direct-more |"))
    assert "| 18 |" in row  # 12 steps of direct, then 6 of its own


def test_a_student_can_continue_only_one_listed_before_it():
    plan = load_plan(QUICK_PLAN).model_dump()
    plan["students"] = {"later": {**plan["students"]["direct"], "continues": "direct"},
                        "direct": plan["students"]["direct"]}
    plan["baseline"] = "direct"
    with pytest.raises(KeyProblem, match="not a student listed before 'later'"):
        DemoPlan.model_validate(plan)


def test_running_it_again_redoes_nothing_and_changes_nothing(demo: Path, capsys) -> None:
    before = {p: p.read_bytes() for p in (demo / "results").glob("*/*.json")}
    assert len(before) == len(load_plan(QUICK_PLAN).runs())
    version_dirs = sorted((demo / "datasets" / "versions").iterdir())
    assert main(["demo", "--quick", "--out", str(demo)]) == 0
    printed = capsys.readouterr().err
    assert printed.count("already done") >= 3
    after = {p: p.read_bytes() for p in (demo / "results").glob("*/*.json")}
    assert before.keys() == after.keys()
    for path in before:
        old = EvalResult.model_validate_json(before[path])
        new = EvalResult.model_validate_json(after[path])
        assert old.result_id == new.result_id and old.items == new.items
    assert sorted((demo / "datasets" / "versions").iterdir()) == version_dirs
