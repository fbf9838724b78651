"""The lineage chain of an eval score, followed link by link and checked on the way:

    EvalResult -> eval set (hash) -> model (fingerprint) -> RunManifest (checkpoint)
      -> DatasetManifest (version, shard hashes) -> generate StageManifest (trace shards)
      -> ingest StageManifest (sample shards);  then parent runs of earlier stages

A later round goes deeper: a dataset version built on a parent version holds the
parent's data, and traces written by a trained student of ours (the student as the next
teacher) name its checkpoint; both are followed the same way, one level further in
(``Link.depth``), to the first round's traces. A run or dataset met twice is shown once.

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
MAX_DEPTH = 8  # rounds of students teaching students followed before stopping


@dataclass
class _Walk:
    """What a lineage walk carries: checks to make, and what it has already shown."""

    verify: bool
    eval_set_hash: str
    depth: int = 0
    seen: set[Path] = field(default_factory=set)

    def deeper(self) -> _Walk:
        return _Walk(self.verify, self.eval_set_hash, self.depth + 1, self.seen)

    def first_time(self, path: Path) -> bool:
        key = path.resolve()
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@dataclass
class Link:
    """One step of the chain: what it is, where, what it says, and what is wrong with it."""

    kind: str
    path: str | None
    details: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    recorded: bool = True
    # 0 for the result's own chain; 1 and more for what a dataset was built on (a parent
    # version, a student of ours that wrote its traces) and so on
    depth: int = 0

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
    links.extend(_run_chain(run_path, _Walk(verify, result.eval_set_hash)))
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


def _run_chain(run_path: Path, walk: _Walk) -> list[Link]:
    links: list[Link] = []
    seen: set[Path] = set()
    current: Path | None = run_path
    first = True
    while current is not None and len(seen) < MAX_PARENT_RUNS:
        if current.resolve() in seen:
            links.append(Link("parent run", str(current), problems=["parent runs form a cycle"],
                              depth=walk.depth))
            break
        seen.add(current.resolve())
        link = Link("run" if first else "parent run", str(current), depth=walk.depth)
        links.append(link)
        run = _load(current, RunManifest, link)
        if run is None:
            break
        link.details.append(f"run '{run.run_id}', stage {run.stage}, {run.steps} steps, "
                            f"{run.examples_seen} examples, final loss {run.final_loss}")
        checkpoint = resolve(current.parent, run.checkpoint_path)
        if not checkpoint.exists():
            link.problems.append(f"checkpoint missing: {checkpoint}")
        links.extend(_dataset_chain(run, current, walk, full=first))
        parent = run.parent_checkpoint
        current = run_manifest_of(resolve(current.parent, parent)) if parent else None
        first = False
    return links


def _dataset_chain(run: RunManifest, run_path: Path, walk: _Walk, *, full: bool) -> list[Link]:
    if run.dataset_path is None:
        return [Link("dataset", None, details=["the run names no dataset"],
                     recorded=run.dataset_version is not None, depth=walk.depth)]
    location = resolve(run_path.parent, run.dataset_path)
    manifest_path = location / "manifest.json" if location.is_dir() else location
    link = Link("dataset", str(manifest_path), depth=walk.depth)
    dataset = _load(manifest_path, DatasetManifest, link)
    if dataset is None:
        return [link]
    if run.dataset_version and run.dataset_version != dataset.version:
        link.problems.append(f"version mismatch: the run trained on {run.dataset_version[:12]}, "
                             f"this manifest is {dataset.version[:12]}")
    return _dataset_links(link, dataset, manifest_path, walk, full=full)


def _dataset_links(link: Link, dataset: DatasetManifest, manifest_path: Path, walk: _Walk, *,
                   full: bool) -> list[Link]:
    """A dataset version's link (its details and shard checks), then, unless shown already,
    the traces and samples it was built from and what it builds on."""
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
    link.details.append(_decontamination_note(dataset, walk.eval_set_hash))
    if walk.verify:  # its name, every shard and every pooled image of its kept traces, re-hashed
        link.problems += [f"dataset {problem}" for problem in
                          check_version(manifest_path.parent).problems]
    else:  # its name recomputed from the manifest alone; missing shards
        link.problems += identity_problems(dataset, manifest_path.parent)
        link.problems += check_shards(manifest_path.parent, dataset.shards, "dataset",
                                      verify=False)
    if not full:
        return [link]
    if not walk.first_time(manifest_path):
        link.details.append("its traces and samples are shown above")
        return [link]
    links = [link, *_stage_chain(dataset, manifest_path, walk)]
    if dataset.parent is not None:
        links.extend(_parent_dataset(dataset.parent, manifest_path, walk))
    return links


def _parent_dataset(parent: str, manifest_path: Path, walk: _Walk) -> list[Link]:
    """The version a child version was built on: it lies beside it in the store, and its
    rows are the child's first rows."""
    if walk.depth >= MAX_DEPTH:
        return [Link("parent dataset", parent, problems=[f"deeper than {MAX_DEPTH} levels: "
                                                         "stopped"], depth=walk.depth + 1)]
    deeper = walk.deeper()
    path = manifest_path.parent.parent / parent / "manifest.json"
    link = Link("parent dataset", str(path), depth=deeper.depth)
    dataset = _load(path, DatasetManifest, link)
    if dataset is None:
        return [link]
    if dataset.version != parent:
        link.problems.append(f"version mismatch: the child names parent {parent[:12]}, this "
                             f"manifest is {dataset.version[:12]}")
    return _dataset_links(link, dataset, path, deeper, full=True)


def _student_teachers(generate: StageManifest, walk: _Walk) -> list[Link]:
    """Teachers of these traces that are trained students of ours (``teachers.py``:
    their checkpoint is recorded): each checkpoint, checked, then its run's chain."""
    teacher_set = generate.config.get("teacher_set")
    teachers = teacher_set.get("teachers") if isinstance(teacher_set, dict) else None
    links: list[Link] = []
    for teacher_id, entry in (teachers.items() if isinstance(teachers, dict) else ()):
        checkpoint = entry.get("checkpoint") if isinstance(entry, dict) else None
        if not isinstance(checkpoint, dict):
            continue
        deeper = walk.deeper()
        path, fingerprint = checkpoint.get("path"), checkpoint.get("fingerprint")
        link = Link("teacher checkpoint", path, depth=deeper.depth,
                    details=[f"teacher '{teacher_id}': a student of ours served by "
                             f"{entry.get('engine')}, fingerprint {str(fingerprint)[:12]}"])
        links.append(link)
        if walk.depth >= MAX_DEPTH:
            link.problems.append(f"deeper than {MAX_DEPTH} levels: stopped")
            continue
        folder = Path(str(path))
        if not folder.is_dir():
            link.problems.append(f"checkpoint missing: {folder}")
        elif walk.verify and model_fingerprint(folder) != fingerprint:
            link.problems.append("checkpoint changed since it wrote these traces "
                                 "(fingerprint mismatch)")
        run_manifest = checkpoint.get("run_manifest")
        if not run_manifest:
            link.problems.append("the teacher names no run manifest for its checkpoint")
        elif walk.first_time(Path(str(run_manifest))):
            links.extend(_run_chain(Path(str(run_manifest)), deeper))
        else:
            link.details.append("its run is shown above")
    return links


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


def _stage_chain(dataset: DatasetManifest, dataset_path: Path, walk: _Walk) -> list[Link]:
    trace_dir = resolve(dataset_path.parent, dataset.trace_dir)
    traces = Link("traces", str(trace_dir / "manifest.json"), depth=walk.depth)
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
        samples = _ingest_link(trace_dir, dataset.inputs, walk)
        return [traces, samples]
    if generate.stage != "generate":
        traces.problems.append(f"expected a generate manifest, found stage '{generate.stage}'")
    traces.details.append(f"{len(generate.shards)} trace shards; counts "
                          + ", ".join(f"{k}={v}" for k, v in sorted(generate.counts.items())))
    traces.problems += check_shards(trace_dir, dataset.inputs, "trace", verify=walk.verify)
    if generate.input_dir is None:
        return [traces, Link("samples", None, details=["the generate manifest names no input"],
                             recorded=False, depth=walk.depth),
                *_student_teachers(generate, walk)]
    input_dir = resolve(trace_dir, generate.input_dir)
    return [traces, _ingest_link(input_dir, generate.inputs, walk),
            *_student_teachers(generate, walk)]


def _ingest_link(input_dir: Path, used: list[ShardRef], walk: _Walk) -> Link:
    """The ingest folder, checked against the sample shards the next stage recorded."""
    samples = Link("samples", str(input_dir / "manifest.json"), depth=walk.depth)
    ingest = _load(input_dir / "manifest.json", StageManifest, samples)
    if ingest is not None:
        if ingest.stage != "ingest":
            samples.problems.append(f"expected an ingest manifest, found stage "
                                    f"'{ingest.stage}'")
        source = ingest.config.get("source")
        samples.details.append(f"{ingest.counts.get('samples', '?')} samples from {source}")
        samples.problems += check_shards(input_dir, used, "sample", verify=walk.verify)
    return samples
