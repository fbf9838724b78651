"""The toolkit's own cost per trace in `distill generate`, with an engine that answers
instantly, and the time a restart needs to skip finished work.

What is timed is everything but the model: reading and validating Sample shards, trace
keys, prompt rendering, image reads with their sha256 check, answer parsing, Trace
validation, JSON encoding and durable writes (flush + fsync every 256 records, atomic
shard commits), and the manifest. Goal: > 5,000 traces/s on 2 cores, so the toolkit never
slows a GPU teacher. The baseline, measured in the same run, is the bare durable write of
the same trace lines (ShardWriter alone).

    python bench/generate_overhead.py           # 100k traces (6,250 samples x 2 teachers x k=8)
    python bench/generate_overhead.py --quick   # 20k traces, under 45 s

Last line: the headline, toolkit traces/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from distill.core.shards import ShardWriter, partial_path  # noqa: E402
from distill.generate.engines.base import (  # noqa: E402
    ChatRequest,
    Completion,
    Engine,
    RequestResults,
)
from distill.generate.runner import GenerateOptions, run_generate  # noqa: E402
from distill.ingest.pipeline import IngestOptions, ingest, open_source  # noqa: E402

CANNED = ("The image shows 3 digits: 4, 7 and 1.\nAdding them: 4 + 7 = 11, 11 + 1 = 12.\n"
          "Answer: 12")


class InstantBenchEngine(Engine):
    """BENCH STUB, not a teacher: echoes one canned rationale for every request, instantly,
    so that only the toolkit's own work is timed."""

    name: ClassVar[str] = "bench-instant"
    default_batch_size: ClassVar[int | None] = 1024

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[RequestResults]:
        for request in requests:
            yield RequestResults(request, [
                Completion(text=CANNED, finish_reason="stop", latency_s=0.0,
                           prompt_tokens=120, completion_tokens=30) for _ in request.ks])


def _teachers(path: Path, k: int) -> Path:
    spec = {"engine": "bench.generate_overhead:InstantBenchEngine", "prompt": "cot", "k": k,
            "sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 256, "seed": 0}}
    path.write_text(yaml.safe_dump({"teachers": {"a": {**spec, "model": "instant-a"},
                                                 "b": {**spec, "model": "instant-b"}}}))
    return path


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _write_baseline(out: Path, lines: list[str]) -> float:
    """The bare durable write of the same lines: the floor under any toolkit cost."""
    def write() -> None:
        writer = ShardWriter(out / "part-00000.jsonl")
        for line in lines:
            writer.write_line(line)
        writer.commit()
    return _timed(write)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k traces instead of 100k")
    args = parser.parse_args()
    samples, k = (1250, 8) if args.quick else (6250, 8)
    os.environ["DISTILL_PROGRESS"] = "0"
    root = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        rows, total = open_source("digits", None, counts={"train": samples}, seed=0)
        ingest_s, _ = _timed(lambda: ingest(rows, IngestOptions(out=root / "ingest",
                                                                 shard_size=1000),
                                            total=total))
        teachers = _teachers(root / "teachers.yaml", k)
        options = GenerateOptions(root / "ingest", str(teachers), root / "gen")
        gen_s, summary = _timed(lambda: run_generate(options))
        traces = summary.traces
        assert traces == samples * 2 * k and summary.rejected == 0, summary

        trace_files = sorted((root / "gen" / "traces").glob("*/part-*.jsonl"))
        lines = [line for p in trace_files for line in p.read_text().splitlines()]
        base_s = _write_baseline(root / "baseline", lines)

        skip_complete_s, again = _timed(lambda: run_generate(options))
        assert again.traces == 0 and again.shards_skipped == len(trace_files)
        # A crash just before every commit: all work in .partial files, keys to be read.
        for kind in ("traces", "rejects"):
            for path in (root / "gen" / kind).glob("*/part-*.jsonl"):
                os.replace(path, partial_path(path))
        skip_partial_s, again = _timed(lambda: run_generate(options))
        assert again.traces == 0 and again.already_done == traces

        # k=1: an image read, a prompt render and a key per trace, nothing amortized.
        options_k1 = GenerateOptions(root / "ingest", str(_teachers(root / "k1.yaml", 1)),
                                     root / "gen-k1")
        k1_s, k1 = _timed(lambda: run_generate(options_k1))
        assert k1.traces == samples * 2

        rate, base_rate = traces / gen_s, traces / base_s
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
              f"Python {platform.python_version()}")
        print(f"size: {samples:,} samples x 2 teachers x k={k} = {traces:,} traces "
              f"({'quick' if args.quick else 'full'}); ingest took {ingest_s:.1f} s")
        print(f"toolkit (instant engine): {gen_s:.2f} s = {rate:,.0f} traces/s "
              f"({1e6 / rate:.0f} us/trace)")
        print(f"toolkit, k=1 ({k1.traces:,} traces: an image read, a key, a parse and a "
              f"write each): {k1_s:.2f} s = {k1.traces / k1_s:,.0f} traces/s")
        print(f"baseline (durable write of the same lines only): {base_s:.2f} s = "
              f"{base_rate:,.0f} traces/s")
        print(f"restart, all {traces:,} traces in complete shards: {skip_complete_s:.2f} s")
        print(f"restart, all {traces:,} traces in partial shards (keys re-read): "
              f"{skip_partial_s:.2f} s")
        print(f"goal 5,000 traces/s: {'met' if rate > 5000 else 'NOT met'} "
              f"(x{rate / 5000:.2f})")
        print(f"traces/s: {rate:,.0f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
