"""Crash and restart: SIGKILL `distill filter` at random points, run it again, and get the
very version an uninterrupted run publishes; nothing half-written ever looks complete."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filter_fixtures import build_generate_dir, faulty_teachers

from distill.filter.store import DatasetStore, verify_version
from distill.shards import count_lines
from schemas import file_sha256

ROOT = Path(__file__).resolve().parents[1]


def filter_cmd(gen: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "distill", "filter", "--traces", str(gen), "--store",
            str(store)]


def run(gen: Path, store: Path) -> tuple[str, float]:
    start = time.monotonic()
    done = subprocess.run(filter_cmd(gen, store), cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "DISTILL_PROGRESS": "0"}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), time.monotonic() - start


def run_and_kill(gen: Path, store: Path, delay: float) -> bool:
    """Start filter, SIGKILL it after ``delay`` seconds; False if it finished first."""
    process = subprocess.Popen(filter_cmd(gen, store), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               env={**os.environ, "DISTILL_PROGRESS": "0"})
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def assert_nothing_half_written_looks_complete(store: DatasetStore) -> None:
    """Work in progress lives only under tmp/, in .tmp-* folders or *.partial files; every
    file with a final name is complete."""
    for version in store.versions_dir.iterdir() if store.versions_dir.is_dir() else ():
        assert verify_version(store, version.name) == [], version
    for entry in store.cache_dir.iterdir() if store.cache_dir.is_dir() else ():
        if entry.name.startswith(".tmp-"):
            continue
        summary = (entry / "entry.json").read_text()
        import json

        rows = json.loads(summary)["rows"]
        assert count_lines(entry / "rows.jsonl") == count_lines(entry / "select.jsonl") == rows
    for image in store.images_dir.glob("*/*") if store.images_dir.is_dir() else ():
        if not image.name.startswith("."):
            assert file_sha256(image) == image.stem, image
    stray = [p for p in store.root.rglob("*.partial")
             if store.tmp_dir not in p.parents and ".tmp-" not in str(p)]
    assert stray == []


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small shards, so that a kill often lands inside the scoring loop."""
    root = tmp_path_factory.mktemp("kill")
    _, gen = build_generate_dir(root, {"train": 120}, faulty_teachers(), shard_size=3)
    return gen


def test_sigkill_at_random_points_then_rerun_gives_the_same_version(generated: Path,
                                                                     tmp_path: Path) -> None:
    reference, duration = run(generated, tmp_path / "reference")
    killed = 0
    for seed in range(3):
        store = DatasetStore(tmp_path / f"store-{seed}")
        rng = random.Random(seed)
        # Interpreter start-up is about a third of a run; aim past it.
        if run_and_kill(generated, store.root, rng.uniform(0.35, 0.95) * duration):
            killed += 1
            assert_nothing_half_written_looks_complete(store)
        version, _ = run(generated, store.root)
        assert version == reference
        assert_nothing_half_written_looks_complete(store)
        assert not store.tmp_dir.exists()
    assert killed >= 2
