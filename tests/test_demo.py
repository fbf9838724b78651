"""The README's main job, reduced: every stage runs, every output holds to its schema, and
every result traces back to the teachers' traces and the ingested samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.config_files import KeyProblem
from distill.core.errors import DistillError
from distill.core.predictors import model_fingerprint
from distill.core.shards import iter_records, read_json_model
from distill.demo import QUICK_PLAN, DemoPlan, load_plan
from distill.evaluate.lineage import trace_lineage
from distill.generate.teachers import load_teacher_set
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

    versions = [v for v in (demo / "datasets" / "versions").iterdir()
                if read_json_model(v / "manifest.json", DatasetManifest).parent is None]
    assert len(versions) == 1  # the others are the round's children of it
    dataset = read_json_model(versions[0] / "manifest.json", DatasetManifest)
    kept = records(versions[0], dataset.shards, ScoredTrace)
    assert kept and all(r.verdict == "keep" for r in kept)
    assert {r.trace.trace_key for r in kept} <= {t.trace_key for t in traces}
    assert all(r.sample.split == "train" for r in kept)
    assert len(dataset.eval_sets) == len(plan.decontaminate)

    for name, seed in plan.runs():
        run_dir = demo / "runs" / name / f"seed-{seed}"
        run = read_json_model(run_dir / "manifest.json", RunManifest)
        assert run.config["seed"] == seed
        assert (run.dataset_version == dataset.version) == (plan.students[name].data is None)
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


# --- the teachers beside the students, and a second round (issue 31) --------------------------


def test_the_teachers_stand_beside_the_students(demo: Path) -> None:
    plan = load_plan(QUICK_PLAN)
    for teacher_id in ("knn", "logreg"):
        result = read_json_model(demo / "teacher-results" / f"{teacher_id}.json", EvalResult)
        assert (result.model.kind, result.model.name) == ("engine", teacher_id)
        assert result.generation["decoding"] == "greedy"
        assert len(result.items) == plan.counts["test"]
    summary = (demo / "report" / "demo.md").read_text()
    assert "share of the best teacher" in summary
    assert "| teacher knn" in summary and "| teacher logreg" in summary
    compare = (demo / "report" / "compare.md").read_text()
    # every model named by what it is: the plan's recipe and seed, or the teacher's id
    assert "| direct seed 0 |" in compare and "| direct-more seed 0 |" in compare
    assert "seed-0/final" not in compare
    assert "| teacher knn | " in compare


def test_a_second_round_is_written_by_the_student_and_published_as_a_child(demo: Path):
    plan = load_plan(QUICK_PLAN)
    [first] = [p for p in (demo / "datasets" / "versions").iterdir()
               if read_json_model(p / "manifest.json", DatasetManifest).parent is None]
    parent = read_json_model(first / "manifest.json", DatasetManifest)
    for seed in plan.training_seeds:
        folder = demo / "rounds" / "round2" / f"seed-{seed}"
        checkpoint = (demo / "runs" / "cot" / f"seed-{seed}" / "final").resolve()
        generate = read_json_model(folder / "traces" / "manifest.json", StageManifest)
        teacher = generate.config["teacher_set"]["teachers"][f"cot-seed-{seed}"]
        assert (teacher["engine"], teacher["model"]) == ("hf", str(checkpoint))
        assert teacher["checkpoint"]["fingerprint"] == model_fingerprint(checkpoint)
        assert teacher["prompt_id"] == "question-cot"  # asked as it was trained
        traces = records(folder / "traces", generate.shards, Trace)
        rejects = records(folder / "traces", generate.rejects, Rejection)
        record = json.loads((folder / "round.json").read_text())
        assert len(traces) + len(rejects) == record["wrong_at_greedy"] * 2  # k = 2
        assert all((t.engine, t.model) == ("hf", str(checkpoint)) for t in traces)
        child = read_json_model(demo / "datasets" / "versions" / record["version"] /
                                "manifest.json", DatasetManifest)
        assert child.parent == parent.version
        assert child.counts["kept_parent"] == parent.counts["kept"]
        assert sum(n for key, n in child.counts.items()
                   if key.startswith("kept_by_teacher:")) == child.counts["kept"]
        run = read_json_model(demo / "runs" / "cot-round2" / f"seed-{seed}" / "manifest.json",
                              RunManifest)
        assert run.dataset_version == child.version
    report = (demo / "datasets" / "versions" / record["version"] / "report" /
              "report.md").read_text()
    assert "## Sources of this version's rows" in report


def test_lineage_of_a_round_two_result_reaches_the_first_traces(demo: Path) -> None:
    links = trace_lineage(demo / "results" / "cot-round2" / "seed-0.json")
    assert [link.kind for link in links if link.status == "broken"] == []
    teacher = next(link for link in links if link.kind == "teacher checkpoint")
    assert teacher.status == "ok" and teacher.depth == 1
    assert teacher.path == str((demo / "runs" / "cot" / "seed-0" / "final").resolve())
    deeper = [(link.kind, link.path) for link in links if link.depth]
    # through the student-as-teacher: its run, its dataset, the teachers' first traces and
    # the ingested samples; and the child's parent version, already shown
    assert ("run", str((demo / "runs" / "cot" / "seed-0" / "manifest.json").resolve())) in [
        (kind, str(Path(path).resolve())) for kind, path in deeper]
    assert ("traces", str((demo / "traces" / "manifest.json").resolve())) in [
        (kind, str(Path(path).resolve())) for kind, path in deeper]
    assert ("samples", str((demo / "ingest" / "manifest.json").resolve())) in [
        (kind, str(Path(path).resolve())) for kind, path in deeper]
    assert [kind for kind, _ in deeper].count("parent dataset") == 1


def _teacher_set(path: Path, model: Path, prompt: str | None = None,
                 engine: str = "hf") -> Path:
    lines = ["teachers:", "  student:", f"    engine: {engine}", f"    model: {model}"]
    lines += [f"    prompt: {prompt}"] if prompt else []
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_student_teacher_is_asked_as_trained_and_named_by_its_checkpoint(demo: Path,
                                                                            tmp_path: Path):
    run = tmp_path / "cot-run"
    shutil.copytree(demo / "runs" / "cot" / "seed-0", run)
    teachers = load_teacher_set(_teacher_set(tmp_path / "a.yaml", run))
    teacher = teachers.teachers["student"]
    assert teacher.prompt.id == "question-cot" and teacher.engine_name == "hf"
    assert teacher.spec.model == str((run / "final").resolve())
    assert teacher.checkpoint.run_manifest == (run / "manifest.json").resolve()
    with pytest.raises(DistillError, match="trained to be asked with question-cot or "
                                           "question-direct"):
        load_teacher_set(_teacher_set(tmp_path / "b.yaml", run, prompt="cot"))
    assert load_teacher_set(_teacher_set(tmp_path / "c.yaml", run,
                                         prompt="question-direct")).teachers
    # a served model's name is a name, even where a folder of that name exists
    served = load_teacher_set(_teacher_set(tmp_path / "s.yaml", run, engine="openai"))
    assert served.teachers["student"].checkpoint is None
    assert served.teachers["student"].spec.model == str(run)
    # retrained into the same folder: another teacher (its traces never mix with the old)
    config = run / "final" / "config.json"
    config.write_text(config.read_text().replace("{", '{"note": "retrained", ', 1))
    assert load_teacher_set(_teacher_set(tmp_path / "d.yaml", run)).hash != teachers.hash
    with pytest.raises(DistillError, match="no final/ checkpoint"):
        shutil.rmtree(run / "final")
        load_teacher_set(_teacher_set(tmp_path / "e.yaml", run))


def test_the_student_engine_reads_one_image_a_request(demo: Path) -> None:
    from distill.generate.engines.base import ChatRequest, Completion, EngineFailure
    from distill.generate.engines.hf import HFOptions
    from distill.schemas import SamplingParams
    from distill.train.student_engine import StudentEngine

    image = next((demo / "ingest" / "images").rglob("*.png")).read_bytes()
    sampling = SamplingParams(temperature=0.7, max_tokens=8, seed=0)
    requests = [ChatRequest(id="two", system="", user="What is the sum?",
                            images=(image, image), sampling=sampling),
                ChatRequest(id="one", system="", user="What is the sum?", images=(image,),
                            sampling=sampling, ks=(0, 1))]
    with StudentEngine(str(demo / "runs" / "cot" / "seed-0"), HFOptions()) as engine:
        results = {done.request.id: done.results for done in engine.generate(requests)}
        again = {done.request.id: done.results for done in engine.generate(requests)}
    assert isinstance(results["two"][0], EngineFailure)
    assert results["two"][0].reason == "engine_error:image_count"
    assert all(isinstance(r, Completion) and r.completion_tokens for r in results["one"])
    assert [r.text for r in results["one"]] == [r.text for r in again["one"]]  # seeded
