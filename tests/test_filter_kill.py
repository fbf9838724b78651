"""Crash and restart: SIGKILL `distill filter` at random points, run it again, and get the
very version an uninterrupted run publishes; nothing half-written ever looks complete."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from filter_fixtures import build_generate_dir, faulty_teachers

from distill.filter.store import DatasetStore, find_half_written
from testing.filter_data import filter_command

ROOT = Path(__file__).resolve().parents[1]


def run(gen: Path, store: Path) -> tuple[str, float]:
    start = time.monotonic()
    done = subprocess.run(filter_command(gen, store), cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "DISTILL_PROGRESS": "0"}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), time.monotonic() - start


def run_and_kill_when(gen: Path, store: DatasetStore, reached, timeout: float = 120) -> bool:
    """Start filter and SIGKILL it as soon as ``reached(store)`` holds (polled every few
    ms); False if the run finished first."""
    process = subprocess.Popen(filter_command(gen, store.root), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "DISTILL_PROGRESS": "0"})
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if reached(store):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.003)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def entries_done(store: DatasetStore) -> int:
    if not store.cache_dir.is_dir():
        return 0
    return sum(1 for p in store.cache_dir.iterdir() if not p.name.startswith(".tmp-"))


def staging_exists(store: DatasetStore) -> bool:
    return store.tmp_dir.is_dir() and any(p.name.startswith("version-")
                                          for p in store.tmp_dir.iterdir())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small shards, so that a kill often lands inside the scoring loop."""
    root = tmp_path_factory.mktemp("kill")
    _, gen = build_generate_dir(root, {"train": 120}, faulty_teachers(), shard_size=3)
    return gen


# One kill pattern in the default run; two more in CIs slow step (.ci/run), ~16 s each
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow),
                                  pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_at_random_points_then_rerun_gives_the_same_version(generated: Path,
                                                                     tmp_path: Path,
                                                                     seed: int) -> None:
    """Kills land in each phase: while scoring (after a random number of finished shards),
    during selection and publishing (once the staging folder exists), and at a random
    time; the rerun publishes the uninterrupted run's version."""
    reference, duration = run(generated, tmp_path / "reference")
    shards = len(list((generated / "traces" / "train").glob("*.jsonl")))
    rng = random.Random(seed)
    finished_shards = rng.randint(1, shards - 1)
    delay = rng.uniform(0.3, 0.9) * duration

    def after_delay() -> Callable[[DatasetStore], bool]:
        start = time.monotonic()
        return lambda store: time.monotonic() - start > delay

    targets: dict[str, Callable[[], Callable[[DatasetStore], bool]]] = {
        "scoring": lambda: lambda store: entries_done(store) >= finished_shards,
        "selection": lambda: staging_exists,
        "random time": after_delay,
    }
    killed = []
    for name, make_condition in targets.items():
        store = DatasetStore(tmp_path / name.replace(" ", "-"))
        if run_and_kill_when(generated, store, make_condition()):
            killed.append(name)
            assert find_half_written(store) == [], name
        version, _ = run(generated, store.root)
        assert version == reference, name
        assert find_half_written(store) == [] and not store.tmp_dir.exists()
    assert {"scoring", "selection"} <= set(killed)
    print(f"\nfilter kill seed {seed}: {len(killed)} SIGKILLs ({', '.join(killed)}), "
          f"every rerun published {reference}")


def test_half_written_files_are_detected(generated: Path, tmp_path: Path) -> None:
    """The check the crash test relies on does find what a bad crash would leave."""
    store = DatasetStore(tmp_path / "store")
    version, _ = run(generated, store.root)
    assert find_half_written(store) == []
    entry = next(p for p in store.cache_dir.iterdir())
    with open(entry / "rows.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{}\n")
    image = next(store.images_dir.glob("*/*"))
    image.unlink()  # a hard link to the ingest folder's file: replace it, never write into it
    image.write_bytes(b"not the image")
    (store.version_dir(version) / "data" / "part-00000.jsonl.partial").write_text("{")
    problems = "\n".join(find_half_written(store))
    assert "row counts differ" in problems and "do not match its name" in problems
    assert "a partial shard outside tmp/" in problems
