"""Score one model on one eval set in one mode: generate what is not cached, judge all.

The result's id is the content hash of (model fingerprint, eval set hash, generation
config, mode): the same id means the same question asked of the same model the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from distill.core.answers import read_output, verdict_of
from distill.core.evalsets import EvalSet, require_gold
from distill.core.predictors import (
    Generation,
    Mode,
    Predictor,
    PredictorOptions,
    chunked,
    load_predictor,
    model_identity,
    model_key,
)
from distill.core.progress import progress_bar
from distill.core.prompts import builtin_answer_format
from distill.evaluate.cache import CachedGeneration, GenerationCache, input_hash
from distill.evaluate.metrics import summarize
from distill.schemas import EvalItem, EvalResult, Sample, content_hash

DEFAULT_CHUNK = 64
LARGE_CHUNK = 2048


def preferred_chunk_size(predictor: Predictor) -> int:
    """Items per predict call: small chunks keep little work at risk; engines that batch
    best over everything (``default_batch_size = None``, e.g. vLLM) get large ones."""
    engine_cls = getattr(predictor, "engine_cls", None)
    if engine_cls is not None and engine_cls.default_batch_size is None:
        return LARGE_CHUNK
    return DEFAULT_CHUNK


@dataclass(frozen=True)
class EvalRun:
    result: EvalResult
    generated: int  # items the model was run on
    reused: int  # items taken from the cache


def result_id(predictor: Predictor, eval_set: EvalSet, mode: Mode) -> str:
    model = predictor.model_ref
    return content_hash({"model": model_identity(model),
                         "eval_set": eval_set.hash,
                         "generation": predictor.generation_config(mode), "mode": mode})


def evaluate(predictor: Predictor, eval_set: EvalSet, mode: Mode, *,
             cache_dir: Path | None, chunk_size: int = DEFAULT_CHUNK,
             wait: bool = False) -> EvalRun:
    """Run the model on the items the cache lacks (durably, chunk by chunk), then score."""
    require_gold(eval_set)
    generation = predictor.generation_config(mode)
    key = model_key(predictor.model_ref, generation)
    outputs: dict[str, CachedGeneration] = {}
    if cache_dir is None:
        generated = _generate(predictor, eval_set, mode, _distinct(eval_set.samples), outputs,
                              None, chunk_size)
    else:
        description = {"model": predictor.model_ref.model_dump(mode="json"),
                       "generation": generation}
        with GenerationCache(cache_dir, key, description, wait=wait) as cache:
            todo = []
            for sample in eval_set.samples:
                hit = cache.get(sample)
                if hit is None:
                    todo.append(sample)
                else:
                    outputs[hit.input_hash] = hit
            generated = _generate(predictor, eval_set, mode, _distinct(todo), outputs, cache,
                                  chunk_size)
    answer_format = builtin_answer_format(str(generation.get("prompt_id") or ""),
                                          str(generation.get("prompt_hash") or ""))
    items = [score(sample, outputs[input_hash(sample)], answer_format=answer_format)
             for sample in eval_set.samples]
    metrics, per_category = summarize(items)
    result = EvalResult(
        result_id=result_id(predictor, eval_set, mode), created_at=datetime.now(UTC),
        model=predictor.model_ref, eval_set=eval_set.spec, eval_set_hash=eval_set.hash,
        mode=mode, generation=generation, metrics=metrics, per_category=per_category,
        items=items,
    )
    return EvalRun(result=result, generated=generated, reused=len(items) - generated)


def evaluate_model(model_spec: str, options: PredictorOptions, eval_sets: Sequence[EvalSet],
                   modes: Sequence[Mode], *, cache_dir: Path | None,
                   chunk_size: int | None = None, threads: int | None = None,
                   wait: bool = False) -> Iterator[tuple[EvalSet, EvalRun]]:
    """Load a model once and score it on every eval set in every mode, yielding each run as
    it finishes (so a caller can write it before the next starts); the model is released at
    the end or when the caller stops early.

    ``threads`` caps torch's CPU threads (small batched decoding on a busy or small machine
    is often fastest on one). ``wait``: if another eval writes the same cache entry (same
    model and generation config), wait for it instead of stopping."""
    for eval_set in eval_sets:  # before any model is loaded
        require_gold(eval_set)
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    predictor = load_predictor(model_spec, options)
    try:
        for eval_set in eval_sets:
            for mode in modes:
                yield eval_set, evaluate(predictor, eval_set, mode, cache_dir=cache_dir,
                                         chunk_size=chunk_size or preferred_chunk_size(predictor),
                                         wait=wait)
    finally:
        predictor.close()


def _distinct(samples: Sequence[Sample]) -> list[Sample]:
    """One sample per input (image, question, options): two items that show the model the
    same thing (two draws of the same scans, in a training pool) are generated once, and
    the cache holds each input once (a second line of a key reads as two writers')."""
    seen: set[str] = set()
    distinct = []
    for sample in samples:
        key = input_hash(sample)
        if key not in seen:
            seen.add(key)
            distinct.append(sample)
    return distinct


def _generate(predictor: Predictor, eval_set: EvalSet, mode: Mode, todo: list[Sample],
              outputs: dict[str, CachedGeneration], cache: GenerationCache | None,
              chunk_size: int) -> int:
    if not todo:
        return 0
    label = f"eval {predictor.model_ref.name} {mode} on {eval_set.name}"
    with progress_bar(label, total=len(todo), unit="items") as bar:
        for chunk in chunked(todo, chunk_size):
            generations = predictor.predict(chunk, eval_set.image_root, mode)
            if len(generations) != len(chunk):
                raise RuntimeError(f"predictor returned {len(generations)} outputs for "
                                   f"{len(chunk)} samples")
            for sample, generation in zip(chunk, generations, strict=True):
                entry = _entry(sample, generation)
                outputs[entry.input_hash] = entry
                if cache is not None:
                    cache.put(entry)
            if cache is not None:
                cache.flush()
            bar.advance(len(chunk))
    return len(todo)


def _entry(sample: Sample, generation: Generation) -> CachedGeneration:
    return CachedGeneration(input_hash=input_hash(sample), sample_id=sample.id,
                            text=generation.text, output_tokens=generation.output_tokens,
                            latency_s=generation.latency_s,
                            finish_reason=generation.finish_reason)


def score(sample: Sample, output: CachedGeneration, *,
          answer_format: str | None = None) -> EvalItem:
    """Extract the answer from the raw output and judge it against the gold answer, with
    the judge generate and filter use (the prompt's ``answer_format`` read first, when
    known; an output cut at the token limit is unparseable)."""
    parsed = read_output(output.text, sample, answer_format=answer_format,
                         finish_reason=output.finish_reason)
    verdict = verdict_of(parsed, sample)
    return EvalItem(sample_id=sample.id, category=sample.category, gold=sample.answer,
                    raw_output=output.text, extracted=parsed.final_answer,
                    correctness=verdict.correctness, output_tokens=output.output_tokens,
                    latency_s=output.latency_s)
