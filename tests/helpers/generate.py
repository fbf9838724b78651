"""Helpers for the generate tests: small ingest folders, teacher-set files, and readers
that return what a generate output folder holds."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distill.ingest import IngestOptions, ingest, open_source
from distill.shards import iter_records
from schemas import Rejection, Trace


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
