"""The lineage chain of an eval score, followed link by link and checked on the way:

    EvalResult -> eval set (hash) -> model (fingerprint) -> RunManifest (checkpoint)
      -> DatasetManifest (version, shard hashes) -> generate StageManifest (trace shards)
      -> ingest StageManifest (sample shards);  then parent runs of earlier stages

A teacher of the traces that is itself one of our students (a teacher set's ``engine:
vllm, model: RUN/final``) is a link too: its checkpoint (fingerprint), then its own run's
chain, its links named after the teacher.

Paths inside a manifest are relative to that manifest's folder (or absolute), so a project
moved as a whole keeps its chain. Nothing recorded is trusted: the result's metrics are
recomputed from its items, the dataset version's content is hashed again and must hash to
its name (its shards and pooled images to the manifest), every shard to what the next link
recorded. A link that cannot be followed (missing file, unreadable record) or that does
not match what it or the previous link recorded is *broken*; the chain keeps going where
it can, so one broken link does not hide the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from distill.core.dataset_versions import check_version, identity_problems
from distill.core.errors import DistillError
from distill.core.evalsets import load_eval_set
from distill.core.formatting import percent
from distill.core.predictors import model_fingerprint
from distill.core.shards import read_json_model
from distill.evaluate.metrics import metric_problems
from distill.evaluate.results import spec_candidates
from distill.schemas import (
    DatasetManifest,
    EvalResult,
    RunManifest,
    ShardRef,
    StageManifest,
    file_sha256,
)
from distill.schemas.dataset_manifest import eval_set_hash as eval_set_hash_of

Status = Literal["ok", "broken", "not recorded"]
MAX_PARENT_RUNS = 16
MAX_TEACHER_DEPTH = 4  # students taught by students taught by students...


@dataclass
class Link:
    """One step of the chain: what it is, where, what it says, and what is wrong with it."""

    kind: str
    path: str | None
    details: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    recorded: bool = True

    @property
    def status(self) -> Status:
        if not self.recorded:
            return "not recorded"
        return "broken" if self.problems else "ok"


def resolve(base: Path, value: str) -> Path:
    """A path as written in a manifest: absolute, or relative to the manifest's folder."""
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def check_shards(folder: Path, refs: list[ShardRef], what: str, *, verify: bool) -> list[str]:
    """Problems with the shards a manifest lists: missing files, changed bytes."""
    problems = []
    for ref in refs:
        path = folder / ref.name
        if not path.is_file():
            problems.append(f"{what} shard missing: {path}")
        elif verify and file_sha256(path) != ref.sha256:
            problems.append(f"{what} shard changed since it was recorded (sha256 mismatch): "
                            f"{path}")
    return problems


def _load(path: Path, model: type, link: Link):
    try:
        return read_json_model(path, model)
    except DistillError as exc:
        link.problems.append(str(exc))
        return None


def trace_lineage(result_path: Path, *, verify: bool = True) -> list[Link]:
    """Every link from an EvalResult file back to the ingested samples."""
    result = read_json_model(result_path, EvalResult)
    metrics = result.metrics
    links = [Link("eval result", str(result_path), details=[
        f"result {result.result_id[:12]}, {result.mode} mode, "
        f"created {result.created_at:%Y-%m-%d %H:%M}",
        f"accuracy {percent(metrics.get('accuracy', 0))}% on {len(result.items)} items",
    ], problems=[f"{where}: {problem} (the file was edited or damaged)"
                 for where, problem in metric_problems(result)])]
    links.append(_eval_set_link(result, result_path))
    links.append(_model_link(result, result_path, verify=verify))
    if result.model.run_manifest is None:
        if result.model.kind == "siqvl":
            links.append(Link("run", None, problems=["the result names no RunManifest for "
                                                     "this SiQ-VL checkpoint"]))
        else:
            links.append(Link("run", None, details=[f"a {result.model.kind} model: no training "
                                                    "run of ours behind it"], recorded=False))
        return links
    run_path = resolve(result_path.parent, result.model.run_manifest)
    links.extend(_run_chain(run_path, verify=verify, eval_set_hash=result.eval_set_hash))
    return links


def _eval_set_link(result: EvalResult, result_path: Path) -> Link:
    link = Link("eval set", result.eval_set)
    error = None
    for candidate in spec_candidates(result_path, result.eval_set):
        try:
            eval_set = load_eval_set(candidate)
            break
        except DistillError as exc:
            error = exc
    else:
        link.problems.append(f"cannot load the eval set: {error}")
        return link
    link.details.append(f"{len(eval_set.samples)} items, hash {eval_set.hash[:12]}")
    if eval_set.hash != result.eval_set_hash:
        link.problems.append(f"eval set changed since the eval: hash is now "
                             f"{eval_set.hash[:12]}, the result recorded "
                             f"{result.eval_set_hash[:12]}")
    return link


def _model_link(result: EvalResult, result_path: Path, *, verify: bool) -> Link:
    model = result.model
    link = Link("model", model.path, details=[f"{model.kind} '{model.name}'"])
    if model.kind == "engine":
        generation = result.generation
        link.details.append(f"engine {generation.get('engine')}, model "
                            f"{generation.get('model', model.path)}, options "
                            f"{generation.get('engine_options')}")
    if model.path is None:
        return link
    path = resolve(result_path.parent, model.path)
    if not path.exists():
        link.problems.append(f"model folder missing: {path}")
    elif verify and model.fingerprint and path.is_dir():
        now = model_fingerprint(path)
        if now != model.fingerprint:
            link.problems.append(f"checkpoint changed since the eval: fingerprint is now "
                                 f"{now[:12]}, the result recorded {model.fingerprint[:12]}")
        else:
            link.details.append(f"fingerprint {now[:12]} matches")
    return link


def run_manifest_of(checkpoint: Path) -> Path:
    """A checkpoint's RunManifest: ``RUN/manifest.json`` for ``RUN/final`` or
    ``RUN/checkpoint-N`` (or the folder's own manifest.json when it is the run)."""
    own = checkpoint / "manifest.json"
    return own if own.is_file() else checkpoint.parent / "manifest.json"


def _run_chain(run_path: Path, *, verify: bool, eval_set_hash: str,
               depth: int = 0) -> list[Link]:
    links: list[Link] = []
    seen: set[Path] = set()
    current: Path | None = run_path
    first = True
    while current is not None and len(seen) < MAX_PARENT_RUNS:
        if current.resolve() in seen:
            links.append(Link("parent run", str(current), problems=["parent runs form a cycle"]))
            break
        seen.add(current.resolve())
        link = Link("run" if first else "parent run", str(current))
        links.append(link)
        run = _load(current, RunManifest, link)
        if run is None:
            break
        link.details.append(f"run '{run.run_id}', stage {run.stage}, {run.steps} steps, "
                            f"{run.examples_seen} examples, final loss {run.final_loss}")
        checkpoint = resolve(current.parent, run.checkpoint_path)
        if not checkpoint.exists():
            link.problems.append(f"checkpoint missing: {checkpoint}")
        links.extend(_dataset_chain(run, current, verify=verify, full=first,
                                    eval_set_hash=eval_set_hash, depth=depth))
        parent = run.parent_checkpoint
        current = run_manifest_of(resolve(current.parent, parent)) if parent else None
        first = False
    return links


def _dataset_chain(run: RunManifest, run_path: Path, *, verify: bool, full: bool,
                   eval_set_hash: str, depth: int = 0) -> list[Link]:
    if run.dataset_path is None:
        return [Link("dataset", None, details=["the run names no dataset"],
                     recorded=run.dataset_version is not None)]
    location = resolve(run_path.parent, run.dataset_path)
    manifest_path = location / "manifest.json" if location.is_dir() else location
    link = Link("dataset", str(manifest_path))
    dataset = _load(manifest_path, DatasetManifest, link)
    if dataset is None:
        return [link]
    link.details.append(f"version {dataset.version[:12]}"
                        + (f", parent {dataset.parent[:12]}" if dataset.parent else ""))
    link.details.append(f"teachers {', '.join(dataset.teachers) or '-'}; prompts "
                        + (", ".join(f"{k} {v[:12]}" for k, v in dataset.prompts.items()) or "-"))
    link.details.append(f"policy {dataset.policy_hash[:12]}; counts "
                        + ", ".join(f"{k}={v}" for k, v in sorted(dataset.counts.items())))
    labels = _label_note(dataset)
    if labels:
        link.details.append(labels)
    if dataset.eval_sets:
        link.details.append(f"decontaminated against {', '.join(dataset.eval_sets)}")
    link.details.append(_decontamination_note(dataset, eval_set_hash))
    if run.dataset_version and run.dataset_version != dataset.version:
        link.problems.append(f"version mismatch: the run trained on {run.dataset_version[:12]}, "
                             f"this manifest is {dataset.version[:12]}")
    if verify:  # its name, every shard and every pooled image of its kept traces, re-hashed
        link.problems += [f"dataset {problem}" for problem in
                          check_version(manifest_path.parent).problems]
    else:  # its name recomputed from the manifest alone; missing shards
        link.problems += identity_problems(dataset, manifest_path.parent)
        link.problems += check_shards(manifest_path.parent, dataset.shards, "dataset",
                                      verify=False)
    if not full:
        return [link]
    return [link, *_stage_chain(dataset, manifest_path, verify=verify,
                                eval_set_hash=eval_set_hash, depth=depth)]


def _label_note(dataset: DatasetManifest) -> str | None:
    """Which of the trained items' labels were gold and which derived by the filter."""
    kept = {key.removeprefix("kept_items:label_"): n for key, n in dataset.counts.items()
            if key.startswith("kept_items:label_")}
    if not kept:
        return None
    derived = sum(n for source, n in kept.items() if source != "gold")
    parts = ", ".join(f"{source} {n:,}" for source, n in sorted(kept.items()))
    if not derived:
        return f"labels: all gold ({parts} items)"
    return (f"labels: {derived:,} of {sum(kept.values()):,} items derived from the teachers, "
            f"not gold ({parts})")


def _decontamination_note(dataset: DatasetManifest, eval_set_hash: str) -> str:
    """Whether the dataset was decontaminated against the very items the eval scored.

    A manifest names each eval set as ``"<content hash> <spec>"``; matching the hash makes
    this independent of where the files lie. Not being listed is a warning, not a broken
    link: the data may still be clean.
    """
    if eval_set_hash in {eval_set_hash_of(label) for label in dataset.eval_sets}:
        return "decontaminated against the evaluated set"
    return ("warning: not decontaminated against the evaluated set: its items may overlap "
            "the training data")


def _stage_chain(dataset: DatasetManifest, dataset_path: Path, *, verify: bool,
                 eval_set_hash: str = "", depth: int = 0) -> list[Link]:
    trace_dir = resolve(dataset_path.parent, dataset.trace_dir)
    traces = Link("traces", str(trace_dir / "manifest.json"))
    generate = _load(trace_dir / "manifest.json", StageManifest, traces)
    if generate is None:
        return [traces]
    if generate.stage == "ingest":
        # A dataset built straight from ingested samples (e.g. oracle rationales): there is
        # no generate stage to show, and the dataset's inputs are sample shards.
        traces.recorded = False
        traces.problems.clear()
        traces.details.append("the dataset was built straight from ingested samples (no "
                              "generate stage)")
        samples = _ingest_link(trace_dir, dataset.inputs, verify=verify)
        return [traces, samples]
    if generate.stage != "generate":
        traces.problems.append(f"expected a generate manifest, found stage '{generate.stage}'")
    traces.details.append(f"{len(generate.shards)} trace shards; counts "
                          + ", ".join(f"{k}={v}" for k, v in sorted(generate.counts.items())))
    traces.problems += check_shards(trace_dir, dataset.inputs, "trace", verify=verify)
    students = _student_teachers(generate, verify=verify, eval_set_hash=eval_set_hash,
                                 depth=depth)
    if generate.input_dir is None:
        return [traces, Link("samples", None, details=["the generate manifest names no input"],
                             recorded=False), *students]
    input_dir = resolve(trace_dir, generate.input_dir)
    return [traces, _ingest_link(input_dir, generate.inputs, verify=verify), *students]


def _student_teachers(generate: StageManifest, *, verify: bool, eval_set_hash: str,
                      depth: int) -> list[Link]:
    """The teachers of a generate run that are students of ours: each checkpoint as it was
    recorded (is it still that one?), then the chain of the run that trained it."""
    teachers = (generate.config.get("teacher_set") or {}).get("teachers") or {}
    links: list[Link] = []
    for teacher_id, teacher in sorted(teachers.items()):
        checkpoint = teacher.get("checkpoint") if isinstance(teacher, dict) else None
        if not isinstance(checkpoint, dict):
            continue
        link = Link(f"teacher '{teacher_id}'", checkpoint.get("path"), details=[
            f"a student of ours served by {teacher.get('engine')}, fingerprint "
            f"{str(checkpoint.get('fingerprint'))[:12]}"])
        links.append(link)
        path = Path(checkpoint.get("path") or "")
        if not path.is_dir():
            link.problems.append(f"teacher checkpoint missing: {path}")
        elif verify and model_fingerprint(path) != checkpoint.get("fingerprint"):
            link.problems.append("teacher checkpoint changed since it wrote these traces "
                                 "(fingerprint mismatch)")
        run_manifest = checkpoint.get("run_manifest")
        if run_manifest is None:
            link.details.append("its training run is not recorded")
        elif depth >= MAX_TEACHER_DEPTH:
            link.details.append(f"its training run: {run_manifest} (not followed: "
                                f"{MAX_TEACHER_DEPTH} teachers deep)")
        else:
            for sub in _run_chain(Path(run_manifest), verify=verify,
                                  eval_set_hash=eval_set_hash, depth=depth + 1):
                sub.kind = f"{teacher_id}: {sub.kind}"
                links.append(sub)
    return links


def _ingest_link(input_dir: Path, used: list[ShardRef], *, verify: bool) -> Link:
    """The ingest folder, checked against the sample shards the next stage recorded."""
    samples = Link("samples", str(input_dir / "manifest.json"))
    ingest = _load(input_dir / "manifest.json", StageManifest, samples)
    if ingest is not None:
        if ingest.stage != "ingest":
            samples.problems.append(f"expected an ingest manifest, found stage "
                                    f"'{ingest.stage}'")
        source = ingest.config.get("source")
        samples.details.append(f"{ingest.counts.get('samples', '?')} samples from {source}")
        samples.problems += check_shards(input_dir, used, "sample", verify=verify)
    return samples
