"""kill -9 at random moments, then the same command again: the same traces, no loss, no
duplicates, every line valid, no temp file that looks complete."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from distill.core.shards import iter_records
from distill.generate.runner import GenerateOptions, run_generate
from distill.schemas import Rejection, Trace
from testing.generate import (
    builtin_teacher,
    content_set,
    generate_command,
    kill_after,
    leftovers,
    lines_written,
    make_ingest,
    read_outputs,
    write_teachers,
)

REPO = Path(__file__).resolve().parents[1]
SEEDS = [11, 22, 33]
KILLS_PER_SEED = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, set[str], int]:
    root = tmp_path_factory.mktemp("kill")
    samples_dir = make_ingest(root / "ingest", {"train": 30, "val": 10}, shard_size=20)
    # Small engine batches and a flush per record: plenty of moments to die mid-shard.
    teachers = write_teachers(root / "teachers.yaml", {
        "knn": {**builtin_teacher("knn", k=2), "batch_size": 3},
        "logreg": {**builtin_teacher("logreg", k=2), "batch_size": 3},
    })
    reference = root / "reference"
    run_generate(GenerateOptions(samples_dir, str(teachers), reference))
    traces, rejects = read_outputs(reference)
    return samples_dir, teachers, content_set(traces), len(traces) + len(rejects)


def _complete_files_are_valid(out: Path) -> None:
    """Whatever a kill left, a file under a final name parses completely."""
    for path in out.glob("traces/*/part-*.jsonl"):
        list(iter_records(path, Trace))
    for path in out.glob("rejects/*/part-*.jsonl"):
        list(iter_records(path, Rejection))


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_then_rerun_gives_the_uninterrupted_result(setup, tmp_path, seed):
    samples_dir, teachers, expected, expected_count = setup
    rng = random.Random(seed)
    out = tmp_path / "gen"
    env = {**os.environ, "DISTILL_PROGRESS": "0", "PYTHONPATH": str(REPO)}
    killed_mid_run = 0
    for _ in range(KILLS_PER_SEED):
        process = subprocess.Popen(generate_command(samples_dir, teachers, out), cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = lines_written(out)
        target = done + rng.randint(1, max(1, (expected_count - done) // 2))
        killed_mid_run += kill_after(process, out, target, rng.uniform(0, 0.05))
        process.wait(timeout=60)
        _complete_files_are_valid(out)
    assert killed_mid_run >= 1, "no kill landed while the run was working"
    final = subprocess.run(generate_command(samples_dir, teachers, out), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    traces, rejects = read_outputs(out)
    keys = [t.trace_key for t in traces] + [r.key for r in rejects]
    assert len(keys) == len(set(keys)) == expected_count  # no loss, no duplicates
    assert content_set(traces) == expected  # timing aside, the same traces
    assert not leftovers(out)
    assert (out / "manifest.json").exists()
    print(f"\ngenerate kill seed {seed}: {killed_mid_run} SIGKILLs, {expected_count} outputs, "
          f"0 lost, 0 duplicated")
