"""Helpers for the generate tests: small ingest folders, teacher-set files, and readers
that return what a generate output folder holds."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from distill.core.shards import iter_records
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


def kill_after(process: subprocess.Popen, out: Path, target: int, extra_s: float) -> bool:
    """SIGKILL once ``target`` lines are on disk (plus a random sliver of time, so the
    kill lands anywhere: mid-write, mid-flush, mid-rename). True if it was running."""
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if lines_written(out) >= target:
            time.sleep(extra_s)
            break
        time.sleep(0.005)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    return True
