"""Helpers for the generate tests: small ingest folders, teacher-set files, and readers
that return what a generate output folder holds."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import yaml

from distill.core.shards import iter_records
from distill.generate.engines.base import ChatRequest, Engine, RequestResults, Stream
from distill.generate.engines.builtin import BuiltinDigitsEngine
from distill.ingest.pipeline import IngestOptions, ingest, open_source
from distill.schemas import Rejection, Trace


def make_ingest(out: Path, counts: dict[str, int], shard_size: int = 1000,
                seed: int = 0) -> Path:
    rows, total = open_source("digits", None, counts=counts, seed=seed)
    ingest(rows, IngestOptions(out=out, shard_size=shard_size), total=total)
    return out


def write_teachers(path: Path, teachers: dict, routing: dict | None = None) -> Path:
    data = {"teachers": teachers}
    if routing is not None:
        data["routing"] = routing
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def builtin_teacher(model: str = "knn", k: int = 2, temperature: float = 0.7) -> dict:
    return {"engine": "builtin", "model": model, "prompt": "cot", "k": k,
            "sampling": {"temperature": temperature, "top_p": 1.0, "max_tokens": 256,
                         "seed": 0}}


def read_outputs(out: Path) -> tuple[list[Trace], list[Rejection]]:
    """Every trace and rejection in the *complete* shards of a generate folder."""
    traces = [t for p in sorted((out / "traces").glob("*/part-*.jsonl"))
              for t in iter_records(p, Trace)]
    rejects = [r for p in sorted((out / "rejects").glob("*/part-*.jsonl"))
               for r in iter_records(p, Rejection)]
    return traces, rejects


def content_set(traces: list[Trace]) -> set[str]:
    return {json.dumps(t.content_fields(), sort_keys=True) for t in traces}


def leftovers(out: Path) -> list[Path]:
    """Files that are not complete shards or manifests (temp files, partials)."""
    return [p for p in out.rglob("*") if p.is_file()
            and (p.name.endswith(".partial") or ".tmp" in p.name or p.name.endswith(".rewrite"))]


def generate_command(samples_dir: Path, teachers: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "distill", "generate", "--samples", str(samples_dir),
            "--teachers", str(teachers), "--out", str(out), "--flush-every", "1",
            "--flush-seconds", "0"]


def lines_written(out: Path) -> int:
    total = 0
    for path in out.glob("*/*/part-*"):
        with contextlib.suppress(FileNotFoundError):  # renamed under us
            total += path.read_bytes().count(b"\n")
    return total


def kill_after(process: subprocess.Popen, out: Path, target: int, extra_s: float,
               timeout_s: float = 60) -> bool:
    """SIGKILL once ``target`` lines are on disk (plus a random sliver of time, so the
    kill lands anywhere: mid-write, mid-flush, mid-rename). True if it was running."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        if lines_written(out) >= target:
            time.sleep(extra_s)
            break
        time.sleep(0.005)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    return True


class ShuffledEngine(BuiltinDigitsEngine):
    """The built-in digit readers behind a stream that hands results back out of order:
    each collect answers a random part of what is in flight (seeded), newest first, and
    keeps the rest in flight. So results of several open shards interleave, as they do
    from vLLM or a server; the texts are the built-in readers' own (per request, so the
    same whatever the order). ``max_held``: the most requests it ever held at once."""

    name: ClassVar[str] = "shuffled"

    def stream(self, batch_size: int | None = None) -> Stream:
        self.last_stream = ShuffledStream(self, batch_size or 8)
        return self.last_stream


class ShuffledStream(Stream):
    def __init__(self, engine: Engine, window: int, seed: int = 0) -> None:
        self.engine = engine
        self.window = window
        self.held: list[ChatRequest] = []
        self.rng = random.Random(seed)
        self.max_held = 0

    def submit(self, request: ChatRequest) -> None:
        self.held.append(request)
        self.max_held = max(self.max_held, len(self.held))
        assert len(self.held) <= self.window, "the feed overfilled the window"

    def collect(self, wait_s: float) -> list[RequestResults]:
        if not self.held:
            return []
        picked = self.rng.sample(self.held, self.rng.randint(1, len(self.held)))
        self.held = [r for r in self.held if all(r is not p for p in picked)]
        return list(reversed(list(self.engine.generate(picked))))
