"""Sharded, resumable, exactly-once generation.

Layout (paths relative to OUT)::

    plan.json                         what this folder is generating (input, teacher set hash)
    traces/<split>/part-NNNNN.jsonl   Trace records; shard names mirror the input shards
    rejects/<split>/part-NNNNN.jsonl  Rejection records (stage="generate", key=trace_key)
    manifest.json                     StageManifest(stage="generate"), written when all
                                      requested shards are complete

Exactly-once: every requested output has a deterministic ``trace_key``; the shard files
are keyed, partial-then-renamed and repaired as ``distill.generate.durable`` describes,
by the shard-stage base this stage shares with ``distill judge``
(``distill.generate.stage``): this module only says what generation does to one sample.
Transient rejections (rate limits, 5xx, timeouts, dropped connections that outlived the
engine's retries) are retried by the next run, permanent ones with ``--retry-rejected``.
At the end of every run each requested key is in exactly one place: the traces file or
the rejects file.

One writer: a run holds ``OUT/.lock`` (``distill.core.locks``), so a second run on the
same OUT stops (or waits) before it writes; each shard also has its own lock, which the
retry of a shard whose node was lost waits on. A complete shard that holds a key twice
(left by two runs before the lock) is reopened and repaired, never trusted.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from distill.core.answers import read_output
from distill.core.errors import DistillError
from distill.core.executors import DEFAULT_RAY_CPUS, Executor, RayOptions
from distill.core.folders import claim_output
from distill.core.shards import iter_unique, parse_line, read_json_model
from distill.generate import durable
from distill.generate.engines.base import Completion, EngineFailure
from distill.generate.stage import (
    Ask,
    EngineCache,
    Feed,
    Progress,
    RunPlan,
    ShardStage,
    ShardTask,
    StageSummary,
    Status,
    locked_run,
)
from distill.generate.teachers import Teacher, TeacherSet, load_teacher_set
from distill.schemas import Sample, ShardRef, StageManifest, Trace, make_trace_key

log = logging.getLogger(__name__)


@dataclass
class RunSummary(StageSummary):
    """A generate run's counters (``traces``: the records written)."""

    @property
    def traces(self) -> int:
        return self.written


@lru_cache(maxsize=8)
def _teacher_set(path: str, mtime_ns: int) -> TeacherSet:
    return load_teacher_set(path)


def cached_teacher_set(path: str) -> TeacherSet:
    """A worker reads its teacher set once per file version, not once per shard."""
    return _teacher_set(path, os.stat(path).st_mtime_ns)


# --- what generation does to one sample ------------------------------------------------------


@dataclass
class SampleAsk(Ask):
    """One sample for one teacher: its k outputs in one request (the rendered prompt is
    made once per distinct question while planning: questions repeat)."""

    prompt: tuple[str, str] = ("", "")


class GenerateStage(ShardStage[SampleAsk]):
    """Samples in, traces out: each routed teacher writes k traces per sample."""

    name = "generate"
    records = "traces"
    count_zero_rejections = True

    def plan(self, task: ShardTask) -> list[SampleAsk]:
        """Every sample x routed teacher, grouped by teacher in the teacher set's order."""
        teachers = cached_teacher_set(task.spec)
        by_teacher: dict[str, list[SampleAsk]] = {tid: [] for tid in teachers.teachers}
        rendered: dict[tuple, tuple[str, str]] = {}
        for number, line, _ in iter_unique(task.input_path, "id"):
            sample = parse_line(line, Sample, file=task.input_path, line=number)
            sample_hash = sample.content_hash()
            for teacher in teachers.for_category(sample.category):
                by_teacher[teacher.id].append(SampleAsk(
                    teacher, sample, sample_hash, number, _trace_keys(teacher, sample_hash),
                    f"{sample.id}/{teacher.id}", teacher.id,
                    _render(rendered, teacher, sample)))
        return [ask for asks in by_teacher.values() for ask in asks]

    def render(self, ask: SampleAsk) -> tuple[str, str]:
        return ask.prompt

    def record(self, ask: SampleAsk, k: int, result: Completion) -> Trace | EngineFailure:
        teacher: Teacher = ask.maker  # type: ignore[assignment]
        parsed = read_output(result.text, ask.sample, answer_format=teacher.prompt.answer_format,
                             finish_reason=result.finish_reason)
        if not parsed.final_answer:
            return EngineFailure("unparseable", f"no final answer: {parsed.reason} "
                                 f"(finish_reason={result.finish_reason})", raw=result.text)
        spec = teacher.spec
        return Trace(
            trace_key=ask.keys[k], sample_id=ask.sample.id, sample_hash=ask.sample_hash,
            teacher_id=teacher.id, engine=teacher.engine_name, model=spec.model,
            prompt_id=teacher.prompt.id, prompt_hash=teacher.prompt.hash,
            sampling=spec.sampling, k=k, raw_text=result.text, reasoning=parsed.reasoning,
            final_answer=parsed.final_answer, prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, finish_reason=result.finish_reason,
            latency_s=max(0.0, result.latency_s), answer_format=teacher.prompt.answer_format,
        )

    def record_counts(self, out: Path, shards: list[ShardRef]) -> Counter:
        counts: Counter = Counter()
        for ref in shards:
            counts["traces"] += ref.rows
            counts[f"traces/{ref.split}"] += ref.rows
        return counts

    def manifest_inputs(self, plan: RunPlan, shards: list[ShardRef]) -> list[ShardRef]:
        """Every sample shard of each split generated so far."""
        generated = {ref.split for ref in shards}
        return [ref for ref in plan.upstream.shards if ref.split in generated]


def _trace_keys(teacher: Teacher, sample_hash: str) -> dict[int, str]:
    spec = teacher.spec
    return {k: make_trace_key(sample_hash=sample_hash, teacher_id=teacher.id, model=spec.model,
                              prompt_hash=teacher.prompt.hash, sampling=spec.sampling, k=k)
            for k in range(spec.k)}


def _render(rendered: dict[tuple, tuple[str, str]], teacher: Teacher,
            sample: Sample) -> tuple[str, str]:
    fields = (teacher.id, sample.question, tuple(sample.choices or ()), sample.answer_type,
              sample.category)
    if fields not in rendered:
        rendered[fields] = teacher.prompt.render(sample)
    return rendered[fields]


# --- the whole run ---------------------------------------------------------------------------


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
    feed: Feed = "stream"  # "shard": one shard at a time (the benchmark's baseline)

    @property
    def ray(self) -> RayOptions:
        return RayOptions(num_cpus=self.ray_num_cpus, num_gpus=self.ray_num_gpus,
                          actors=self.ray_actors, tensor_parallel=self.ray_tensor_parallel)


def plan_tasks(options: GenerateOptions) -> tuple[RunPlan, TeacherSet]:
    """Read the ingest manifest, check the output folder's plan, list one task per shard."""
    samples_dir = options.samples_dir.resolve()
    ingest = read_json_model(samples_dir / "manifest.json", StageManifest)
    if ingest.stage != "ingest":
        raise DistillError(f"{samples_dir} holds a {ingest.stage!r} manifest; --samples needs "
                           "the folder written by 'distill ingest'")
    teachers = load_teacher_set(options.teacher_set)
    image_root = None
    if ingest.image_root is not None:
        image_root = str((samples_dir / ingest.image_root).resolve())
    _check_splits(options.splits, ingest, samples_dir)
    _check_routing(teachers, ingest, options.splits)
    _check_plan(options.out, samples_dir, teachers)
    tasks = [_task(options, samples_dir, ref, image_root, teachers) for ref in ingest.shards
             if not options.splits or ref.split in options.splits]
    config = {"teacher_set": teachers.describe(), "executor": options.executor,
              "retry_rejected": options.retry_rejected}
    return RunPlan(tasks, ingest, str(samples_dir), image_root, config), teachers


def _task(options: GenerateOptions, samples_dir: Path, ref: ShardRef, image_root: str | None,
          teachers: TeacherSet) -> ShardTask:
    return ShardTask(
        split=ref.split, name=ref.file, input_path=str(samples_dir / ref.name),
        out=str(options.out.resolve()), records=GenerateStage.records, key_field="trace_key",
        spec=str(Path(teachers.source).resolve()), image_root=image_root,
        flush_every=options.flush_every, flush_seconds=options.flush_seconds,
        retry_rejected=options.retry_rejected)


def _check_splits(splits: tuple[str, ...] | None, ingest: StageManifest,
                  samples_dir: Path) -> None:
    available = sorted({ref.split for ref in ingest.shards})
    missing = sorted(set(splits or ()) - set(available))
    if missing:
        raise DistillError(f"--splits {','.join(missing)}: not in {samples_dir} "
                           f"(it has {', '.join(available)})")


def _check_routing(teachers: TeacherSet, ingest: StageManifest,
                   splits: tuple[str, ...] | None) -> None:
    """Routing must reach the items. A routing that sends no item of this run to any
    teacher (a typo in ``default``, ``default: []`` over unlisted categories) would write
    0 traces and a finished manifest: it is an error naming the routing keys no item has
    (the likely typos) and the categories there are. A key no item has, or a category no
    teacher answers, in a run that does reach some items, is a warning: a shared teacher
    set may name categories a small input lacks. Categories come from the ingest
    manifest's per-category counts."""
    everywhere: set[str] = set()  # categories of the whole input
    found: set[str] = set()  # ... of the splits this run generates
    for name in ingest.counts:
        split, sep, category = name.partition("/")
        if sep:
            everywhere.add(category)
            if not splits or split in splits:
                found.add(category)
    if not found:
        return  # an ingest manifest without per-category counts: nothing to check against
    unmatched = sorted(c for c in teachers.routing if c != "default" and c not in everywhere)
    unanswered = sorted(c for c in found if not teachers.for_category(c))
    if unanswered == sorted(found):
        typos = f"; routing keys no item has: {', '.join(unmatched)}" if unmatched else ""
        raise DistillError(f"{teachers.source}: routing sends no item to any teacher (the "
                           f"input's categories: {', '.join(sorted(found))}{typos}); route "
                           "them, or give routing.default a teacher")
    if unmatched:
        log.warning("%s: routing keys no item has: %s (the input's categories: %s)",
                    teachers.source, ", ".join(unmatched), ", ".join(sorted(everywhere)))
    if unanswered:
        log.warning("%s: no teacher answers the items of categories %s", teachers.source,
                    ", ".join(unanswered))


def _check_plan(out: Path, samples_dir: Path, teachers: TeacherSet) -> None:
    """One output folder holds one generation: refuse to mix in other inputs or teachers,
    or the same teachers with engine options that change what they answer."""
    durable.check_plan(out, {"input_dir": str(samples_dir), "teacher_set_hash": teachers.hash,
                             "teacher_options": teachers.output_options(),
                             "teacher_set": teachers.describe()}, [
        ("teacher_set_hash", f"{out} was generated with a different teacher set (or prompt, "
                             "sampling, k); use a new --out to generate with this one"),
        ("teacher_options", lambda old, new: _options_changed(out, old, new)),
        ("input_dir", f"{out} was generated from another input folder, not {samples_dir}; "
                      "use a new --out")])


def _options_changed(out: Path, old: dict, new: dict) -> str:
    """Which teacher's which option changed, in one line."""
    for teacher_id in sorted(set(old) | set(new)):
        before, after = old.get(teacher_id, {}), new.get(teacher_id, {})
        for name in sorted(set(before) | set(after)):
            if before.get(name) != after.get(name):
                return (f"{out} was generated with teacher {teacher_id!r} option {name} = "
                        f"{before.get(name, '(default)')!r}, not "
                        f"{after.get(name, '(default)')!r}: its traces would mix two "
                        "settings; use a new --out (or the old value)")
    return f"{out} was generated with other teacher options; use a new --out"


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
                 engines: EngineCache | None = None,
                 status: Status | None = None) -> RunSummary:
    """Generate into ``options.out``, its only writer (another run there: exit, or wait).

    ``engines`` lends engines already loaded to a local run (they stay open after it);
    ``status`` gets the feed's line about the engines (in flight, tokens/s)."""
    def run(out: Path) -> RunSummary:
        plan, teachers = plan_tasks(options)
        if on_total:
            on_total(_total(plan, teachers))
        return GenerateStage().run(plan, RunSummary(out=out), executor=options.executor,
                                   ray=options.ray, progress=bar_advance, engines=engines,
                                   feed=options.feed, status=status)

    out = claim_output(options.out, "generate", input_folders=[options.samples_dir])
    return locked_run(out, options.wait, run)


def _total(plan: RunPlan, teachers: TeacherSet) -> int:
    """Outputs the run's tasks ask for, estimated from the ingest counts."""
    rows = {(ref.split, ref.file): ref.rows for ref in plan.upstream.shards}
    return round(sum(rows[(t.split, t.name)] * expected_outputs(plan.upstream, teachers, t.split)
                     for t in plan.tasks))
