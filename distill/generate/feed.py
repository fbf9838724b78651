"""The streaming feed: every engine kept busy across shard boundaries, exactly once.

A continuous-batching engine (vLLM, a server) is only as fast as the queue in front of
it. Handing it one shard and waiting for the shard's last result leaves it decoding the
few longest generations at a tiny batch size (the tail), then idle while the next shard
is read, its prompts rendered and its images decoded. Ray Data LLM's maintainers measured
what that costs on their own vLLM runner: 512 requests handed over one synchronous batch
at a time gave 8.04 req/s against 12.20 with eight batches of 64 in flight (ray PR
#52634); ``bench/generate_feed.py`` measures ours against the engine's ceiling.

So the feed keeps, for each engine (a *lane*), a window of requests in flight: as soon as
one comes back, the next goes in, whichever shard it belongs to. Shards are opened ahead
(their lock taken, their partial files repaired, their asks planned) only as far as the
windows need, so memory stays bounded by the windows, never by the number of shards:

- a shard's asks wait in the lanes' queues; a request (its image read, its prompt put in
  the engine's message format) is built only when it is fed;
- results arrive in any order and belong to any open shard; each is written as soon as
  it is back (a record or a rejection per key, ``ShardStage.settle``);
- a shard commits when every one of its asks is settled, and lets go of its files and its
  lock then; shards commit in the order they finish, not the order they were opened;
- writers of open shards are flushed every ``flush_seconds`` even when their next result
  is slow to come, so a SIGKILL loses at most what was not flushed: the rerun repairs the
  partial files and asks only for the keys they do not hold;
- a failure (or a kill) aborts what is in flight and leaves every open shard partial,
  to be resumed by the next run; nothing is committed that is not settled.

Opening ahead is bounded three ways: a shard is opened only when some lane has room and
nothing queued, at most ``MAX_OPEN_SHARDS`` are open at once, and the asks queued across
lanes stay under the lanes' windows together.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from distill.generate.engines.base import ChatRequest, Completion, RequestResults, Stream
from distill.generate.stage import (
    Ask,
    EngineCache,
    EngineMaker,
    OpenShard,
    Progress,
    ShardStage,
    ShardStats,
    ShardTask,
    Status,
)

MAX_OPEN_SHARDS = 128  # each holds a lock and two open files
STATUS_EVERY_S = 1.0
POLL_S = 0.2  # the longest one collect waits, so flushes and status lines stay on time


@dataclass
class Lane:
    """One engine's stream and the asks waiting for it."""

    stream: Stream
    queue: deque[tuple[OpenShard, Ask]] = field(default_factory=deque)
    in_flight: int = 0

    @property
    def room(self) -> bool:
        return self.in_flight < self.stream.window

    @property
    def starving(self) -> bool:
        return self.room and not self.queue


@dataclass
class Meter:
    """What the status line says: requests in flight, finished, output tokens per second
    (over the last ``span_s`` seconds, so the figure follows the engine, not the start)."""

    span_s: float = 30.0
    finished: int = 0
    samples: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens)
    last_status: float = 0.0

    def add(self, outcome: RequestResults) -> None:
        self.finished += 1
        tokens = sum(r.completion_tokens or 0 for r in outcome.results
                     if isinstance(r, Completion))
        self.samples.append((time.monotonic(), tokens))

    def tokens_per_s(self, now: float) -> float:
        while self.samples and now - self.samples[0][0] > self.span_s:
            self.samples.popleft()
        if len(self.samples) < 2:
            return 0.0
        span = now - self.samples[0][0]
        return sum(tokens for _, tokens in self.samples) / span if span > 0 else 0.0


class ShardFeed:
    """Stream the asks of many shards through their engines; yields (task, stats) for
    each shard as it commits (or is found complete)."""

    def __init__(self, stage: ShardStage, engines: EngineCache, tasks: Iterable[ShardTask],
                 progress: Progress | None = None, status: Status | None = None, *,
                 max_open_shards: int = MAX_OPEN_SHARDS) -> None:
        self.stage = stage
        self.engines = engines
        self.tasks = iter(tasks)
        self.progress = progress
        self.status = status
        self.max_open_shards = max_open_shards
        self.lanes: dict[str, Lane] = {}
        self.open: dict[int, OpenShard] = {}
        self.pending: dict[int, tuple[ChatRequest, Lane, OpenShard, Ask]] = {}
        self.done: list[tuple[ShardTask, ShardStats]] = []
        self.queued = 0
        self.exhausted = False
        self.meter = Meter()

    def run(self) -> Iterator[tuple[ShardTask, ShardStats]]:
        try:
            while True:
                self._fill()
                yield from self._drain()
                if not self.pending:
                    if self.exhausted and not self.queued:
                        break
                    continue
                self._collect()
                yield from self._drain()
                for shard in self.open.values():
                    shard.flush_if_due()
                self._report()
            self._report(force=True)
        finally:
            self._close()

    # --- feeding ---------------------------------------------------------------------------

    def _fill(self) -> None:
        """Top up every lane's window; open the next shard while a lane starves."""
        while True:
            for lane in self.lanes.values():
                while lane.queue and lane.room:
                    shard, ask = lane.queue.popleft()
                    self.queued -= 1
                    self._submit(lane, shard, ask)
            if not self._should_open():
                return
            self._open_next()

    def _should_open(self) -> bool:
        if self.exhausted or len(self.open) >= self.max_open_shards:
            return False
        if not self.lanes:
            return True
        windows = sum(lane.stream.window for lane in self.lanes.values())
        return self.queued < windows and any(lane.starving for lane in self.lanes.values())

    def _open_next(self) -> None:
        task = next(self.tasks, None)
        if task is None:
            self.exhausted = True
            return
        shard = self.stage.open_shard(task, self.progress)
        if isinstance(shard, ShardStats):
            self.done.append((task, shard))
            return
        self.open[id(shard)] = shard
        for ask in shard.todo:
            self._lane(ask.maker).queue.append((shard, ask))
        self.queued += len(shard.todo)
        shard.todo = []  # the asks live in the lanes' queues now
        self._commit_if_settled(shard)

    def _lane(self, maker: EngineMaker) -> Lane:
        lane = self.lanes.get(maker.id)
        if lane is None:
            lane = self.lanes[maker.id] = Lane(self.engines.get(maker).stream(maker.batch_size))
        return lane

    def _submit(self, lane: Lane, shard: OpenShard, ask: Ask) -> None:
        request = self.stage.request(shard, ask)
        if request is None:  # its image could not be read: rejected, settled
            self._commit_if_settled(shard)
            return
        lane.stream.submit(request)
        lane.in_flight += 1
        self.pending[id(request)] = (request, lane, shard, ask)

    # --- results ---------------------------------------------------------------------------

    def _collect(self) -> None:
        busy = [lane for lane in self.lanes.values() if lane.in_flight]
        wait = POLL_S / max(1, len(busy))
        for lane in busy:
            for outcome in lane.stream.collect(wait):
                entry = self.pending.pop(id(outcome.request), None)
                if entry is None or entry[0] is not outcome.request:
                    raise RuntimeError(f"an engine returned request {outcome.request.id!r}, "
                                       "which it was not given or returned twice")
                _, owner, shard, ask = entry
                owner.in_flight -= 1
                self.stage.settle(shard, ask, outcome)
                self.meter.add(outcome)
                self._commit_if_settled(shard)

    def _commit_if_settled(self, shard: OpenShard) -> None:
        if shard.settled:
            self.open.pop(id(shard), None)
            self.done.append((shard.task, shard.commit()))

    def _drain(self) -> Iterator[tuple[ShardTask, ShardStats]]:
        done, self.done = self.done, []
        yield from done

    # --- status and shutdown ---------------------------------------------------------------

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.status is None or (not force and now - self.meter.last_status < STATUS_EVERY_S):
            return
        self.meter.last_status = now
        self.status(f"{len(self.pending):,} in flight, {self.meter.finished:,} requests done, "
                    f"{self.meter.tokens_per_s(now):,.0f} tok/s")

    def _close(self) -> None:
        """Abort what is in flight and leave open shards partial (a failure or a kill:
        the next run resumes them); never commit what is not settled."""
        for lane in self.lanes.values():
            lane.stream.close()
        for shard in self.open.values():
            shard.close()
        self.open.clear()
        self.pending.clear()
