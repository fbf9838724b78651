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
judges + the judge), and the shard files are written, repaired and resumed by the
shard-stage base generation uses too (``distill.generate.stage``; this module only says
what judging does to one trace): kill the run at any moment, run the same command
again, and nothing is lost or asked twice. A reply that is no valid judgement is
a permanent rejection with its reason (``distill.generate.judges``), never a crash.

One writer: a run holds ``OUT/.lock`` and each shard its own lock
(``distill.core.locks``), as generation does, so a second run on the same OUT stops (or
waits with ``--wait``) before it writes.

``distill filter --judgements OUT`` reads the result as signals; no policy ever asks the
judge again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path

from pydantic import ValidationError

from distill.core.answers import read_trace
from distill.core.errors import DistillError, InputError
from distill.core.folders import claim_output
from distill.core.shards import iter_records, iter_unique, parse_line, read_json_model
from distill.generate import durable
from distill.generate.engines.base import Completion, EngineFailure
from distill.generate.judges import BadReply, Judge, load_judge, parse_same, parse_score
from distill.generate.stage import (
    Ask,
    Progress,
    RunPlan,
    ShardStage,
    ShardTask,
    StageSummary,
    Status,
    locked_run,
)
from distill.schemas import (
    Judgement,
    Sample,
    ShardRef,
    StageManifest,
    Trace,
    make_judgement_key,
    same_answer_subject,
)
from distill.schemas.judgement import JudgementKind


@dataclass
class JudgeSummary(StageSummary):
    """A judge run's counters (``judged``: the judgements written)."""

    @property
    def judged(self) -> int:
        return self.written


@lru_cache(maxsize=4)
def _judge(path: str, mtime_ns: int) -> Judge:
    return load_judge(path)


def cached_judge(path: str) -> Judge:
    """A worker reads its judge once per file version, not once per shard."""
    return _judge(path, Path(path).stat().st_mtime_ns)


# --- what judging does to one trace ----------------------------------------------------------


@dataclass
class JudgeAsk(Ask):
    """One judgement to ask for: a trace's rubric, or whether two answers are the same."""

    kind: JudgementKind = "rubric"
    subject: str = ""
    trace: Trace | None = None
    answers: tuple[str, str] | None = None


class JudgeStage(ShardStage[JudgeAsk]):
    """Traces in, judgements out: a rubric score per trace, a verdict per answer pair."""

    name = "judge"
    records = "judgements"
    skip_checks_keys = True  # a complete shard must hold every judgement the judge asks

    def plan(self, task: ShardTask) -> list[JudgeAsk]:
        """Every judgement this shard needs, in trace order (pairs after the traces)."""
        judge = cached_judge(task.spec)
        samples = _samples(task)
        asks: list[JudgeAsk] = []
        answers: dict[str, dict[str, int]] = {}  # sample id -> canonical answer -> first line
        for number, line, _ in iter_unique(task.input_path, "trace_key"):
            trace = parse_line(line, Trace, file=task.input_path, line=number)
            sample = _sample_of(trace, samples, task, number)
            asks.append(_rubric_ask(judge, trace, sample, number))
            if judge.same_answer is not None and sample.answer_type == "text":
                canonical = read_trace(trace, sample).canonical  # as the filter reads it
                if canonical:
                    answers.setdefault(sample.id, {}).setdefault(canonical, number)
        for sample_id, found in answers.items():
            asks.extend(_pair_asks(judge, samples[sample_id], found))
        return asks

    def render(self, ask: JudgeAsk) -> tuple[str, str]:
        judge: Judge = ask.maker  # type: ignore[assignment]
        if ask.trace is not None:
            return judge.prompt.render(ask.sample, reasoning=ask.trace.reasoning,
                                       answer=ask.trace.final_answer)
        assert ask.answers is not None and judge.same_prompt is not None
        return judge.same_prompt.render(ask.sample, answer_a=ask.answers[0],
                                        answer_b=ask.answers[1])

    def record(self, ask: JudgeAsk, k: int, result: Completion) -> Judgement | EngineFailure:
        try:
            return _judgement(ask, result)
        except BadReply as bad:
            return EngineFailure(bad.reason, bad.message, raw=result.text)
        except ValidationError as exc:  # a judgement our own schema refuses: never a crash
            return EngineFailure("judge_invalid_record", str(exc).splitlines()[0],
                                 raw=result.text)

    def record_counts(self, out: Path, shards: list[ShardRef]) -> Counter:
        counts: Counter = Counter()
        for ref in shards:
            for judgement in iter_records(out / ref.name, Judgement):
                counts["judgements"] += 1
                counts[f"judgements/{judgement.kind}"] += 1
        return counts


def _samples(task: ShardTask) -> dict[str, Sample]:
    assert task.samples_path is not None
    samples = {}
    for number, line, _ in iter_unique(task.samples_path, "id"):
        sample = parse_line(line, Sample, file=task.samples_path, line=number)
        samples[sample.id] = sample
    return samples


def _sample_of(trace: Trace, samples: dict[str, Sample], task: ShardTask,
               line: int) -> Sample:
    sample = samples.get(trace.sample_id)
    if sample is None or sample.content_hash() != trace.sample_hash:
        raise InputError("this trace's sample is not in the matching sample shard (or "
                         "changed since generation)", file=task.input_path, line=line,
                         field="sample_id", reason="unknown_sample")
    return sample


def _rubric_ask(judge: Judge, trace: Trace, sample: Sample, line: int) -> JudgeAsk:
    key = make_judgement_key(kind="rubric", subject=trace.trace_key, judge=judge.rubric)
    return JudgeAsk(judge, sample, trace.sample_hash, line, {0: key}, key, trace.teacher_id,
                    kind="rubric", subject=trace.trace_key, trace=trace)


def _pair_asks(judge: Judge, sample: Sample, found: dict[str, int]) -> list[JudgeAsk]:
    """A same_answer ask for every pair of different canonical answers to one sample."""
    sample_hash = sample.content_hash()
    asks = []
    for a, b in combinations(sorted(found), 2):
        subject = same_answer_subject(sample_hash, a, b)
        key = make_judgement_key(kind="same_answer", subject=subject,
                                 judge=judge.same_answer)  # type: ignore[arg-type]
        asks.append(JudgeAsk(judge, sample, sample_hash, min(found[a], found[b]), {0: key},
                             key, None, kind="same_answer", subject=subject, answers=(a, b)))
    return asks


def _judgement(ask: JudgeAsk, result: Completion) -> Judgement:
    judge: Judge = ask.maker  # type: ignore[assignment]
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
        judgement_key=ask.keys[0], kind=ask.kind, subject=ask.subject, sample_id=ask.sample.id,
        sample_hash=ask.sample_hash, judge=identity, raw_text=result.text,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason, latency_s=max(0.0, result.latency_s), **fields)


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


def plan_tasks(options: JudgeOptions) -> tuple[RunPlan, Judge]:
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
    tasks = [ShardTask(
        split=ref.split, name=ref.file, input_path=str(traces_dir / ref.name),
        out=str(options.out.resolve()), records=JudgeStage.records,
        key_field="judgement_key", spec=str(Path(judge.source).resolve()),
        image_root=image_root, samples_path=str(input_dir / ref.beside("samples")),
        flush_every=options.flush_every, flush_seconds=options.flush_seconds,
        retry_rejected=options.retry_rejected)
        for ref in sorted(generate.shards, key=lambda r: r.name)
        if not options.splits or ref.split in options.splits]
    config = {"judges": judge.identity(), "judge": judge.describe()}
    return RunPlan(tasks, generate, str(traces_dir), image_root if tasks else None,
                   config), judge


def _check_plan(out: Path, traces_dir: Path, judge: Judge) -> None:
    """One output folder holds one judge's judgements of one traces folder."""
    durable.check_plan(out, {"traces_dir": str(traces_dir), "judge_hash": judge.hash,
                             "judge": judge.identity()}, [
        ("judge_hash", f"{out} holds judgements of a different judge (engine, model, prompt "
                       "or sampling); use a new --out for this one"),
        ("traces_dir", f"{out} judged another traces folder, not {traces_dir}; use a new "
                       "--out")])


def run_judge(options: JudgeOptions, *, bar_advance: Progress | None = None,
              on_total: Callable[[int], None] | None = None,
              status: Status | None = None) -> JudgeSummary:
    """Judge into ``options.out``, its only writer (another run there: exit, or wait)."""
    def run(out: Path) -> JudgeSummary:
        plan, _ = plan_tasks(options)
        if on_total:
            rows = {(ref.split, ref.file): ref.rows for ref in plan.upstream.shards}
            on_total(sum(rows[(t.split, t.name)] for t in plan.tasks))
        return JudgeStage().run(plan, JudgeSummary(out=out), progress=bar_advance,
                                status=status)

    out = claim_output(options.out, "judge", input_folders=[options.traces_dir])
    return locked_run(out, options.wait, run)
