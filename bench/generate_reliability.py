"""Reliability figures for `distill generate`: SIGKILL at random points then the same
command again, injected engine faults on the OpenAI path, and a short load run.

All traffic goes to a server on 127.0.0.1 that this script starts and stops; every loop
is bounded. Figures: runs killed, torn tails repaired, records lost / duplicated (must be
0), faults injected by kind, every request accounted for, the concurrency limit kept, and
the load run's throughput at 64 concurrent requests.

    python bench/generate_reliability.py           # 8 seeds x 3 kills, 960-request load
    python bench/generate_reliability.py --quick   # 2 seeds x 2 kills, 240-request load

Last line: records lost (the headline: it must be 0).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions  # noqa: E402
from distill.generate.runner import GenerateOptions, run_generate  # noqa: E402
from testing.generate import (  # noqa: E402
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
from testing.openai_server import EngineServer, faults  # noqa: E402


def _keys(out: Path) -> list[str]:
    traces, rejects = read_outputs(out)
    return [t.trace_key for t in traces] + [r.key for r in rejects]


def kills(root: Path, seeds: int, per_seed: int) -> dict[str, int]:
    samples_dir = make_ingest(root / "kill-ingest", {"train": 30, "val": 10}, shard_size=20)
    teachers = write_teachers(root / "kill.yaml", {
        "knn": {**builtin_teacher("knn", k=2), "batch_size": 3},
        "logreg": {**builtin_teacher("logreg", k=2), "batch_size": 3}})
    run_generate(GenerateOptions(samples_dir, str(teachers), root / "reference"))
    expected_keys = set(_keys(root / "reference"))
    expected = content_set(read_outputs(root / "reference")[0])
    env = {**os.environ, "DISTILL_PROGRESS": "0", "PYTHONPATH": str(REPO)}
    figures: Counter = Counter()
    for seed in range(seeds):
        rng = random.Random(seed)
        out = root / f"kill-{seed}"
        log = root / f"kill-{seed}.log"
        for _ in range(per_seed):
            with open(log, "a") as stderr:
                process = subprocess.Popen(generate_command(samples_dir, teachers, out),
                                           cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                           stderr=stderr)
                done = lines_written(out)
                target = done + rng.randint(1, max(1, (len(expected_keys) - done) // 2))
                figures["runs killed"] += kill_after(process, out, target,
                                                     rng.uniform(0, 0.05))
                process.wait(timeout=60)
        with open(log, "a") as stderr:
            subprocess.run(generate_command(samples_dir, teachers, out), cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=stderr, check=True, timeout=120)
        keys = _keys(out)
        figures["torn tails repaired"] += log.read_text().count("torn last line")
        figures["records lost"] += len(expected_keys - set(keys))
        figures["records duplicated"] += len(keys) - len(set(keys))
        figures["traces differing from an uninterrupted run"] += len(
            expected ^ content_set(read_outputs(out)[0]))
        figures["temp files left"] += len(leftovers(out))
    return dict(figures)


def _openai_teachers(path: Path, base_url: str, k: int, concurrency: int,
                     timeout_s: float) -> Path:
    return write_teachers(path, {"remote": {
        "engine": "openai", "model": "digits-knn", "prompt": "cot", "k": k,
        "sampling": {"temperature": 0.7, "max_tokens": 128, "seed": 0},
        "options": {"base_url": base_url, "api_key_env": None,
                    "max_concurrency": concurrency, "timeout_s": timeout_s,
                    "max_attempts": 4, "backoff_initial_s": 0.01, "backoff_max_s": 0.05}}})


def fault_run(root: Path, reader: BuiltinDigitsEngine, samples: int) -> dict[str, object]:
    samples_dir = make_ingest(root / "fault-ingest", {"val": samples})
    out = root / "fault-gen"
    with EngineServer(reader, faults=faults, hang_s=1.0) as server:
        teachers = _openai_teachers(root / "fault.yaml", server.base_url, 2, 4, 0.5)
        first = run_generate(GenerateOptions(samples_dir, str(teachers), out))
    injected = Counter(a for actions in server.actions.values() for a in actions if a != "ok")
    with EngineServer(reader) as healthy:  # the next run: transient rejections retried
        teachers = _openai_teachers(root / "fault.yaml", healthy.base_url, 2, 4, 0.5)
        run_generate(GenerateOptions(samples_dir, str(teachers), out))
    keys = _keys(out)
    requested = samples * 2
    return {"requests": requested, "faults injected": dict(sorted(injected.items())),
            "first run: traces / rejections": f"{first.traces} / {first.rejected} "
                                              f"{dict(first.rejections)}",
            "after the rerun: accounted for": f"{len(set(keys))}/{requested}",
            "records lost": requested - len(set(keys)),
            "records duplicated": len(keys) - len(set(keys)),
            "max in flight (limit 4)": server.max_in_flight}


def load_run(root: Path, reader: BuiltinDigitsEngine, samples: int) -> dict[str, object]:
    samples_dir = make_ingest(root / "load-ingest", {"val": samples})
    out = root / "load-gen"
    with EngineServer(reader, latency_s=0.05) as server:
        teachers = _openai_teachers(root / "load.yaml", server.base_url, 4, 64, 30.0)
        start = time.perf_counter()
        summary = run_generate(GenerateOptions(samples_dir, str(teachers), out))
        seconds = time.perf_counter() - start
    requested = samples * 4
    return {"requests": requested,
            "accounted for": f"{summary.traces + summary.rejected}/{requested}",
            "requests sent": sum(server.attempts.values()),
            "max in flight (limit 64)": server.max_in_flight,
            "throughput": f"{requested / seconds:.0f} requests/s ({seconds:.2f} s; server "
                          "adds 50 ms a request)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seeds, per_seed, fault_samples, load_samples = (2, 2, 30, 60) if args.quick else (
        8, 3, 60, 240)
    os.environ["DISTILL_PROGRESS"] = "0"
    root = Path(tempfile.mkdtemp(prefix="bench-reliability-"))
    try:
        reader = BuiltinDigitsEngine("knn", BuiltinOptions())
        kill_figures = kills(root, seeds, per_seed)
        print(f"SIGKILL then rerun ({seeds} seeds x {per_seed} kills):")
        for name, value in kill_figures.items():
            print(f"  {name}: {value}")
        faults_figures = fault_run(root, reader, fault_samples)
        print("engine faults on the OpenAI path (loopback server):")
        for name, value in faults_figures.items():
            print(f"  {name}: {value}")
        load_figures = load_run(root, reader, load_samples)
        print("load, 64 concurrent requests (loopback server):")
        for name, value in load_figures.items():
            print(f"  {name}: {value}")
        lost = kill_figures.get("records lost", 0) + faults_figures["records lost"]
        print(f"records lost: {lost}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
