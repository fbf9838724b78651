"""Sharded, resumable, exactly-once generation.

Layout (paths relative to OUT)::

    plan.json                         what this folder is generating (input, teacher set hash)
    traces/<split>/part-NNNNN.jsonl   Trace records; shard names mirror the input shards
    rejects/<split>/part-NNNNN.jsonl  Rejection records (stage="generate", key=trace_key)
    manifest.json                     StageManifest(stage="generate"), written when all
                                      requested shards are complete

Exactly-once: every requested output has a deterministic ``trace_key``; the shard files
are keyed, partial-then-renamed and repaired as ``distill.generate.durable`` describes
(shared with ``distill judge``). Transient rejections (rate limits, 5xx, timeouts,
dropped connections that outlived the engine's retries) are retried by the next run,
permanent ones with ``--retry-rejected``. At the end of every run each requested key is
in exactly one place: the traces file or the rejects file.

One writer: a run holds ``OUT/.lock`` (``distill.core.locks``), so a second run on the
same OUT stops (or waits) before it writes; each shard also has its own lock, which the
retry of a shard whose node was lost waits on. A complete shard that holds a key twice
(left by two runs before the lock) is reopened and repaired, never trusted.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from distill.core.answers import read_output
from distill.core.errors import DistillError
from distill.core.executors import DEFAULT_RAY_CPUS, Executor, RayOptions, map_shards
from distill.core.images import ImageError, read_image_bytes
from distill.core.locks import lock_path_beside, lock_path_for, single_writer
from distill.core.shards import (
    fsync_dir,
    iter_records,
    iter_unique,
    parse_line,
    read_json_model,
    write_json_atomic,
)
from distill.generate import durable
from distill.generate.engines.base import (
    ChatRequest,
    Completion,
    Engine,
    EngineFailure,
    EngineOptions,
    RequestResults,
)
from distill.generate.shard_files import ShardTask
from distill.generate.teachers import Teacher, TeacherSet, load_teacher_set
from distill.schemas import Rejection, Sample, StageManifest, Trace, make_trace_key

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


class EngineMaker(Protocol):
    """A teacher or a judge: what defines its outputs, its engine options, its engine."""

    options: EngineOptions

    @property
    def id(self) -> str: ...

    def identity(self) -> dict[str, Any]: ...

    def make_engine(self) -> Engine: ...


EngineSource = Callable[[EngineMaker], Engine]


@dataclass
class ShardSummary:
    split: str
    name: str
    traces: int = 0
    rejections: Counter = field(default_factory=Counter)
    already_done: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    skipped_complete: bool = False
    reopened: bool = False
    repaired_bytes: int = 0
    duplicates_removed: int = 0
    worker: str = ""
    engine_loads: dict[str, int] = field(default_factory=dict)  # teacher id -> loads

    def merge_into(self, total: RunSummary) -> None:
        total.traces += self.traces
        total.rejections.update(self.rejections)
        total.already_done += self.already_done
        total.prompt_tokens += self.prompt_tokens
        total.completion_tokens += self.completion_tokens
        total.shards_skipped += self.skipped_complete
        total.shards_done += not self.skipped_complete
        total.shards_reopened += self.reopened
        total.repaired_bytes += self.repaired_bytes
        total.duplicates_removed += self.duplicates_removed
        for teacher_id, loads in self.engine_loads.items():
            total.engine_loads[(self.worker, teacher_id)] += loads


@dataclass
class RunSummary:
    out: Path
    traces: int = 0
    rejections: Counter = field(default_factory=Counter)
    already_done: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    shards_reopened: int = 0
    repaired_bytes: int = 0
    duplicates_removed: int = 0
    engine_loads: Counter = field(default_factory=Counter)  # (worker, teacher id) -> loads
    seconds: float = 0.0
    manifest: StageManifest | None = None

    @property
    def rejected(self) -> int:
        return sum(self.rejections.values())


# --- engines are expensive (a vLLM model load takes minutes): one per teacher per worker --


class GenerateWorker:
    """Runs shards with engines it keeps: each teacher's engine is made once per worker,
    and an executor makes one worker per process (per Ray actor), so a teacher loads once
    per actor however many shards the actor is given. Loads are counted per teacher and
    reported with each shard's summary (``engine_loads``, ``worker``). ``distill judge``
    keeps its judge's engine in one the same way."""

    def __init__(self) -> None:
        self.engines: dict[str, Engine] = {}
        self.loads: Counter = Counter()
        self.name = worker_name()

    def engine_for(self, teacher: EngineMaker) -> Engine:
        key = json.dumps([teacher.identity(), teacher.options.model_dump(mode="json")],
                         sort_keys=True)
        if key not in self.engines:
            self.engines[key] = teacher.make_engine()
            self.loads[teacher.id] += 1
        return self.engines[key]

    def __call__(self, task: ShardTask, progress: Progress | None = None) -> ShardSummary:
        before = Counter(self.loads)
        summary = run_shard(task, progress, engine_for=self.engine_for)
        summary.worker = self.name
        summary.engine_loads = dict(self.loads - before)
        return summary

    def close(self) -> None:
        while self.engines:
            _, engine = self.engines.popitem()
            engine.close()


def worker_name() -> str:
    """host:pid, and the Ray node when running in an actor (for counting loads)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
            name += f"@{node[:8]}"
    except ImportError:  # the local executor needs no Ray
        pass
    return name


@lru_cache(maxsize=8)
def _teacher_set(path: str, mtime_ns: int) -> TeacherSet:
    return load_teacher_set(path)


def cached_teacher_set(path: str) -> TeacherSet:
    return _teacher_set(path, os.stat(path).st_mtime_ns)


# --- one shard ---------------------------------------------------------------------------


@dataclass
class _Work:
    """The keys one sample still needs from one teacher."""

    sample: Sample
    line: int
    sample_hash: str
    keys: dict[int, str]  # k -> trace_key


def run_shard(task: ShardTask, progress: Progress | None = None, *,
              engine_for: EngineSource | None = None) -> ShardSummary:
    """Generate every missing output of one input shard, durably; safe to kill anytime.

    The shard's own lock (waited for) keeps a worker that outlived its lost node from
    writing beside the retry of its shard on another node."""
    with single_writer(lock_path_beside(task.traces_path), f"shard {task.split}/{task.name}",
                       wait=True, refuse_other_hosts=False):
        return _run_shard(task, progress, engine_for or GenerateWorker().engine_for)


def _run_shard(task: ShardTask, progress: Progress | None,
               engine_for: EngineSource) -> ShardSummary:
    summary = ShardSummary(task.split, task.name)
    files = task.files
    if not durable.needs_work(files):
        summary.skipped_complete = True
        return summary
    start = durable.begin(files)
    summary.reopened, summary.repaired_bytes = start.reopened, start.repaired_bytes
    summary.duplicates_removed = start.duplicates_removed
    teachers = cached_teacher_set(task.teacher_set)
    work = _plan_work(task, teachers, start.done, summary)
    if progress and summary.already_done:
        progress(summary.already_done)
    with durable.open_writers(files) as writers:
        output = _ShardOutput(task, writers, summary, progress)
        for teacher_id, items in work.items():
            teacher = teachers.teachers[teacher_id]
            _run_teacher(output, teacher, engine_for(teacher), items)
        writers.commit()
    return summary


def _plan_work(task: ShardTask, teachers: TeacherSet, done: set[str],
               summary: ShardSummary) -> dict[str, list[_Work]]:
    work: dict[str, list[_Work]] = {tid: [] for tid in teachers.teachers}
    for number, line, _ in iter_unique(task.input_path, "id"):
        sample = parse_line(line, Sample, file=task.input_path, line=number)
        sample_hash = sample.content_hash()
        for teacher in teachers.for_category(sample.category):
            spec = teacher.spec
            keys = {}
            for k in range(spec.k):
                key = make_trace_key(sample_hash=sample_hash, teacher_id=teacher.id,
                                     model=spec.model, prompt_hash=teacher.prompt.hash,
                                     sampling=spec.sampling, k=k)
                if key in done:
                    summary.already_done += 1
                else:
                    keys[k] = key
            if keys:
                work[teacher.id].append(_Work(sample, number, sample_hash, keys))
    return {tid: items for tid, items in work.items() if items}


@dataclass
class _ShardOutput:
    """Where one shard's outcomes go: its traces and rejects writers, its summary and the
    progress callback. Every outcome is written and counted in exactly one place."""

    task: ShardTask
    writers: durable.ShardWriters
    summary: ShardSummary
    progress: Progress | None

    def trace(self, trace: Trace, result: Completion) -> None:
        self.writers.records.write(trace)
        self.summary.traces += 1
        self.summary.prompt_tokens += result.prompt_tokens or 0
        self.summary.completion_tokens += result.completion_tokens or 0
        self._advance()

    def reject(self, teacher: Teacher, item: _Work, key: str, failure: EngineFailure) -> None:
        self.writers.rejects.write(Rejection(
            stage="generate", key=key, reason=failure.reason,
            message=failure.message or failure.reason, sample_id=item.sample.id,
            teacher_id=teacher.id, location=f"{self.task.input_path}:{item.line}",
            raw=Rejection.clip(failure.raw), permanent=failure.permanent,
        ))
        self.summary.rejections[failure.reason] += 1
        self._advance()

    def _advance(self) -> None:
        if self.progress:
            self.progress(1)


def _batches(items: list[_Work], size: int | None) -> Iterator[list[_Work]]:
    size = size or len(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _run_teacher(output: _ShardOutput, teacher: Teacher, engine: Engine,
                 items: list[_Work]) -> None:
    rendered: dict[tuple, tuple[str, str]] = {}  # questions repeat: render each once
    for batch in _batches(items, teacher.batch_size):
        requests: list[ChatRequest] = []
        by_id: dict[str, _Work] = {}
        for item in batch:
            try:
                image = read_image_bytes(item.sample.image, output.task.image_root)
            except ImageError as exc:
                failure = EngineFailure(f"image_error:{exc.reason}", exc.message)
                for key in item.keys.values():
                    output.reject(teacher, item, key, failure)
                continue
            sample = item.sample
            fields = (sample.question, tuple(sample.choices or ()), sample.answer_type,
                      sample.category)
            if fields not in rendered:
                rendered[fields] = teacher.prompt.render(sample)
            system, user = rendered[fields]
            request_id = f"{item.sample.id}/{teacher.id}"
            by_id[request_id] = item
            requests.append(ChatRequest(id=request_id, system=system, user=user,
                                        images=(image,), sampling=teacher.spec.sampling,
                                        ks=tuple(item.keys)))
        if requests:
            for outcome in engine.generate(requests):
                _record(output, teacher, by_id[outcome.request.id], outcome)


def _record(output: _ShardOutput, teacher: Teacher, item: _Work,
            outcome: RequestResults) -> None:
    if len(outcome.results) != len(outcome.request.ks):
        raise RuntimeError(f"engine {teacher.engine_name} returned {len(outcome.results)} "
                           f"results for {len(outcome.request.ks)} samples")
    for k, result in zip(outcome.request.ks, outcome.results, strict=True):
        key = item.keys[k]
        if isinstance(result, EngineFailure):
            output.reject(teacher, item, key, result)
            continue
        trace = _trace(teacher, item, k, key, result)
        if isinstance(trace, str):
            output.reject(teacher, item, key, EngineFailure(
                "unparseable", f"no final answer: {trace} (finish_reason={result.finish_reason})",
                raw=result.text))
            continue
        output.trace(trace, result)


def _trace(teacher: Teacher, item: _Work, k: int, key: str, result: Completion) -> Trace | str:
    """The trace of one completion, or the judge's reason it holds no final answer."""
    parsed = read_output(result.text, item.sample, answer_format=teacher.prompt.answer_format,
                         finish_reason=result.finish_reason)
    if not parsed.final_answer:
        return parsed.reason
    spec = teacher.spec
    return Trace(
        trace_key=key, sample_id=item.sample.id, sample_hash=item.sample_hash,
        teacher_id=teacher.id, engine=teacher.engine_name, model=spec.model,
        prompt_id=teacher.prompt.id, prompt_hash=teacher.prompt.hash, sampling=spec.sampling,
        k=k, raw_text=result.text, reasoning=parsed.reasoning,
        final_answer=parsed.final_answer, prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens, finish_reason=result.finish_reason,
        latency_s=max(0.0, result.latency_s), answer_format=teacher.prompt.answer_format,
    )


# --- the whole run -----------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateOptions:
    samples_dir: Path
    teacher_set: str
    out: Path
    splits: tuple[str, ...] | None = None
    executor: Executor = "local"
    flush_every: int = 256
    flush_seconds: float = 5.0
    retry_rejected: bool = False
    ray_num_cpus: float = DEFAULT_RAY_CPUS
    ray_num_gpus: float = 0.0
    ray_actors: int | None = None  # actor pool size (None: what the cluster fits)
    ray_tensor_parallel: int = 1  # GPUs placed together per actor
    wait: bool = False  # wait for another run on the same --out instead of exiting

    @property
    def ray(self) -> RayOptions:
        return RayOptions(num_cpus=self.ray_num_cpus, num_gpus=self.ray_num_gpus,
                          actors=self.ray_actors, tensor_parallel=self.ray_tensor_parallel)


def plan_tasks(options: GenerateOptions) -> tuple[list[ShardTask], StageManifest, TeacherSet]:
    """Read the ingest manifest, check the output folder's plan, list one task per shard."""
    samples_dir = options.samples_dir.resolve()
    ingest = read_json_model(samples_dir / "manifest.json", StageManifest)
    if ingest.stage != "ingest":
        raise DistillError(f"{samples_dir} holds a {ingest.stage!r} manifest; --samples needs "
                           "the folder written by 'distill ingest'")
    teachers = load_teacher_set(options.teacher_set)
    teacher_path = str(Path(teachers.source).resolve())
    image_root = None
    if ingest.image_root is not None:
        image_root = str((samples_dir / ingest.image_root).resolve())
    _check_plan(options.out, samples_dir, teachers)
    tasks = []
    available = sorted({Path(ref.name).parent.name for ref in ingest.shards})
    if options.splits:
        missing = sorted(set(options.splits) - set(available))
        if missing:
            raise DistillError(f"--splits {','.join(missing)}: not in {samples_dir} "
                               f"(it has {', '.join(available)})")
    for ref in ingest.shards:
        path = Path(ref.name)
        split = path.parent.name
        if options.splits and split not in options.splits:
            continue
        tasks.append(ShardTask(
            split=split, name=path.name, input_path=str(samples_dir / ref.name),
            out=str(options.out.resolve()), image_root=image_root, teacher_set=teacher_path,
            flush_every=options.flush_every, flush_seconds=options.flush_seconds,
            retry_rejected=options.retry_rejected))
    return tasks, ingest, teachers


def _check_plan(out: Path, samples_dir: Path, teachers: TeacherSet) -> None:
    """One output folder holds one generation: refuse to mix in other inputs or teachers."""
    durable.check_plan(out, {"input_dir": str(samples_dir), "teacher_set_hash": teachers.hash,
                             "teacher_set": teachers.describe()}, [
        ("teacher_set_hash", f"{out} was generated with a different teacher set (or prompt, "
                             "sampling, k); use a new --out to generate with this one"),
        ("input_dir", f"{out} was generated from another input folder, not {samples_dir}; "
                      "use a new --out")])


def expected_outputs(ingest: StageManifest, teachers: TeacherSet, split: str) -> float:
    """Outputs per sample of a split (for the progress bar's total), from ingest counts."""
    outputs = samples = 0
    for name, count in ingest.counts.items():
        shard_split, sep, category = name.partition("/")
        if sep and shard_split == split:
            samples += count
            outputs += count * sum(t.spec.k for t in teachers.for_category(category))
    return outputs / samples if samples else 0.0


def run_generate(options: GenerateOptions, *, bar_advance: Progress | None = None,
                 on_total: Callable[[int], None] | None = None,
                 worker: GenerateWorker | None = None) -> RunSummary:
    """Generate into ``options.out``, its only writer (another run there: exit, or wait).

    ``worker`` lends engines already loaded to a local run (they stay open after it)."""
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with single_writer(lock_path_for(out), str(out), wait=options.wait):
        return _run_generate(options, out, bar_advance, on_total, worker)


def _run_generate(options: GenerateOptions, out: Path, bar_advance: Progress | None,
                  on_total: Callable[[int], None] | None,
                  worker: GenerateWorker | None) -> RunSummary:
    start = time.perf_counter()
    tasks, ingest, teachers = plan_tasks(options)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():  # never leave a manifest that describes shards being redone
        manifest_path.unlink()
        fsync_dir(out)
    rows = {Path(ref.name).parent.name + "/" + Path(ref.name).name: ref.rows
            for ref in ingest.shards}
    if on_total:
        on_total(round(sum(rows[f"{t.split}/{t.name}"] * expected_outputs(ingest, teachers,
                                                                           t.split)
                           for t in tasks)))
    summary = RunSummary(out=out)
    if options.executor == "local":
        local = worker or GenerateWorker()
        try:
            for task in tasks:
                local(task, bar_advance).merge_into(summary)
        finally:
            if worker is None:
                local.close()
    else:
        for shard in map_shards(GenerateWorker, tasks, executor=options.executor,
                                ray=options.ray):
            shard.merge_into(summary)
            if bar_advance:
                bar_advance(shard.traces + sum(shard.rejections.values()) + shard.already_done)
    summary.manifest = write_manifest(out, ingest, options, teachers, tasks)
    summary.seconds = time.perf_counter() - start
    return summary


def write_manifest(out: Path, ingest: StageManifest, options: GenerateOptions,
                   teachers: TeacherSet, tasks: list[ShardTask]) -> StageManifest:
    """Describe every complete shard in OUT (all splits generated so far)."""
    shards = durable.complete_refs(out, "traces")
    rejects = durable.complete_refs(out, "rejects")
    counts: Counter = Counter()
    for ref in shards:
        counts["traces"] += ref.rows
        counts[f"traces/{Path(ref.name).parent.name}"] += ref.rows
    for ref in rejects:
        counts["rejected"] += ref.rows
        for rejection in iter_records(out / ref.name, Rejection):
            counts[f"rejected/{rejection.reason}"] += 1
    samples_dir = options.samples_dir.resolve()
    generated_splits = {Path(ref.name).parent.name for ref in shards}
    inputs = [ref for ref in ingest.shards if Path(ref.name).parent.name in generated_splits]
    manifest = StageManifest(
        stage="generate", created_at=datetime.now(UTC),
        image_root=str((samples_dir / ingest.image_root).resolve())
        if ingest.image_root is not None else None,
        inputs=inputs, input_dir=str(samples_dir), shards=shards, rejects=rejects,
        counts=dict(sorted(counts.items())),
        config={"teacher_set": teachers.describe(), "executor": options.executor,
                "retry_rejected": options.retry_rejected},
    )
    write_json_atomic(out / "manifest.json", manifest)
    return manifest
