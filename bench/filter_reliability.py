"""Crash and restart for `distill filter`: SIGKILL at random points, run again, compare.

For each seed: a fresh store; the filter is started and SIGKILLed after a random delay
(once, or twice in a row for odd seeds), the store is checked for anything half-written
that looks complete, then the same command runs to the end. Its version id must equal
an uninterrupted run's.

    python bench/filter_reliability.py            # 20 seeds, 20k traces in 40 shards
    python bench/filter_reliability.py --quick    # 3 seeds, 1.6k traces in 20 shards

The last line is the headline: ``ids equal: E/S``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.filter.store import DatasetStore, find_half_written  # noqa: E402
from testing.filter_data import (  # noqa: E402
    filter_command,
    realistic_traces,
    synthetic_ingest,
    write_generate_dir,
)

ENV = {**os.environ, "DISTILL_PROGRESS": "0"}


def complete(gen: Path, store: Path) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(filter_command(gen, store), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return done.stdout.strip(), time.perf_counter() - start


def kill_after(gen: Path, store: Path, delay: float) -> bool:
    process = subprocess.Popen(filter_command(gen, store), cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def phase(store: DatasetStore, shards: int) -> str:
    """Where the killed run was, judged from what it left."""
    if store.versions_dir.is_dir() and any(store.versions_dir.iterdir()):
        return "after publishing"
    done = len([p for p in store.cache_dir.iterdir() if not p.name.startswith(".tmp-")]) \
        if store.cache_dir.is_dir() else 0
    if done == 0:
        return "start-up / input checks"
    if done < shards:
        return f"scoring ({done}/{shards} shards done)"
    return "selection / dedup / publishing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, 1.6k traces")
    parser.add_argument("--seeds", type=int)
    args = parser.parse_args()
    seeds = args.seeds or (3 if args.quick else 20)
    items, shard_items = (200, 10) if args.quick else (2500, 63)
    workdir = Path(tempfile.mkdtemp(prefix="filter-kill-"))
    try:
        ingest = synthetic_ingest(workdir / "ingest", items, shard_size=shard_items)
        gen = write_generate_dir(workdir / "gen", ingest, realistic_traces())
        shards = len(list((gen / "traces" / "train").glob("*.jsonl")))
        reference, duration = complete(gen, workdir / "reference")
        print(f"input: {items * 8:,} traces in {shards} shards; uninterrupted run "
              f"{duration:.1f} s -> {reference[:16]}")
        print()
        print("| seed | kills at (s) | killed during | half-written files | rerun id equal |")
        print("|---:|---|---|---:|---|")
        killed = equal = 0
        for seed in range(seeds):
            rng = random.Random(seed)
            store = DatasetStore(workdir / f"store-{seed}")
            delays, phases, problems = [], [], 0
            for _ in range(1 + seed % 2):
                delay = rng.uniform(0.15, 1.0) * duration
                if kill_after(gen, store.root, delay):
                    killed += 1
                    delays.append(f"{delay:.1f}")
                    phases.append(phase(store, shards))
                    problems += len(find_half_written(store))
            version, _ = complete(gen, store.root)
            same = version == reference and not find_half_written(store) \
                and not store.tmp_dir.exists()
            equal += same
            print(f"| {seed} | {', '.join(delays) or '-'} | {'; '.join(phases) or 'finished'} "
                  f"| {problems} | {'yes' if same else 'NO'} |", flush=True)
            shutil.rmtree(store.root)
        print()
        print(f"runs killed: {killed}; reruns with the uninterrupted version id: "
              f"{equal}/{seeds}")
        print(f"ids equal: {equal}/{seeds}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
