"""The generation cache: raw outputs stored by (model, generation config) and by item.

Layout: ``CACHE/<model_key>/part-NNNNN.jsonl`` holds one ``CachedGeneration`` a line, and
``CACHE/<model_key>/key.json`` says what the key stands for. An item is looked up by the
hash of what the model *sees* (image bytes, question, choices, answer type, category), so
a re-run generates only for new or changed items, and a corrected gold answer is re-judged
without generating again. Scores are never cached, only raw outputs: an improved answer
extractor applies to old outputs too.

Every run appends to a new shard through ``ShardWriter`` (fsynced every chunk), so an
interrupted eval keeps what it generated: its ``.partial`` shard is repaired and reused by
the next run. The core's single-writer guard (``CACHE/<model_key>/.lock``) keeps two
evals of the same key from writing at once: the second exits naming the first, or waits.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from distill.core.locks import lock_path_for, single_writer
from distill.core.shards import (
    PARTIAL_SUFFIX,
    ShardWriter,
    dedupe_lines,
    iter_unique,
    parse_line,
    repair_partial,
    shard_name,
    write_json_atomic,
)
from distill.schemas import Sample, content_hash


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("DISTILL_EVAL_CACHE", Path(base) / "distill" / "eval"))


def input_hash(sample: Sample) -> str:
    """What the model is shown (the gold answer is not): the cache key of one item."""
    return content_hash({"image": sample.image.sha256, "question": sample.question,
                         "choices": sample.choices, "answer_type": sample.answer_type,
                         "category": sample.category})


class CachedGeneration(BaseModel):
    """One stored raw output (internal to the eval cache, not a cross-stage record)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    input_hash: str
    sample_id: str
    text: str
    output_tokens: int = Field(ge=0)
    latency_s: float = Field(ge=0.0)
    finish_reason: str


class GenerationCache:
    """Raw outputs of one (model, generation config) key; use as a context manager."""

    def __init__(self, root: Path, key: str, description: dict[str, JsonValue], *,
                 wait: bool = False) -> None:
        self.folder = root / key
        self.description = description
        self.wait = wait
        self._lock: ExitStack | None = None
        self._writer: ShardWriter | None = None
        self.entries: dict[str, CachedGeneration] = {}

    def __enter__(self) -> GenerationCache:
        self.folder.mkdir(parents=True, exist_ok=True)
        with ExitStack() as lock:
            lock.enter_context(single_writer(
                lock_path_for(self.folder), f"eval cache {self.folder} (the same model and "
                "generation config)", wait=self.wait))
            write_json_atomic(self.folder / "key.json", self.description)
            self._load()
            self._lock = lock.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._writer is not None:
                # Commit whatever was generated, also on error: it is complete and valid.
                self._writer.commit()
                self._writer = None
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _load(self) -> None:
        for shard in sorted(self.folder.glob("part-*.jsonl")):
            for number, line, _ in iter_unique(shard, "input_hash"):
                entry = parse_line(line, CachedGeneration, file=shard, line=number)
                self.entries[entry.input_hash] = entry
        partials = sorted(self.folder.glob(f"part-*.jsonl{PARTIAL_SUFFIX}"))
        for partial in partials:
            # Left by an interrupted run: cut a torn tail and any line written twice (two
            # evals before the cache was locked), then reopen and keep appending.
            repair_partial(partial)
            dedupe_lines(partial, "input_hash")
            final = partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX))
            writer = ShardWriter(final)
            for number, line in enumerate(writer.existing_lines(), start=1):
                entry = parse_line(line, CachedGeneration, file=partial, line=number)
                self.entries[entry.input_hash] = entry
            if self._writer is None:
                self._writer = writer
            else:
                writer.commit()

    def get(self, sample: Sample) -> CachedGeneration | None:
        return self.entries.get(input_hash(sample))

    def put(self, entry: CachedGeneration) -> None:
        if self._writer is None:
            index = len(list(self.folder.glob("part-*.jsonl")))
            while (self.folder / shard_name(index)).exists():
                index += 1
            self._writer = ShardWriter(self.folder / shard_name(index), flush_every=1 << 30,
                                       flush_seconds=float("inf"))
        self._writer.write(entry)
        self.entries[entry.input_hash] = entry

    def flush(self) -> None:
        """Make the outputs written so far durable (called after every chunk)."""
        if self._writer is not None:
            self._writer.flush()

