"""One base for a stage that maps input shards to keyed output shards (generate, judge).

A stage says only what it does to one record: which outputs an input shard needs
(``plan``: one ``Ask`` per engine request, each naming the keys its results settle), the
prompt of one ask (``render``) and the record one reply becomes (``record``). Everything
else is here, written once (the shape follows datatrove's ``PipelineStep``: a ``run`` per
shard and stats merged across shards):

- the run's lock on OUT and each shard's own lock (``distill.core.locks``);
- the shard files: complete shards skipped, partial ones repaired and resumed, keys
  already settled never asked again, records and rejections written and committed
  (``distill.generate.durable``);
- the engines, made once per worker and reused for every shard it runs (``EngineCache``);
- counters (``ShardStats``) and the rejection ledger: an image that cannot be read, an
  engine failure and a reply the stage refuses each become one ``Rejection``;
- the manifest of every complete shard, written when the run ends.

How asks reach the engines: by default through the streaming feed
(``distill.generate.feed``), which keeps each engine's window of requests full across
shard boundaries and commits each shard when all its keys are settled; ``--feed shard``
runs one shard at a time (``run_shard``), its asks in batches. Both use the same steps
here: ``open_shard``, ``request`` (an ask's engine request, built when it is fed),
``settle`` (what its results become) and ``OpenShard.commit``.

Where shards run is the executor's business alone (``distill.core.executors``): the same
``StageWorker`` runs them in this process or one per Ray actor.
"""

from __future__ import annotations

import json
import os
import socket
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel

from distill.core.executors import Executor, RayOptions, map_shards
from distill.core.images import ImageError, fit_pixels, read_image_bytes
from distill.core.locks import lock_path_beside, lock_path_for, single_writer
from distill.core.paths import relative_to
from distill.core.shards import fsync_dir, iter_records, write_json_atomic
from distill.generate import durable
from distill.generate.engines.base import (
    ChatRequest,
    Completion,
    Engine,
    EngineFailure,
    EngineOptions,
    RequestResults,
)
from distill.schemas import Rejection, Sample, ShardRef, StageManifest

Progress = Callable[[int], None]
Status = Callable[[str], None]
Feed = Literal["stream", "shard"]


class EngineMaker(Protocol):
    """A teacher or a judge: what defines its outputs, its engine options, its engine."""

    options: EngineOptions

    @property
    def id(self) -> str: ...

    @property
    def spec(self) -> Any: ...  # its spec: ``spec.sampling`` goes with every request

    @property
    def batch_size(self) -> int | None: ...

    def identity(self) -> dict[str, Any]: ...

    def make_engine(self) -> Engine: ...


# --- the unit of work ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardTask:
    """One input shard and the output shard it becomes; plain data, so it can travel to a
    Ray actor. ``spec`` is the file that says who answers (a teacher set, a judge)."""

    split: str
    name: str
    input_path: str  # the shard read (samples for generate, traces for judge)
    out: str
    records: str  # the output records' folder under OUT: "traces" | "judgements"
    key_field: str  # "trace_key" | "judgement_key"
    spec: str
    image_root: str | None
    samples_path: str | None = None  # the samples beside the input (judge)
    flush_every: int = 256
    flush_seconds: float = 5.0
    retry_rejected: bool = False

    @property
    def files(self) -> durable.ShardFiles:
        out = Path(self.out)
        return durable.ShardFiles(out / self.records / self.split / self.name,
                                  out / "rejects" / self.split / self.name, self.key_field,
                                  self.retry_rejected, self.flush_every, self.flush_seconds)


@dataclass
class Ask:
    """One engine request: the sample it shows, who answers it and the output keys its
    results settle (sample index k -> key). ``line`` and ``teacher_id`` are what a
    rejection of it names."""

    maker: EngineMaker
    sample: Sample
    sample_hash: str
    line: int
    keys: dict[int, str]
    request_id: str
    teacher_id: str | None


A = TypeVar("A", bound=Ask)


# --- counters --------------------------------------------------------------------------------


@dataclass
class ShardStats:
    """What one shard (or, merged, a whole run) did: every count in one place."""

    written: int = 0
    rejections: Counter = field(default_factory=Counter)
    already_done: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    shards_reopened: int = 0
    repaired_bytes: int = 0
    duplicates_removed: int = 0
    engine_loads: Counter = field(default_factory=Counter)  # (worker, engine maker id) -> loads

    @property
    def rejected(self) -> int:
        return sum(self.rejections.values())

    @property
    def settled(self) -> int:
        """Keys this shard accounts for: written, rejected or found already done."""
        return self.written + self.rejected + self.already_done

    def started(self, start: durable.ShardStart) -> None:
        self.shards_done = 1
        self.shards_reopened = int(start.reopened)
        self.repaired_bytes = start.repaired_bytes
        self.duplicates_removed = start.duplicates_removed

    def merge(self, other: ShardStats) -> None:
        self.written += other.written
        self.rejections.update(other.rejections)
        self.already_done += other.already_done
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.shards_done += other.shards_done
        self.shards_skipped += other.shards_skipped
        self.shards_reopened += other.shards_reopened
        self.repaired_bytes += other.repaired_bytes
        self.duplicates_removed += other.duplicates_removed
        self.engine_loads.update(other.engine_loads)


@dataclass
class StageSummary(ShardStats):
    """A whole run: the merged counters, where it wrote, how long it took, its manifest."""

    out: Path = Path()
    seconds: float = 0.0
    manifest: StageManifest | None = None


S = TypeVar("S", bound=StageSummary)


# --- engines: expensive (a vLLM model load takes minutes), so one per maker per worker -------


class EngineCache:
    """Each teacher's or judge's engine, made once and reused for every shard this process
    (this Ray actor) runs; loads are counted per maker for the run's summary."""

    def __init__(self) -> None:
        self.engines: dict[str, Engine] = {}
        self.loads: Counter = Counter()
        self.worker = worker_name()

    def get(self, maker: EngineMaker) -> Engine:
        key = json.dumps([maker.identity(), maker.options.model_dump(mode="json")],
                         sort_keys=True)
        if key not in self.engines:
            self.engines[key] = maker.make_engine()
            self.loads[maker.id] += 1
        return self.engines[key]

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


# --- the base --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """What a run reads and writes: one task per input shard, and what its manifest says."""

    tasks: list[ShardTask]
    upstream: StageManifest
    input_dir: str
    image_root: str | None
    config: dict[str, Any]


class ShardStage(ABC, Generic[A]):
    """A stage that maps each input shard to one keyed output shard, exactly once."""

    name: ClassVar[str]  # the stage's name in manifests and rejections
    records: ClassVar[str]  # the output records' folder under OUT
    skip_checks_keys: ClassVar[bool] = False  # must a complete shard hold every planned key?
    # generate's manifests have always said "rejected": 0 when nothing was rejected, judge's
    # leave the count out; kept, so that a rerun rewrites a folder's manifest unchanged
    count_zero_rejections: ClassVar[bool] = False

    # --- what a stage says ---------------------------------------------------------------

    @abstractmethod
    def plan(self, task: ShardTask) -> list[A]:
        """Every ask this shard needs, all keys included (the base drops settled ones)."""

    @abstractmethod
    def render(self, ask: A) -> tuple[str, str]:
        """The (system, user) prompt of one ask."""

    @abstractmethod
    def record(self, ask: A, k: int, result: Completion) -> BaseModel | EngineFailure:
        """The record one reply becomes, or the failure that rejects it."""

    @abstractmethod
    def record_counts(self, out: Path, shards: list[ShardRef]) -> Counter:
        """The manifest's counts of the complete records shards."""

    def manifest_inputs(self, plan: RunPlan, shards: list[ShardRef]) -> list[ShardRef]:
        """The upstream shards the complete output shards were made from."""
        made = {(ref.split, ref.file) for ref in shards}
        return [ref for ref in plan.upstream.shards if (ref.split, ref.file) in made]

    # --- one shard -------------------------------------------------------------------------

    def run_shard(self, task: ShardTask, engines: EngineCache,
                  progress: Progress | None = None) -> ShardStats:
        """Settle every missing key of one input shard, durably; safe to kill anytime. The
        ``--feed shard`` path: the shard's asks go to each engine in batches, and the next
        shard is read when this one is committed (the baseline ``bench/generate_feed.py``
        measures the streaming feed against)."""
        shard = self.open_shard(task, progress)
        if isinstance(shard, ShardStats):
            return shard
        with shard.stack:
            for maker, batch in _batches(shard.todo):
                self._ask(shard, engines.get(maker), batch)
            shard.commit()
        return shard.stats

    def open_shard(self, task: ShardTask, progress: Progress | None) -> OpenShard | ShardStats:
        """Take the shard's lock, repair and resume its partial files and plan what is left;
        the stats alone when it is already complete. The shard's own lock (waited for)
        keeps a worker that outlived its lost node from writing beside the retry of its
        shard on another node; it is held until the shard is committed or closed."""
        files = task.files
        stack = ExitStack()
        try:
            stack.enter_context(single_writer(
                lock_path_beside(files.records), f"shard {task.split}/{task.name}", wait=True,
                refuse_other_hosts=False))
            stats = ShardStats()
            asks = self.plan(task) if self.skip_checks_keys else None
            wanted = {key for ask in asks for key in ask.keys.values()} if asks is not None \
                else None
            if not durable.needs_work(files, wanted):
                stats.shards_skipped = 1
                stats.already_done = len(wanted or ())
                _advance(progress, stats.already_done)
                stack.close()
                return stats
            start = durable.begin(files)
            stats.started(start)
            todo = _unsettled(self.plan(task) if asks is None else asks, start.done, stats)
            _advance(progress, stats.already_done)
            writers = stack.enter_context(durable.open_writers(files))
        except BaseException:
            stack.close()
            raise
        return OpenShard(ShardOutput(self.name, task, writers, stats, progress), todo, stack)

    def request(self, shard: OpenShard, ask: A) -> ChatRequest | None:
        """The engine request of one ask, built when it is fed (its image read then, never
        a whole shard's images at once); None when its image cannot be read, which rejects
        the ask's keys."""
        try:
            image = read_image_bytes(ask.sample.image, shard.task.image_root)
            budget = getattr(ask.maker.spec, "max_image_pixels", None)
            if budget:
                image = fit_pixels(image, budget)
        except ImageError as exc:
            failure = EngineFailure(f"image_error:{exc.reason}", exc.message)
            for key in ask.keys.values():
                shard.output.reject(ask, key, failure)
            shard.remaining -= 1
            return None
        system, user = self.render(ask)
        return ChatRequest(id=ask.request_id, system=system, user=user, images=(image,),
                           sampling=ask.maker.spec.sampling, ks=tuple(ask.keys))

    def _ask(self, shard: OpenShard, engine: Engine, batch: list[A]) -> None:
        """One batch to one engine: asks whose image cannot be read are rejected first."""
        requests: list[ChatRequest] = []
        by_id: dict[str, A] = {}
        for ask in batch:
            request = self.request(shard, ask)
            if request is not None:
                by_id[ask.request_id] = ask
                requests.append(request)
        if requests:
            for outcome in engine.generate(requests):
                self.settle(shard, by_id[outcome.request.id], outcome)

    def settle(self, shard: OpenShard, ask: A, outcome: RequestResults) -> None:
        """Write what one request's results become: a record or a rejection per key."""
        if len(outcome.results) != len(outcome.request.ks):
            raise RuntimeError(f"the engine of {ask.maker.id} returned {len(outcome.results)} "
                               f"results for {len(outcome.request.ks)} samples")
        for k, result in zip(outcome.request.ks, outcome.results, strict=True):
            key = ask.keys[k]
            made = result if isinstance(result, EngineFailure) else self.record(ask, k, result)
            if isinstance(made, EngineFailure):
                shard.output.reject(ask, key, made)
            else:
                shard.output.write(made, result)  # type: ignore[arg-type]
        shard.remaining -= 1

    # --- the whole run ---------------------------------------------------------------------

    def run(self, plan: RunPlan, summary: S, *, executor: Executor = "local",
            ray: RayOptions | None = None, progress: Progress | None = None,
            engines: EngineCache | None = None, feed: Feed = "stream",
            status: Status | None = None) -> S:
        """Run every task of the plan into ``summary.out`` (locked by the caller's
        ``locked_run``), then describe every complete shard in its manifest.

        ``feed``: ``stream`` keeps each engine's window of requests full across shard
        boundaries (``distill.generate.feed``); ``shard`` runs one shard at a time, its
        asks in batches (the old path, kept as the benchmark's baseline). ``status`` gets
        a line about the engines now and then (requests in flight, tokens/s)."""
        start = time.perf_counter()
        _drop_manifest(summary.out)
        make_worker = (lambda: StageWorker(type(self), engines, close=False)) if engines \
            else partial(StageWorker, type(self))
        for stats in map_shards(make_worker, plan.tasks, executor=executor, ray=ray,
                                progress=progress, settled=_settled,
                                stream=feed == "stream", status=status):
            summary.merge(stats)
        summary.manifest = self.write_manifest(summary.out, plan)
        summary.seconds = time.perf_counter() - start
        return summary

    def write_manifest(self, out: Path, plan: RunPlan) -> StageManifest:
        """Describe every complete shard in OUT (every split run so far)."""
        shards = durable.complete_refs(out, self.records)
        rejects = durable.complete_refs(out, "rejects")
        counts = self.record_counts(out, shards)
        if self.count_zero_rejections and rejects:
            counts["rejected"] += 0
        for ref in rejects:
            for rejection in iter_records(out / ref.name, Rejection):
                counts["rejected"] += 1
                counts[f"rejected/{rejection.reason}"] += 1
        manifest = StageManifest(
            stage=self.name, created_at=datetime.now(UTC),  # type: ignore[arg-type]
            image_root=plan.image_root and relative_to(plan.image_root, out),
            inputs=self.manifest_inputs(plan, shards),
            input_dir=plan.input_dir and relative_to(plan.input_dir, out),
            shards=shards, rejects=rejects,
            counts=dict(sorted(counts.items())), config=plan.config)
        write_json_atomic(out / "manifest.json", manifest)
        return manifest


def locked_run(out: Path, wait: bool, run: Callable[[Path], S]) -> S:
    """Run into OUT as its only writer (another run there: exit, or wait with ``wait``)."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with single_writer(lock_path_for(out), str(out), wait=wait):
        return run(out)


def _drop_manifest(out: Path) -> None:
    """Never leave a manifest that describes shards being redone."""
    manifest = out / "manifest.json"
    if manifest.exists():
        manifest.unlink()
        fsync_dir(out)


def _settled(stats: ShardStats) -> int:
    return stats.settled


def _advance(progress: Progress | None, n: int) -> None:
    if progress and n:
        progress(n)


def _unsettled(asks: list[A], done: set[str], stats: ShardStats) -> list[A]:
    """The asks with the keys still to settle (settled ones counted as already done)."""
    todo = []
    for ask in asks:
        keys = {k: key for k, key in ask.keys.items() if key not in done}
        stats.already_done += len(ask.keys) - len(keys)
        if keys:
            ask.keys = keys
            todo.append(ask)
    return todo


def _batches(asks: Sequence[A]) -> Iterator[tuple[EngineMaker, list[A]]]:
    """Asks grouped by who answers them (in the order each first appears), then cut into
    the engine maker's batch size (all at once when it has none)."""
    groups: dict[str, list[A]] = {}
    for ask in asks:
        groups.setdefault(ask.maker.id, []).append(ask)
    for items in groups.values():
        maker = items[0].maker
        size = maker.batch_size or len(items)
        for begin in range(0, len(items), size):
            yield maker, items[begin:begin + size]


# --- where one shard's outcomes go -----------------------------------------------------------


@dataclass
class ShardOutput:
    """One shard's records and rejects writers, its counters and its progress callback:
    every outcome is written and counted in exactly one place."""

    stage: str
    task: ShardTask
    writers: durable.ShardWriters
    stats: ShardStats
    progress: Progress | None

    def write(self, record: BaseModel, result: Completion) -> None:
        self.writers.records.write(record)
        self.stats.written += 1
        self.stats.prompt_tokens += result.prompt_tokens or 0
        self.stats.completion_tokens += result.completion_tokens or 0
        _advance(self.progress, 1)

    def reject(self, ask: Ask, key: str, failure: EngineFailure) -> None:
        self.writers.rejects.write(Rejection(
            stage=self.stage, key=key, reason=failure.reason,  # type: ignore[arg-type]
            message=failure.message or failure.reason, sample_id=ask.sample.id,
            teacher_id=ask.teacher_id, location=f"{self.task.input_path}:{ask.line}",
            raw=Rejection.clip(failure.raw), permanent=failure.permanent))
        self.stats.rejections[failure.reason] += 1
        _advance(self.progress, 1)


@dataclass
class OpenShard:
    """A shard being worked on: its output, the asks still to feed (``todo``), how many
    asks are not settled yet (``remaining``) and what it holds open (its lock and its
    writers, in ``stack``). It is committed when every ask is settled."""

    output: ShardOutput
    todo: list
    stack: ExitStack
    remaining: int = -1

    def __post_init__(self) -> None:
        if self.remaining < 0:
            self.remaining = len(self.todo)

    @property
    def task(self) -> ShardTask:
        return self.output.task

    @property
    def stats(self) -> ShardStats:
        return self.output.stats

    @property
    def settled(self) -> bool:
        return self.remaining == 0

    def commit(self) -> ShardStats:
        """Commit the shard's files (every key is settled), then let go of them and its
        lock."""
        self.output.writers.commit()
        self.stack.close()
        return self.stats

    def flush_if_due(self) -> None:
        """fsync what was written if the flush interval has passed (a shard whose last
        results are slow to come back still bounds what a crash can lose)."""
        self.output.writers.records.flush_if_due()
        self.output.writers.rejects.flush_if_due()

    def close(self) -> None:
        """Leave the shard's partial files for the next run and let go of its lock."""
        self.stack.close()


# --- the worker an executor runs -------------------------------------------------------------


class StageWorker:
    """What an executor calls once per shard: one stage and its engines per process (per
    Ray actor), so an engine loads once per actor however many shards it is given."""

    def __init__(self, stage: type[ShardStage], engines: EngineCache | None = None, *,
                 close: bool = True) -> None:
        self.stage = stage()
        self.engines = engines or EngineCache()
        self._close = close

    def __call__(self, task: ShardTask, progress: Progress | None = None) -> ShardStats:
        before = Counter(self.engines.loads)
        stats = self.stage.run_shard(task, self.engines, progress)
        self._count_loads(stats, before)
        return stats

    def map(self, tasks: Sequence[ShardTask], progress: Progress | None = None,
            status: Status | None = None) -> Iterator[tuple[ShardTask, ShardStats]]:
        """Stream every task's asks through the engines (``distill.generate.feed``);
        each shard's stats as it commits, in the order shards complete."""
        from distill.generate.feed import ShardFeed

        before = Counter(self.engines.loads)
        for task, stats in ShardFeed(self.stage, self.engines, tasks, progress, status).run():
            self._count_loads(stats, before)
            before = Counter(self.engines.loads)
            yield task, stats

    def _count_loads(self, stats: ShardStats, before: Counter) -> None:
        worker = self.engines.worker
        stats.engine_loads = Counter({(worker, maker): n for maker, n
                                      in (self.engines.loads - before).items()})

    def close(self) -> None:
        if self._close:
            self.engines.close()
