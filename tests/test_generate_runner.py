"""`distill generate` end to end with the built-in teachers: layout, exactly-once, resume."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.digits import QUESTIONS
from distill.core.errors import DistillError, InputError
from distill.core.images import read_image_bytes
from distill.core.shards import iter_records, partial_path, read_json_model
from distill.generate.runner import GenerateOptions, run_generate
from distill.generate.teachers import load_teacher_set
from distill.schemas import Rejection, Sample, StageManifest, Trace
from testing.generate import (
    builtin_teacher,
    content_set,
    leftovers,
    make_ingest,
    read_outputs,
    write_teachers,
)

ROUTED = {"default": ["knn", "logreg"], "max_minus_min": ["logreg"]}


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory) -> Path:
    return make_ingest(tmp_path_factory.mktemp("ingest") / "d", {"train": 50, "val": 20},
                       shard_size=20)


@pytest.fixture
def teachers(tmp_path) -> Path:
    return write_teachers(tmp_path / "teachers.yaml",
                          {"knn": builtin_teacher("knn", k=2),
                           "logreg": builtin_teacher("logreg", k=1)}, ROUTED)


def _samples(samples_dir: Path) -> list[Sample]:
    return [s for p in sorted(samples_dir.glob("samples/*/part-*.jsonl"))
            for s in iter_records(p, Sample)]


def _expected(samples_dir: Path) -> int:
    return sum(1 if s.category == "max_minus_min" else 3 for s in _samples(samples_dir))


def test_every_requested_output_lands_exactly_once(samples_dir, teachers, tmp_path):
    out = tmp_path / "gen"
    summary = run_generate(GenerateOptions(samples_dir, str(teachers), out))
    traces, rejects = read_outputs(out)
    keys = [t.trace_key for t in traces] + [r.key for r in rejects]
    assert len(keys) == len(set(keys)) == _expected(samples_dir)
    assert summary.traces == len(traces) and summary.rejected == len(rejects)
    # Shards mirror the input shards; the manifest lists them with true counts.
    inputs = sorted(p.relative_to(samples_dir / "samples").as_posix()
                    for p in samples_dir.glob("samples/*/part-*.jsonl"))
    assert sorted(p.relative_to(out / "traces").as_posix()
                  for p in out.glob("traces/*/part-*.jsonl")) == inputs
    manifest = read_json_model(out / "manifest.json", StageManifest)
    assert manifest.stage == "generate"
    assert manifest.counts["traces"] == len(traces)
    assert sum(ref.rows for ref in manifest.shards) == len(traces)
    # Images resolve from the generate manifest alone (image_root is relative to its folder,
    # so a project moved as a whole still finds them).
    by_id = {s.id: s for s in _samples(samples_dir)}
    assert not Path(manifest.image_root).is_absolute()
    assert read_image_bytes(by_id[traces[0].sample_id].image, out / manifest.image_root)
    # Routing: max_minus_min items only went to logreg; k=2 for knn.
    per_teacher = Counter((by_id[t.sample_id].category == "max_minus_min", t.teacher_id)
                          for t in traces)
    assert per_teacher[(True, "knn")] == 0
    assert {t.k for t in traces if t.teacher_id == "knn"} == {0, 1}
    assert not leftovers(out)


def test_rerun_skips_finished_shards_without_touching_them(samples_dir, teachers, tmp_path):
    out = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), out))
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/part-*.jsonl")}
    before = content_set(read_outputs(out)[0])
    summary = run_generate(GenerateOptions(samples_dir, str(teachers), out))
    assert summary.traces == 0 and summary.shards_done == 0
    assert summary.shards_skipped == len(list(samples_dir.glob("samples/*/part-*.jsonl")))
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/part-*.jsonl")} == stamps
    assert content_set(read_outputs(out)[0]) == before


def test_torn_tail_of_a_partial_shard_is_cut_not_parsed(samples_dir, teachers, tmp_path,
                                                        caplog):
    out = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), out))
    expected = content_set(read_outputs(out)[0])
    # Make one shard look like a crash mid-write: partial files, a torn last line.
    shard = out / "traces/train/part-00001.jsonl"
    lines = shard.read_bytes().splitlines(keepends=True)
    partial_path(shard).write_bytes(b"".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    shard.unlink()
    (out / "rejects/train/part-00001.jsonl").unlink()
    with caplog.at_level(logging.WARNING, logger="distill.core.shards"):
        summary = run_generate(GenerateOptions(samples_dir, str(teachers), out))
    assert summary.repaired_bytes > 0
    assert any("torn last line" in r.message for r in caplog.records)
    assert summary.already_done == 5
    assert content_set(read_outputs(out)[0]) == expected
    assert not leftovers(out)


def test_changed_image_becomes_a_rejection_not_a_crash(tmp_path, teachers):
    samples_dir = make_ingest(tmp_path / "d", {"val": 6})
    victim = next(iter_records(samples_dir / "samples/val/part-00000.jsonl", Sample))
    (samples_dir / victim.image.path).write_bytes(b"not the original bytes")
    out = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), out))
    traces, rejects = read_outputs(out)
    assert {r.reason for r in rejects} == {"image_error:image_changed"}
    assert {r.sample_id for r in rejects} == {victim.id}
    assert all(r.permanent for r in rejects)
    assert victim.id not in {t.sample_id for t in traces}


def test_unanswerable_output_is_an_unparseable_rejection_with_its_text(tmp_path, teachers):
    """A blank grid: the readers say they see no digits; no answer, so no trace."""
    import json

    from distill.core.digits import render
    from distill.ingest.pipeline import IngestOptions, ingest, open_source

    render([]).save(tmp_path / "blank.png", format="PNG")
    rows = [{"id": "blank-1", "image": "blank.png", "question": QUESTIONS["sum"][0],
             "answer": "0", "category": "sum", "split": "val"}]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source, _ = open_source("jsonl", tmp_path / "items.jsonl")
    samples_dir = tmp_path / "d"
    ingest(source, IngestOptions(out=samples_dir))
    out = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), out))
    traces, rejects = read_outputs(out)
    assert not traces and len(rejects) == 3  # knn k=2 + logreg k=1
    assert {r.reason for r in rejects} == {"unparseable"}
    assert all(r.raw == "I cannot find any digits in the image." for r in rejects)
    assert all(r.permanent and r.location.endswith(":1") for r in rejects)


def test_one_output_folder_refuses_a_different_teacher_set(samples_dir, teachers, tmp_path):
    out = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), out, splits=("val",)))
    other = write_teachers(tmp_path / "other.yaml", {"knn": builtin_teacher("knn", k=3)})
    with pytest.raises(DistillError, match="different teacher set"):
        run_generate(GenerateOptions(samples_dir, str(other), out))
    # Another split into the same folder is fine and the manifest covers both.
    run_generate(GenerateOptions(samples_dir, str(teachers), out, splits=("train",)))
    manifest = read_json_model(out / "manifest.json", StageManifest)
    assert {"traces/train", "traces/val"} <= set(manifest.counts)


@pytest.mark.parametrize(("teachers_doc", "field"), [
    ({"teachers": {"a": {"engine": "nope", "model": "m"}}}, "teachers.a.engine"),
    ({"teachers": {"a": {"engine": "builtin", "model": "knn", "options": {"x": 1}}}},
     "teachers.a.options.x"),
    ({"teachers": {"a": {"engine": "builtin", "model": "knn", "prompt": "missing"}}},
     "teachers.a.prompt"),
    ({"teachers": {"a": {"engine": "builtin", "model": "knn"}}, "routing": {"sum": ["b"]}},
     "routing.sum"),
    ({"teachers": {"a": {"engine": "builtin", "model": "knn", "k": 0}}}, "teachers.a.k"),
    ({"teachers": {"a": {"engine": "builtin", "model": "knn", "temperature": 1}}},
     "teachers.a.temperature"),
    # The abstract base, or a path without a module, is one line, not a traceback.
    ({"teachers": {"a": {"engine": "distill.generate.engines.base:Engine", "model": "m"}}},
     "teachers.a.engine"),
    ({"teachers": {"a": {"engine": ":Foo", "model": "m"}}}, "teachers.a.engine"),
    ({"teachers": {"a": {"engine": "os.path:Foo", "model": "m"}}}, "teachers.a.engine"),
    # A denormal temperature would sample from NaN probabilities.
    ({"teachers": {"a": {"engine": "builtin", "model": "knn",
                         "sampling": {"temperature": 1e-310}}}}, "teachers.a.sampling"),
    # A server URL without a scheme is a config error, not a run of connection failures.
    ({"teachers": {"a": {"engine": "openai", "model": "m",
                         "options": {"base_url": "localhost:8000/v1"}}}},
     "teachers.a.options.base_url"),
    ({"teachers": {"a": {"engine": "openai", "model": "m",
                         "options": {"base_url": ["http://h:1/v1", "h2/v1"]}}}},
     "teachers.a.options.base_url"),
])
def test_bad_teacher_sets_name_the_field(tmp_path, teachers_doc, field):
    import yaml

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(teachers_doc))
    with pytest.raises(InputError) as error:
        load_teacher_set(path)
    assert error.value.field == field
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_teacher_options_that_change_outputs_cannot_change_on_one_out(samples_dir, tmp_path):
    """pool_seed decides what the built-in readers answer: a second run on the same --out
    with another value is refused (it would mix two settings' traces under one manifest);
    batch_size only decides how requests are grouped, so it may change."""
    out = tmp_path / "gen"
    first = write_teachers(tmp_path / "a.yaml", {"knn": builtin_teacher("knn", k=1)})
    run_generate(GenerateOptions(samples_dir, str(first), out, splits=("val",)))
    reseeded = write_teachers(tmp_path / "b.yaml", {"knn": {
        **builtin_teacher("knn", k=1), "options": {"pool_seed": 1}}})
    with pytest.raises(DistillError, match="'knn' option pool_seed = '\\(default\\)', not 1"):
        run_generate(GenerateOptions(samples_dir, str(reseeded), out, splits=("train",)))
    rebatched = write_teachers(tmp_path / "c.yaml", {"knn": {
        **builtin_teacher("knn", k=1), "batch_size": 3}})
    summary = run_generate(GenerateOptions(samples_dir, str(rebatched), out))
    assert summary.shards_skipped == 1 and summary.shards_done == 3


@pytest.mark.parametrize(("routing", "says"), [
    ({"default": []}, "routing sends no item to any teacher"),
    ({"defualt": ["knn"]}, "routing keys no item has: defualt"),
])
def test_routing_that_reaches_no_item_is_an_error(samples_dir, tmp_path, routing, says):
    teachers = write_teachers(tmp_path / "t.yaml", {"knn": builtin_teacher("knn", k=1)},
                              routing)
    out = tmp_path / "gen"
    with pytest.raises(DistillError, match=says):
        run_generate(GenerateOptions(samples_dir, str(teachers), out))
    assert not (out / "manifest.json").exists()


def test_shipped_digits_teacher_set_loads_and_routes_everything():
    teachers = load_teacher_set("digits")
    assert set(teachers.teachers) == {"knn", "logreg"}
    for category in QUESTIONS:
        assert [t.id for t in teachers.for_category(category)] == ["knn", "logreg"]
    assert all(t.spec.k == 2 and t.prompt.id == "cot" for t in teachers.teachers.values())


def test_cli_runs_and_reports_errors_in_one_line(samples_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    os.environ["DISTILL_PROGRESS"] = "0"
    assert main(["generate", "--samples", str(samples_dir), "--out", str(out),
                 "--splits", "val"]) == 0
    assert (out / "manifest.json").exists()
    assert main(["generate", "--samples", str(samples_dir), "--out", str(out),
                 "--splits", "nope"]) == 2
    assert "--splits nope" in capsys.readouterr().err


@pytest.mark.parametrize(("permanent", "retry_rejected", "crash_mid_reopen", "retried"), [
    (False, False, False, True),   # transient: the next run retries it
    (False, False, True, True),    # ... even if a crash split the reopening in half
    (True, False, False, False),   # permanent: done, unless asked
    (True, True, False, True),     # --retry-rejected
])
def test_rejections_on_restart(samples_dir, teachers, tmp_path, permanent, retry_rejected,
                               crash_mid_reopen, retried):
    out = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), out, splits=("val",)))
    expected = content_set(read_outputs(out)[0])
    # Turn one trace into a rejection, as if the engine had failed on it.
    shard = out / "traces/val/part-00000.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    victim = Trace.model_validate_json(lines[0])
    shard.write_text("".join(lines[1:]))
    (out / "rejects/val/part-00000.jsonl").write_text(Rejection(
        stage="generate", key=victim.trace_key, reason="engine_error:http_503",
        message="injected", permanent=permanent).model_dump_json() + "\n")
    if crash_mid_reopen:  # traces already renamed back to .partial, rejects not yet
        os.replace(shard, partial_path(shard))
    summary = run_generate(GenerateOptions(samples_dir, str(teachers), out, splits=("val",),
                                           retry_rejected=retry_rejected))
    traces, rejects = read_outputs(out)
    assert summary.traces == int(retried)
    if retried:
        assert content_set(traces) == expected and not rejects
    else:
        assert [r.key for r in rejects] == [victim.trace_key]
        assert victim.trace_key not in {t.trace_key for t in traces}
    assert not leftovers(out)
