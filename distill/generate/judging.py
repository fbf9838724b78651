"""`distill judge`: a judge model reads a generate folder's traces and writes keyed,
exactly-once Judgement records.

Layout (paths relative to OUT)::

    plan.json                            what this folder judges (traces folder, judge hash)
    judgements/<split>/part-NNNNN.jsonl  Judgement records; names mirror the trace shards
    rejects/<split>/part-NNNNN.jsonl     Rejection records (stage="judge", key=judgement_key)
    manifest.json                        StageManifest(stage="judge"), written when every
                                         trace shard's judgements are complete

The work of one trace shard: a ``rubric`` judgement of every trace, and -- when the judge
has a ``same_prompt`` -- a ``same_answer`` judgement of every pair of different answers
(in canonical spelling) that teachers gave to an item with free-text answers (answer type
``text``: no rule compares those well). Every judgement has a deterministic key (what it
judges + the judge), and the shard files are written, repaired and resumed exactly as
generation's are (``distill.generate.durable``): kill the run at any moment, run the same
command again, and nothing is lost or asked twice. A reply that is no valid judgement is
a permanent rejection with its reason (``distill.generate.judges``), never a crash.

One writer: a run holds ``OUT/.lock`` and each shard its own lock
(``distill.core.locks``), as generation does, so a second run on the same OUT stops (or
waits with ``--wait``) before it writes.

``distill filter --judgements OUT`` reads the result as signals; no policy ever asks the
judge again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import combinations
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from distill.core.answers import read_trace
from distill.core.errors import DistillError, InputError
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
from distill.generate.engines.base import ChatRequest, Completion, EngineFailure, RequestResults
from distill.generate.judges import BadReply, Judge, load_judge, parse_same, parse_score
from distill.generate.runner import EngineSource, GenerateWorker
from distill.schemas import (
    Judgement,
    Rejection,
    Sample,
    StageManifest,
    Trace,
    make_judgement_key,
    same_answer_subject,
)
from distill.schemas.judgement import JudgementKind

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class JudgeTask:
    """One trace shard to judge; plain data."""

    split: str
    name: str
    traces_path: str
    samples_path: str
    out: str
    image_root: str | None
    judge: str  # the judge file's path
    flush_every: int = 256
    flush_seconds: float = 5.0
    retry_rejected: bool = False

    @property
    def files(self) -> durable.ShardFiles:
        out = Path(self.out)
        return durable.ShardFiles(out / "judgements" / self.split / self.name,
                                  out / "rejects" / self.split / self.name, "judgement_key",
                                  self.retry_rejected, self.flush_every, self.flush_seconds)


@dataclass
class JudgeSummary:
    out: Path
    judged: int = 0
    rejections: Counter = field(default_factory=Counter)
    already_done: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    shards_reopened: int = 0
    repaired_bytes: int = 0
    duplicates_removed: int = 0
    seconds: float = 0.0
    manifest: StageManifest | None = None

    @property
    def rejected(self) -> int:
        return sum(self.rejections.values())


@dataclass(frozen=True)
class _Ask:
    """One judgement to ask for: what it judges and where that came from."""

    key: str
    kind: JudgementKind
    subject: str
    sample: Sample
    sample_hash: str
    line: int
    trace: Trace | None = None
    answers: tuple[str, str] | None = None


@lru_cache(maxsize=4)
def _judge(path: str, mtime_ns: int) -> Judge:
    return load_judge(path)


def cached_judge(path: str) -> Judge:
    return _judge(path, Path(path).stat().st_mtime_ns)


# --- one shard -------------------------------------------------------------------------------


def plan_asks(task: JudgeTask, judge: Judge) -> list[_Ask]:
    """Every judgement this shard needs, in trace order (pairs after their item's traces)."""
    samples = {}
    for number, line, _ in iter_unique(task.samples_path, "id"):
        sample = parse_line(line, Sample, file=task.samples_path, line=number)
        samples[sample.id] = sample
    asks: list[_Ask] = []
    answers: dict[str, dict[str, int]] = {}  # sample id -> canonical answer -> first line
    for number, line, _ in iter_unique(task.traces_path, "trace_key"):
        trace = parse_line(line, Trace, file=task.traces_path, line=number)
        sample = samples.get(trace.sample_id)
        if sample is None or sample.content_hash() != trace.sample_hash:
            raise InputError("this trace's sample is not in the matching sample shard (or "
                             "changed since generation)", file=task.traces_path, line=number,
                             field="sample_id", reason="unknown_sample")
        asks.append(_Ask(make_judgement_key(kind="rubric", subject=trace.trace_key,
                                            judge=judge.rubric),
                         "rubric", trace.trace_key, sample, trace.sample_hash, number,
                         trace=trace))
        if judge.same_answer is not None and sample.answer_type == "text":
            canonical = read_trace(trace, sample).canonical  # as the filter reads it
            if canonical:
                answers.setdefault(sample.id, {}).setdefault(canonical, number)
    for sample_id, found in answers.items():
        sample = samples[sample_id]
        sample_hash = sample.content_hash()
        for a, b in combinations(sorted(found), 2):
            subject = same_answer_subject(sample_hash, a, b)
            key = make_judgement_key(kind="same_answer", subject=subject,
                                     judge=judge.same_answer)  # type: ignore[arg-type]
            asks.append(_Ask(key, "same_answer", subject, sample, sample_hash,
                             min(found[a], found[b]), answers=(a, b)))
    return asks


def run_judge_shard(task: JudgeTask, progress: Progress | None = None, *,
                    engine_for: EngineSource | None = None) -> JudgeSummary:
    """Ask the judge for every missing judgement of one trace shard, durably; safe to kill
    anytime. The shard's own lock is waited for, as generate's is."""
    with single_writer(lock_path_beside(task.files.records), f"shard {task.split}/{task.name}",
                       wait=True, refuse_other_hosts=False):
        return _run_judge_shard(task, progress, engine_for or GenerateWorker().engine_for)


def _run_judge_shard(task: JudgeTask, progress: Progress | None,
                     engine_for: EngineSource) -> JudgeSummary:
    judge = cached_judge(task.judge)
    summary = JudgeSummary(Path(task.out))
    asks = plan_asks(task, judge)
    files = task.files
    if not durable.needs_work(files, {ask.key for ask in asks}):
        summary.shards_skipped = 1
        summary.already_done = len(asks)
        if progress:
            progress(len(asks))
        return summary
    start = durable.begin(files)
    summary.shards_done = 1
    summary.shards_reopened = int(start.reopened)
    summary.repaired_bytes = start.repaired_bytes
    summary.duplicates_removed = start.duplicates_removed
    todo = [ask for ask in asks if ask.key not in start.done]
    summary.already_done = len(asks) - len(todo)
    if progress and summary.already_done:
        progress(summary.already_done)
    with durable.open_writers(files) as writers:
        output = _Output(task, judge, writers, summary, progress)
        engine = engine_for(judge)
        size = judge.batch_size or max(1, len(todo))
        for begin in range(0, len(todo), size):
            requests, by_key = output.requests(todo[begin:begin + size])
            if requests:
                for outcome in engine.generate(requests):
                    output.record(by_key[outcome.request.id], outcome)
        writers.commit()
    return summary


@dataclass
class _Output:
    """Where one shard's judgements and rejections go; each outcome written and counted
    in exactly one place."""

    task: JudgeTask
    judge: Judge
    writers: durable.ShardWriters
    summary: JudgeSummary
    progress: Progress | None

    def requests(self, asks: list[_Ask]) -> tuple[list[ChatRequest], dict[str, _Ask]]:
        requests, by_key = [], {}
        for ask in asks:
            try:
                image = read_image_bytes(ask.sample.image, self.task.image_root)
            except ImageError as exc:
                self.reject(ask, f"image_error:{exc.reason}", exc.message)
                continue
            system, user = self._render(ask)
            requests.append(ChatRequest(id=ask.key, system=system, user=user, images=(image,),
                                        sampling=self.judge.spec.sampling, ks=(0,)))
            by_key[ask.key] = ask
        return requests, by_key

    def _render(self, ask: _Ask) -> tuple[str, str]:
        if ask.trace is not None:
            return self.judge.prompt.render(ask.sample, reasoning=ask.trace.reasoning,
                                            answer=ask.trace.final_answer)
        assert ask.answers is not None and self.judge.same_prompt is not None
        return self.judge.same_prompt.render(ask.sample, answer_a=ask.answers[0],
                                             answer_b=ask.answers[1])

    def record(self, ask: _Ask, outcome: RequestResults) -> None:
        if len(outcome.results) != 1:
            raise RuntimeError(f"engine {self.judge.engine_cls.name} returned "
                               f"{len(outcome.results)} results for one judgement")
        result = outcome.results[0]
        if isinstance(result, EngineFailure):
            self.reject(ask, result.reason, result.message or result.reason,
                        permanent=result.permanent, raw=result.raw)
            return
        try:
            judgement = self._judgement(ask, result)
        except BadReply as bad:
            self.reject(ask, bad.reason, bad.message, raw=result.text)
            return
        except ValidationError as exc:  # a judgement our own schema refuses: never a crash
            self.reject(ask, "judge_invalid_record", str(exc).splitlines()[0], raw=result.text)
            return
        self.writers.records.write(judgement)
        self.summary.judged += 1
        self._advance()

    def _judgement(self, ask: _Ask, result: Completion) -> Judgement:
        judge = self.judge
        fields: dict = {}
        if ask.kind == "rubric":
            assert ask.trace is not None and judge.prompt.score_range is not None
            raw, score = parse_score(result.text, judge.prompt.score_range)
            identity = judge.rubric
            fields = {"trace_key": ask.trace.trace_key, "teacher_id": ask.trace.teacher_id,
                      "score": score, "raw_score": raw}
        else:
            assert judge.same_answer is not None and ask.answers is not None
            identity = judge.same_answer
            fields = {"answers": list(ask.answers), "same": parse_same(result.text)}
        return Judgement(
            judgement_key=ask.key, kind=ask.kind, subject=ask.subject, sample_id=ask.sample.id,
            sample_hash=ask.sample_hash, judge=identity, raw_text=result.text,
            prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
            finish_reason=result.finish_reason, latency_s=max(0.0, result.latency_s), **fields)

    def reject(self, ask: _Ask, reason: str, message: str, *, permanent: bool = True,
               raw: str | None = None) -> None:
        self.writers.rejects.write(Rejection(
            stage="judge", key=ask.key, reason=reason, message=message,
            sample_id=ask.sample.id, teacher_id=ask.trace.teacher_id if ask.trace else None,
            location=f"{self.task.traces_path}:{ask.line}", raw=Rejection.clip(raw),
            permanent=permanent))
        self.summary.rejections[reason] += 1
        self._advance()

    def _advance(self) -> None:
        if self.progress:
            self.progress(1)


# --- the whole run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeOptions:
    traces_dir: Path
    judge: str
    out: Path
    splits: tuple[str, ...] | None = None
    flush_every: int = 256
    flush_seconds: float = 5.0
    retry_rejected: bool = False
    wait: bool = False  # wait for another run on the same --out instead of exiting


def plan_tasks(options: JudgeOptions) -> tuple[list[JudgeTask], StageManifest, Judge]:
    """Read the generate manifest, check the output folder's plan, one task per shard."""
    traces_dir = options.traces_dir.resolve()
    generate = read_json_model(traces_dir / "manifest.json", StageManifest)
    if generate.stage != "generate":
        raise DistillError(f"{traces_dir} holds a {generate.stage!r} manifest; --traces needs "
                           "a finished 'distill generate' folder")
    if generate.input_dir is None:
        raise InputError("the generate manifest does not name its input folder",
                         file=traces_dir / "manifest.json", field="input_dir",
                         reason="schema_error")
    input_dir = Path(generate.input_dir)
    input_dir = input_dir if input_dir.is_absolute() else traces_dir / input_dir
    judge = load_judge(options.judge)
    _check_plan(options.out, traces_dir, judge)
    image_root = None
    if generate.image_root is not None:
        root = Path(generate.image_root)
        image_root = str(root if root.is_absolute() else (traces_dir / root).resolve())
    tasks = []
    for ref in sorted(generate.shards, key=lambda r: r.name):
        _, split, name = PurePosixPath(ref.name).parts
        if options.splits and split not in options.splits:
            continue
        tasks.append(JudgeTask(
            split=split, name=name, traces_path=str(traces_dir / ref.name),
            samples_path=str(input_dir / "samples" / split / name),
            out=str(options.out.resolve()), image_root=image_root,
            judge=str(Path(judge.source).resolve()), flush_every=options.flush_every,
            flush_seconds=options.flush_seconds, retry_rejected=options.retry_rejected))
    return tasks, generate, judge


def _check_plan(out: Path, traces_dir: Path, judge: Judge) -> None:
    """One output folder holds one judge's judgements of one traces folder."""
    durable.check_plan(out, {"traces_dir": str(traces_dir), "judge_hash": judge.hash,
                             "judge": judge.identity()}, [
        ("judge_hash", f"{out} holds judgements of a different judge (engine, model, prompt "
                       "or sampling); use a new --out for this one"),
        ("traces_dir", f"{out} judged another traces folder, not {traces_dir}; use a new "
                       "--out")])


def run_judge(options: JudgeOptions, *, bar_advance: Progress | None = None,
              on_total: Callable[[int], None] | None = None) -> JudgeSummary:
    """Judge into ``options.out``, its only writer (another run there: exit, or wait)."""
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with single_writer(lock_path_for(out), str(out), wait=options.wait):
        return _run_judge(options, out, bar_advance, on_total)


def _run_judge(options: JudgeOptions, out: Path, bar_advance: Progress | None,
               on_total: Callable[[int], None] | None) -> JudgeSummary:
    start = time.perf_counter()
    tasks, generate, judge = plan_tasks(options)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():  # never leave a manifest that describes shards being redone
        manifest_path.unlink()
        fsync_dir(out)
    if on_total:
        rows = {ref.name: ref.rows for ref in generate.shards}
        on_total(sum(rows[f"traces/{t.split}/{t.name}"] for t in tasks))
    summary = JudgeSummary(out=out)
    worker = GenerateWorker()  # the judge's engine, made once for every shard
    try:
        for task in tasks:
            shard = run_judge_shard(task, bar_advance, engine_for=worker.engine_for)
            summary.judged += shard.judged
            summary.rejections.update(shard.rejections)
            summary.already_done += shard.already_done
            summary.shards_done += shard.shards_done
            summary.shards_skipped += shard.shards_skipped
            summary.shards_reopened += shard.shards_reopened
            summary.repaired_bytes += shard.repaired_bytes
            summary.duplicates_removed += shard.duplicates_removed
    finally:
        worker.close()
    summary.manifest = write_manifest(out, options, generate, judge, tasks)
    summary.seconds = time.perf_counter() - start
    return summary


def write_manifest(out: Path, options: JudgeOptions, generate: StageManifest, judge: Judge,
                   tasks: list[JudgeTask]) -> StageManifest:
    shards = durable.complete_refs(out, "judgements")
    rejects = durable.complete_refs(out, "rejects")
    counts: Counter = Counter()
    for ref in shards:
        for judgement in iter_records(out / ref.name, Judgement):
            counts["judgements"] += 1
            counts[f"judgements/{judgement.kind}"] += 1
    for ref in rejects:
        for rejection in iter_records(out / ref.name, Rejection):
            counts["rejected"] += 1
            counts[f"rejected/{rejection.reason}"] += 1
    judged = {f"traces/{PurePosixPath(ref.name).parts[1]}/{PurePosixPath(ref.name).name}"
              for ref in shards}
    manifest = StageManifest(
        stage="judge", created_at=datetime.now(UTC), image_root=tasks[0].image_root
        if tasks else None, inputs=[ref for ref in generate.shards if ref.name in judged],
        input_dir=str(options.traces_dir.resolve()), shards=shards, rejects=rejects,
        counts=dict(sorted(counts.items())),
        config={"judges": judge.identity(), "judge": judge.describe()})
    write_json_atomic(out / "manifest.json", manifest)
    return manifest
