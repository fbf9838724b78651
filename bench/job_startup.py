"""What starting a training process costs: the fork server against spawn, in one sitting.

The demo trains its students one process a run, two at a time (distill.train.parallel).
A spawned process imports torch, transformers and the training loop before its first step;
a job forked by the fork server finds them imported. This bench trains the same N short
runs (the micro student, a few steps each, so start-up is most of a run) through
``train_side_by_side`` twice, once per start method, and prints the wall time of each and
their ratio. Start-up is fixed per job, so what it saves grows with the number of runs,
not with their length.

    python bench/job_startup.py [--jobs 6] [--processes 2]

Numbers: bench/RESULTS.md ("Job start-up").
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.train import parallel  # noqa: E402
from distill.train.config import TrainConfig  # noqa: E402
from testing.generate import make_ingest  # noqa: E402
from testing.train_fixtures import write_dataset_version  # noqa: E402

STEPS = 4


def digits_dataset(root: Path) -> Path:
    ingest = make_ingest(root / "ingest", {"train": 32, "test": 4})
    return write_dataset_version(ingest, root / "version")


def jobs(data: Path, folder: Path, count: int) -> list[parallel.TrainJob]:
    config = dict(stage="cot", model="test-micro", target="cot", llm="full", max_steps=STEPS,
                  batch_size=4, warmup_steps=1, save_every=1000, log_every=1, threads=1,
                  tensorboard=False)
    return [parallel.TrainJob(f"job{i}", TrainConfig(**config, seed=i), data, folder / f"job{i}")
            for i in range(count)]


def timed(method: str, data: Path, root: Path, count: int, processes: int) -> float:
    def context() -> multiprocessing.context.BaseContext:
        if method == "spawn":
            return multiprocessing.get_context("spawn")
        return original()

    original = parallel._job_context
    parallel._job_context = context
    try:
        start = time.perf_counter()
        parallel.train_side_by_side(jobs(data, root / method, count), processes)
        return time.perf_counter() - start
    finally:
        parallel._job_context = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = digits_dataset(root)
        spawned = timed("spawn", data, root, args.jobs, args.processes)
        forked = timed("forkserver", data, root, args.jobs, args.processes)
    print(f"{args.jobs} runs of {STEPS} steps, {args.processes} at a time:")
    print(f"  spawn        {spawned:6.1f} s  ({spawned / args.jobs:.1f} s a run)")
    print(f"  fork server  {forked:6.1f} s  ({forked / args.jobs:.1f} s a run, the server's "
          "own imports included)")
    print(f"  ratio        {spawned / forked:.2f}x")


if __name__ == "__main__":
    main()
