"""Scoring one input shard into a cache entry: every trace joined with its sample, with
all per-trace and per-item signals and its MinHash signature.

An entry is named by the hash of what decides its content (the two input shards'
sha256, the judge's shards and identity when judgements are given, the scorer versions,
the MinHash settings), is built in a temp folder and
renamed into place when complete: a rerun skips finished entries (resume per shard),
and any policy reuses them (no re-scoring).

Entry files::

    rows.jsonl     ScoredTrace records without verdict (sample with its pooled image,
                   trace, signals), in (sample position, teacher, k, trace key) order
    select.jsonl   what selection reads per row: ids, category, image hash, question,
                   signals (small, so selection never parses whole traces)
    keys.npy       per row: sample position, exact text hash, image salt, signature
    rejects.jsonl  input lines that could not be scored (--on-error skip)
    entry.json     a summary: counts, length statistics, teachers, prompts, labels per
                   source, and the items that got no label (with why)
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.core.errors import InputError
from distill.core.shards import (
    DuplicateKeyError,
    ShardWriter,
    fsync_dir,
    iter_lines,
    iter_unique,
    parse_line,
    write_json_atomic,
)
from distill.filter.consensus import ItemAnswer, score_item
from distill.filter.inputs import ShardPair
from distill.filter.judgements import JudgeShard, JudgeView
from distill.filter.minhash import MinHasher
from distill.filter.scorers import ScorerSuite
from distill.filter.store import DatasetStore
from distill.schemas import Rejection, Sample, Trace, content_hash

CACHE_FORMAT = "1"
JSON_COMPACT = {"separators": (",", ":"), "ensure_ascii": False}
UNLABELED_EXAMPLES = 20  # items without a label listed by id in a shard's summary


def keys_dtype(num_perm: int) -> np.dtype:
    return np.dtype([("pos", "<i8"), ("text_hash", "<u8"), ("salt", "<u8"),
                     ("sig", "<u4", (num_perm,))])


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write an array and fsync it (cache entries and versions are renamed into place after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())


def image_salt(sha256: str) -> int:
    return int(sha256[:16], 16)


def dedup_text(question: str, reasoning: str, final_answer: str) -> str:
    """What exact and near dedup compare: question, reasoning and final answer."""
    return f"{question}\n{reasoning}\n{final_answer}"


@dataclass(frozen=True)
class ScoreTask:
    """Everything one shard's scoring needs; plain data, so it can travel to Ray."""

    pair: ShardPair
    store_root: Path
    image_root: Path | None
    key: str
    refusal_phrases: tuple[str, ...]
    num_perm: int
    shingle_words: int
    on_error: str  # "fail" | "skip"
    judge: JudgeShard | None = None

    @property
    def entry_dir(self) -> Path:
        return DatasetStore(self.store_root).cache_dir / self.key


def cache_key(pair: ShardPair, scorer_versions: dict[str, str], minhash: dict,
              judge: JudgeShard | None = None) -> str:
    identity = {"format": CACHE_FORMAT, "traces": pair.trace_ref.sha256,
                "samples": pair.sample_sha256, "scorers": scorer_versions, "minhash": minhash}
    if judge is not None:
        identity["judge"] = judge.cache_identity()
    return content_hash(identity)


def read_entry_summary(entry_dir: Path) -> dict | None:
    path = entry_dir / "entry.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


class ShardScorer:
    """The filter's shard worker for an executor (one per process or Ray actor): it keeps
    the scorer suites it built, so refusal phrases are compiled once per actor."""

    def __init__(self) -> None:
        self.suites: dict[tuple[str, ...], ScorerSuite] = {}

    def __call__(self, task: ScoreTask) -> dict:
        if task.refusal_phrases not in self.suites:
            self.suites[task.refusal_phrases] = ScorerSuite(task.refusal_phrases)
        return score_shard(task, self.suites[task.refusal_phrases])


def score_shard(task: ScoreTask, suite: ScorerSuite | None = None) -> dict:
    """Score one shard into its cache entry (or reuse a finished entry); its summary."""
    summary = read_entry_summary(task.entry_dir)
    if summary is not None:
        return {**summary, "reused": True}
    store = DatasetStore(task.store_root)
    tmp = task.entry_dir.with_name(f".tmp-{task.key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        summary = _score_into(task, store, tmp, suite or ScorerSuite(task.refusal_phrases))
        os.rename(tmp, task.entry_dir)
        fsync_dir(task.entry_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**summary, "reused": False}


@dataclass
class _Scored:
    pos: int
    trace: Trace
    sample_json: str
    sample: Sample
    signals: dict


def _score_into(task: ScoreTask, store: DatasetStore, tmp: Path, suite: ScorerSuite) -> dict:
    pair = task.pair
    samples: dict[str, tuple[int, Sample]] = {}
    for pos, (number, line, _) in enumerate(iter_unique(pair.sample_path, "id")):
        sample = parse_line(line, Sample, file=pair.sample_path, line=number)
        samples[sample.id] = (pos, sample)
    judged = JudgeView(task.judge)
    seen_keys: dict[str, int] = {}  # a trace key written twice is refused (or set aside)
    pooled: dict[str, tuple[Sample, str]] = {}
    touched: set[Path] = set()
    scored: list[_Scored] = []
    rejects: list[Rejection] = []
    for number, line in iter_lines(pair.trace_path):
        try:
            trace = parse_line(line, Trace, file=pair.trace_path, line=number)
            first = seen_keys.setdefault(trace.trace_key, number)
            if first != number:
                raise DuplicateKeyError(pair.trace_path, number, "trace_key", trace.trace_key,
                                        first)
            pos, sample = _sample_of(trace, samples, pair.trace_path, number)
        except InputError as error:
            if task.on_error == "fail":
                raise
            rejects.append(Rejection(stage="filter", key=error.location or pair.trace_ref.name,
                                     reason=error.reason, message=error.message,
                                     location=error.location, field=error.field,
                                     raw=Rejection.clip(line.rstrip("\n"))))
            continue
        if sample.id not in pooled:
            image, folder = store.add_image(sample.image, task.image_root)
            if folder is not None:
                touched.add(folder)
            pooled_sample = sample.model_copy(update={"image": image})
            pooled[sample.id] = (pooled_sample, pooled_sample.model_dump_json())
        pooled_sample, sample_json = pooled[sample.id]
        signals = suite.score_trace(trace, sample)
        signals.update(judged.trace_signals(trace.trace_key))
        scored.append(_Scored(pos, trace, sample_json, pooled_sample, signals))
    for folder in sorted(touched):
        fsync_dir(folder)
    _add_agreement(scored, judged)
    scored.sort(key=lambda s: (s.pos, s.trace.teacher_id, s.trace.k, s.trace.trace_key))
    _write_entry(task, tmp, scored, rejects)
    summary = _summary(task, scored, rejects)
    summary["labels"] = _labels(samples, scored)
    write_json_atomic(tmp / "entry.json", summary)
    return summary


def _sample_of(trace: Trace, samples: dict[str, tuple[int, Sample]], file: Path,
               line: int) -> tuple[int, Sample]:
    found = samples.get(trace.sample_id)
    if found is None:
        raise InputError(f"sample {trace.sample_id!r} is not in the matching sample shard",
                         file=file, line=line, field="sample_id", reason="unknown_sample")
    if found[1].content_hash() != trace.sample_hash:
        raise InputError("the sample changed since this trace was generated (sample_hash "
                         "differs)", file=file, line=line, field="sample_hash",
                         reason="sample_changed")
    return found


def _add_agreement(scored: list[_Scored], judged: JudgeView) -> None:
    items: dict[str, list[_Scored]] = defaultdict(list)
    for row in scored:
        items[row.trace.sample_id].append(row)
    for rows in items.values():
        answers = [ItemAnswer(r.trace.teacher_id, str(r.signals["answer_canonical"]),
                              r.signals["correctness"] == "correct",
                              judged.score(r.trace.trace_key)) for r in rows]
        sample = rows[0].sample
        signals = score_item(answers, sample, judged.judged_same(rows[0].trace.sample_hash))
        for row, item_signals in zip(rows, signals, strict=True):
            row.signals.update(item_signals)


def _labels(samples: dict[str, tuple[int, Sample]], scored: list[_Scored]) -> dict:
    """Items of the shard by label source, and the items left without a label and why:
    no trace at all (every teacher failed), no answer of the asked type, or a tie."""
    first: dict[str, _Scored] = {}
    answered: set[str] = set()
    for row in scored:
        first.setdefault(row.sample.id, row)
        if row.signals["answer_canonical"]:
            answered.add(row.sample.id)
    counts: Counter = Counter()
    unlabeled: Counter = Counter()
    examples: list[dict] = []
    for sample_id, (_, sample) in sorted(samples.items(), key=lambda kv: kv[1][0]):
        row = first.get(sample_id)
        source = "gold" if sample.has_gold else (
            str(row.signals["label_source"]) if row is not None else "none")
        counts[source] += 1
        if source != "none":
            continue
        why = "no_traces" if row is None else "no_answer" if sample_id not in answered \
            else "tie"
        unlabeled[why] += 1
        if len(examples) < UNLABELED_EXAMPLES:
            examples.append({"sample_id": sample_id, "why": why})
    return {"items": dict(counts), "unlabeled": dict(unlabeled), "examples": examples}


def _write_entry(task: ScoreTask, tmp: Path, scored: list[_Scored],
                 rejects: list[Rejection]) -> None:
    hasher = MinHasher(num_perm=task.num_perm, shingle_words=task.shingle_words)
    texts = [dedup_text(r.sample.question, r.trace.reasoning, r.trace.final_answer)
             for r in scored]
    signatures, text_hashes = hasher.signatures(texts)
    keys = np.zeros(len(scored), dtype=keys_dtype(task.num_perm))
    keys["pos"] = [r.pos for r in scored]
    keys["text_hash"] = text_hashes
    keys["salt"] = np.array([image_salt(r.sample.image.sha256) for r in scored], dtype=np.uint64)
    keys["sig"] = signatures
    save_npy(tmp / "keys.npy", keys)
    rows = ShardWriter(tmp / "rows.jsonl", flush_every=1 << 30, flush_seconds=math.inf)
    select = ShardWriter(tmp / "select.jsonl", flush_every=1 << 30, flush_seconds=math.inf)
    for row in scored:
        signals = json.dumps(row.signals, **JSON_COMPACT)
        rows.write_line('{"schema_version":1,"sample":' + row.sample_json + ',"trace":'
                        + row.trace.model_dump_json() + ',"signals":' + signals + "}")
        sample = row.sample
        select.write_line(json.dumps({
            "sample_id": sample.id, "split": sample.split, "category": sample.category,
            "image": sample.image.sha256, "question": sample.question,
            "choices": sample.choices, "teacher_id": row.trace.teacher_id, "k": row.trace.k,
            "trace_key": row.trace.trace_key, "prompt_id": row.trace.prompt_id,
            "prompt_hash": row.trace.prompt_hash, "signals": row.signals}, **JSON_COMPACT))
    rows.commit()
    select.commit()
    if rejects:
        writer = ShardWriter(tmp / "rejects.jsonl")
        for reject in rejects:
            writer.write(reject)
        writer.commit()


def _summary(task: ScoreTask, scored: list[_Scored], rejects: list[Rejection]) -> dict:
    lengths: dict[str, list[float]] = {}
    for row in scored:
        group = f"{row.sample.split}/{row.sample.category}"
        value = math.log1p(float(row.signals["length_tokens"]))
        stats = lengths.setdefault(group, [0.0, 0.0, 0.0])
        stats[0] += 1
        stats[1] += value
        stats[2] += value * value
    return {
        "key": task.key,
        "trace_shard": task.pair.trace_ref.name,
        "rows": len(scored),
        "rejected": len(rejects),
        "reject_reasons": dict(Counter(r.reason for r in rejects)),
        "length_stats": lengths,
        "teachers": sorted({r.trace.teacher_id for r in scored}),
        "prompts": {r.trace.prompt_id: r.trace.prompt_hash for r in scored},
    }
