"""Small dataset versions for tests, benchmarks and sizing runs, built without the
generate/filter stages: real digits samples from an ingest folder, each with a correct
step-by-step rationale computed from the digit labels (the trace a perfect teacher writes).

The files have exactly the published layout (DatasetManifest + ScoredTrace shards), so
they exercise the same loader ``distill train`` uses on real dataset versions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from distill.core.digits import digits_of
from distill.core.shards import (
    ShardWriter,
    iter_records,
    read_json_model,
    shard_name,
    write_json_atomic,
)
from distill.schemas import (
    DatasetManifest,
    Sample,
    SamplingParams,
    ScoredTrace,
    StageManifest,
    Trace,
    content_hash,
    make_trace_key,
)

ORACLE_TEACHER = "oracle-digits"


def oracle_reasoning(sample: Sample) -> str:
    """A correct rationale for a digits sample, from the labels of its source scans."""
    digits = digits_of(sample)
    listed = ", ".join(map(str, digits[:-1])) + f" and {digits[-1]}"
    lines = [f"The digits are {listed}."]
    if sample.category in ("sum", "sum_is_even"):
        total = digits[0]
        for d in digits[1:]:
            lines.append(f"{total} + {d} = {total + d}.")
            total += d
        if sample.category == "sum_is_even":
            lines.append(f"{total} is {'even' if total % 2 == 0 else 'odd'}.")
    elif sample.category == "max_minus_min":
        hi, lo = max(digits), min(digits)
        lines.append(f"The largest is {hi} and the smallest is {lo}. {hi} - {lo} = {hi - lo}.")
    elif sample.category == "count_even":
        evens = [d for d in digits if d % 2 == 0]
        lines.append(f"The even digits are {', '.join(map(str, evens)) or 'none'}: "
                     f"{len(evens)} of them.")
    return "\n".join(lines)


def write_dataset_version(ingest_dir: Path, out_dir: Path, split: str = "train",
                          limit: int | None = None, shard_size: int = 1000,
                          reasoning_fn: Callable[[Sample], str] = oracle_reasoning) -> Path:
    """A dataset version folder with one kept trace per sample of ``split`` (by default the
    oracle rationale; benchmarks pass ``reasoning_fn`` to shape trace lengths)."""
    ingest = read_json_model(ingest_dir / "manifest.json", StageManifest)
    refs = [r for r in ingest.shards if r.name.startswith(f"samples/{split}/")]
    sampling = SamplingParams()
    prompt_hash = content_hash("oracle")
    shards, count, writer, index = [], 0, None, 0
    for ref in refs:
        for sample in iter_records(ingest_dir / ref.name, Sample):
            if limit is not None and count >= limit:
                break
            if writer is None:
                writer = ShardWriter(out_dir / "data" / shard_name(index))
            reasoning = reasoning_fn(sample)
            sample_hash = sample.content_hash()
            trace = Trace(
                trace_key=make_trace_key(sample_hash=sample_hash, teacher_id=ORACLE_TEACHER,
                                         model=ORACLE_TEACHER, prompt_hash=prompt_hash,
                                         sampling=sampling, k=0),
                sample_id=sample.id, sample_hash=sample_hash, teacher_id=ORACLE_TEACHER,
                engine="builtin", model=ORACLE_TEACHER, prompt_id="cot", prompt_hash=prompt_hash,
                sampling=sampling, k=0, raw_text=f"{reasoning}\nAnswer: {sample.answer}",
                reasoning=reasoning, final_answer=sample.answer, finish_reason="stop",
                latency_s=0.0)
            writer.write(ScoredTrace(sample=sample, trace=trace, signals={"correct": True},
                                     verdict="keep"))
            count += 1
            if count % shard_size == 0:
                shards.append(_commit(writer))
                writer, index = None, index + 1
    if writer is not None:
        shards.append(_commit(writer))
    image_root = Path(ingest_dir).resolve() / (ingest.image_root or ".")
    policy = {"keep": "oracle"}
    manifest = DatasetManifest(
        version="0" * 64, created_at=datetime.now(UTC),
        trace_dir=str(Path(ingest_dir).resolve()),
        image_root=str(image_root.resolve()), inputs=list(refs), policy=policy,
        policy_hash=content_hash(policy), scorer_versions={}, teachers=[ORACLE_TEACHER],
        counts={"keep": count}, shards=shards)
    # Named by its content, as distill filter names a version (readers recompute it).
    manifest = manifest.model_copy(update={"version": manifest.content_version()})
    write_json_atomic(out_dir / "manifest.json", manifest)
    return out_dir


def _commit(writer: ShardWriter):
    ref = writer.commit()
    return ref.model_copy(update={"name": f"data/{ref.name}"})
