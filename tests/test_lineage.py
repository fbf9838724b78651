"""`distill lineage RESULT`: the chain from an eval score back to the ingested samples, on a
chain of real files (ingest output, trace and dataset shards, manifests, a checkpoint),
with every kind of broken link flagged."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.evalsets import load_eval_set
from distill.core.predictors import model_fingerprint
from distill.core.shards import ShardWriter, read_json_model, shard_ref, write_json_atomic
from distill.evaluate.cache import CachedGeneration, input_hash
from distill.evaluate.lineage import trace_lineage
from distill.evaluate.metrics import summarize
from distill.evaluate.results import portable
from distill.evaluate.runner import score
from distill.ingest.pipeline import IngestOptions, ingest
from distill.ingest.sources.digits import DigitsConfig, iter_digits
from distill.schemas import (
    DatasetManifest,
    EvalResult,
    ModelRef,
    RunManifest,
    SamplingParams,
    ScoredTrace,
    StageManifest,
    Trace,
    content_hash,
    make_trace_key,
)

NOW = datetime(2025, 5, 1, tzinfo=UTC)


def _checkpoint(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "siqvl"}))
    (folder / "model.safetensors").write_bytes(bytes([seed]) * 64)
    return folder


def _run(folder: Path, run_id: str, stage: str, dataset: Path | None, version: str | None,
         parent: str | None) -> Path:
    _checkpoint(folder / "final", seed=len(run_id))
    manifest = RunManifest(
        run_id=run_id, created_at=NOW, stage=stage, dataset_version=version,
        dataset_path=os.path.relpath(dataset, folder) if dataset else None,
        parent_checkpoint=parent, config={"lr": 1e-4}, config_hash=content_hash({"lr": 1e-4}),
        steps=10, examples_seen=40, final_loss=0.5, checkpoint_path="final")
    write_json_atomic(folder / "manifest.json", manifest)
    return folder / "manifest.json"


@pytest.fixture
def chain(tmp_path: Path) -> dict[str, Path]:
    return build_chain(tmp_path)


def build_chain(tmp_path: Path, *, decontaminated: bool = True) -> dict[str, Path]:
    """ingest -> generate -> dataset version -> stage-1 run -> stage-2 run -> eval result."""
    data = tmp_path / "work" / "digits"
    ingest(iter_digits(DigitsConfig(seed=4, counts={"train": 6, "test": 6})),
           IngestOptions(out=data))
    ingest_manifest = read_json_model(data / "manifest.json", StageManifest)
    train_ref = next(r for r in ingest_manifest.shards if "/train/" in r.name)
    train_samples = [s for s in load_eval_set(data, split="train").samples]

    generate = tmp_path / "work" / "traces"
    sampling = SamplingParams()
    writer = ShardWriter(generate / "traces" / "train" / "part-00000.jsonl")
    traces = []
    for sample in train_samples:
        trace = Trace(
            trace_key=make_trace_key(sample_hash=sample.content_hash(), teacher_id="digits-cot",
                                     model="builtin", prompt_hash="a" * 64, sampling=sampling,
                                     k=0),
            sample_id=sample.id, sample_hash=sample.content_hash(), teacher_id="digits-cot",
            engine="builtin", model="builtin", prompt_id="cot", prompt_hash="a" * 64,
            sampling=sampling, k=0, raw_text=f"Answer: {sample.answer}", reasoning="",
            final_answer=sample.answer, finish_reason="stop", latency_s=0.01)
        writer.write(trace)
        traces.append((sample, trace))
    writer.commit()
    trace_ref = shard_ref(generate / "traces" / "train" / "part-00000.jsonl", generate)
    write_json_atomic(generate / "manifest.json", StageManifest(
        stage="generate", created_at=NOW, image_root=str(data), input_dir="../digits",
        inputs=[train_ref], shards=[trace_ref], counts={"traces": len(traces)},
        config={"teachers": ["digits-cot"]}))

    staging = tmp_path / "store" / "versions" / "staging"
    writer = ShardWriter(staging / "data" / "part-00000.jsonl")
    for sample, trace in traces:
        writer.write(ScoredTrace(sample=sample, trace=trace, signals={"correct": True},
                                 verdict="keep"))
    writer.commit()
    draft = DatasetManifest(
        version="0" * 64, created_at=NOW, trace_dir="-", image_root=str(data),
        inputs=[trace_ref], policy={"name": "default"},
        policy_hash=content_hash({"name": "default"}), scorer_versions={"correct": "1"},
        teachers=["digits-cot"], prompts={"cot": "a" * 64},
        eval_sets=[f"{load_eval_set(data).hash} {data}"] if decontaminated else [],
        counts={"keep": len(traces)},
        shards=[shard_ref(staging / "data" / "part-00000.jsonl", staging)])
    version = draft.content_version()  # named by its content, as distill filter names it
    version_dir = staging.rename(staging.with_name(version))
    write_json_atomic(version_dir / "manifest.json", draft.model_copy(update={
        "version": version, "trace_dir": os.path.relpath(generate, version_dir),
        "image_root": os.path.relpath(data, version_dir)}))

    _run(tmp_path / "runs" / "stage1", "stage1-run", "1", version_dir, version, None)
    run2 = _run(tmp_path / "runs" / "stage2", "stage2-run", "2", version_dir, version,
                "../stage1/final")
    checkpoint = tmp_path / "runs" / "stage2" / "final"

    eval_set = load_eval_set(data)
    items = [score(s, CachedGeneration(input_hash=input_hash(s), sample_id=s.id,
                                       text=f"Answer: {s.answer}", output_tokens=3,
                                       latency_s=0.1, finish_reason="stop"))
             for s in eval_set.samples]
    metrics, per_category = summarize(items)
    result = EvalResult(
        result_id="c" * 64, created_at=NOW,
        model=ModelRef(kind="siqvl", name="stage2-run/final", path=str(checkpoint),
                       run_manifest=str(run2), fingerprint=model_fingerprint(checkpoint)),
        eval_set=eval_set.spec, eval_set_hash=eval_set.hash, mode="cot",
        generation={"mode": "cot"}, metrics=metrics, per_category=per_category, items=items)
    result_path = tmp_path / "results" / "r.json"
    write_json_atomic(result_path, portable(result, result_path.parent))  # as eval writes it
    return {"result": result_path, "data": data, "generate": generate, "version": version_dir,
            "checkpoint": checkpoint, "run2": run2, "stage1": tmp_path / "runs" / "stage1"}


def _statuses(result: Path) -> list[tuple[str, str]]:
    return [(link.kind, link.status) for link in trace_lineage(result)]


def test_an_intact_chain_is_followed_to_the_samples(chain, capsys) -> None:
    links = trace_lineage(chain["result"])
    assert [(link.kind, link.status) for link in links] == [
        ("eval result", "ok"), ("eval set", "ok"), ("model", "ok"), ("run", "ok"),
        ("dataset", "ok"), ("traces", "ok"), ("samples", "ok"), ("parent run", "ok"),
        ("dataset", "ok")]
    text = "\n".join(d for link in links for d in link.details)
    assert "run 'stage2-run', stage 2" in text and "run 'stage1-run', stage 1" in text
    assert "teachers digits-cot" in text and "decontaminated against the evaluated set" in text
    assert "12 samples from" in text and "fingerprint" in text
    assert main(["lineage", str(chain["result"])]) == 0
    printed = capsys.readouterr().out
    for kind in ("eval result", "eval set", "model", "run", "dataset", "traces", "samples"):
        assert kind in printed
    assert "BROKEN" not in printed


def test_a_dataset_not_decontaminated_is_a_warning_not_a_break(tmp_path: Path) -> None:
    links = trace_lineage(build_chain(tmp_path, decontaminated=False)["result"])
    assert all(link.status == "ok" for link in links)
    assert any(d.startswith("warning: not decontaminated against the evaluated set")
               for d in links[4].details)


def test_changed_files_and_versions_are_flagged(chain, capsys) -> None:
    shard = chain["version"] / "data" / "part-00000.jsonl"
    shard.write_text(shard.read_text().replace('"verdict":"keep"', '"verdict":"keep" ', 1))
    (chain["checkpoint"] / "model.safetensors").write_bytes(b"retrained")
    trace_shard = chain["generate"] / "traces" / "train" / "part-00000.jsonl"
    trace_shard.unlink()
    links = {(link.kind, link.path): link for link in trace_lineage(chain["result"])}
    problems = "\n".join(p for link in links.values() for p in link.problems)
    assert "dataset data/part-00000.jsonl: changed since it was published" in problems
    assert "checkpoint changed since the eval" in problems
    assert f"trace shard missing: {trace_shard}" in problems
    assert main(["lineage", str(chain["result"])]) == 2
    captured = capsys.readouterr()
    assert "BROKEN" in captured.out
    assert "lineage has 4 broken link(s): model, dataset, traces, dataset" in captured.err
    # --no-verify skips re-hashing, so only the missing file is left.
    assert [k for k, s in [(link.kind, link.status) for link in
                           trace_lineage(chain["result"], verify=False)] if s == "broken"] == [
        "traces"]


def test_an_edit_whose_new_hash_was_written_into_the_manifest_is_caught(chain) -> None:
    """Lineage recomputes the version's content hash rather than trusting its name."""
    shard = chain["version"] / "data" / "part-00000.jsonl"
    shard.write_text(shard.read_text().replace('"verdict":"keep"', '"verdict":"keep" ', 1))
    manifest_path = chain["version"] / "manifest.json"
    dataset = read_json_model(manifest_path, DatasetManifest)
    write_json_atomic(manifest_path, dataset.model_copy(update={
        "shards": [shard_ref(shard, chain["version"])]}))
    dataset_link = trace_lineage(chain["result"])[4]
    assert dataset_link.kind == "dataset" and dataset_link.status == "broken"
    assert "its content hashes to" in dataset_link.problems[0]
    assert "its content hashes to" in trace_lineage(chain["result"], verify=False)[4].problems[0]


def test_a_moved_project_keeps_its_lineage(chain, tmp_path: Path) -> None:
    """Every manifest and the result name files relative to their own folder."""
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)
    try:
        result = moved / chain["result"].relative_to(tmp_path)
        assert all(link.status == "ok" for link in trace_lineage(result)), [
            (link.kind, link.problems) for link in trace_lineage(result)]
    finally:
        moved.rename(tmp_path)


def test_metrics_that_disagree_with_the_items_break_the_first_link(chain) -> None:
    result = read_json_model(chain["result"], EvalResult)
    write_json_atomic(chain["result"], result.model_copy(update={
        "metrics": {**result.metrics, "accuracy": 0.999}}))
    first = trace_lineage(chain["result"])[0]
    assert first.status == "broken" and first.problems[0].startswith(
        "metrics.accuracy: stored 0.999, but its 6 item(s) give")


def test_missing_manifests_and_version_mismatch(chain) -> None:
    run = read_json_model(chain["run2"], RunManifest)
    write_json_atomic(chain["run2"], run.model_copy(update={"dataset_version": "d" * 64}))
    (chain["generate"] / "manifest.json").unlink()
    (chain["stage1"] / "manifest.json").unlink()
    statuses = _statuses(chain["result"])
    assert statuses == [("eval result", "ok"), ("eval set", "ok"), ("model", "ok"),
                        ("run", "ok"), ("dataset", "broken"), ("traces", "broken"),
                        ("parent run", "broken")]
    links = trace_lineage(chain["result"])
    assert "version mismatch: the run trained on dddddddddddd" in links[4].problems[0]
    assert "file not found" in links[5].problems[0]


def test_a_changed_eval_set_is_flagged(chain) -> None:
    shard = next((chain["data"] / "samples" / "test").glob("*.jsonl"))
    manifest = read_json_model(chain["data"] / "manifest.json", StageManifest)
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:-1]))  # an item removed, manifest updated to match
    shards = [shard_ref(shard, chain["data"]) if ref.name.endswith(shard.name) and
              "/test/" in ref.name else ref for ref in manifest.shards]
    write_json_atomic(chain["data"] / "manifest.json", manifest.model_copy(
        update={"shards": shards}))
    link = trace_lineage(chain["result"])[1]
    assert link.status == "broken" and "eval set changed since the eval" in link.problems[0]


def test_models_without_a_run_and_unreadable_results(chain, tmp_path: Path) -> None:
    result = read_json_model(chain["result"], EvalResult)
    hf = result.model_copy(update={"model": ModelRef(kind="hf", name="some-vlm")})
    path = tmp_path / "hf.json"
    write_json_atomic(path, hf)
    assert _statuses(path)[-1] == ("run", "not recorded")
    siqvl = result.model_copy(update={"model": ModelRef(kind="siqvl", name="lost")})
    write_json_atomic(path, siqvl)
    assert _statuses(path)[-1] == ("run", "broken")
    path.write_text("{}")
    assert main(["lineage", str(path)]) == 2
