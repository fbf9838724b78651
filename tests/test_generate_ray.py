"""`--executor ray`: the same shard worker on a real local Ray cluster (an actor pool with
fractional CPUs so it schedules on 2 cores) writes exactly what the local executor writes,
and each teacher's engine loads once per actor, not once per shard."""

from __future__ import annotations

import pytest

from distill.generate.runner import GenerateOptions, run_generate
from testing.generate import (
    builtin_teacher,
    content_set,
    leftovers,
    make_ingest,
    read_outputs,
    write_teachers,
)

ray = pytest.importorskip("ray")


def test_ray_executor_writes_what_the_local_executor_writes(tmp_path, monkeypatch):
    import ray.data

    # Shards go to whichever actor is up: wait for both, or on a loaded machine the first
    # could take all six and the count of loads per actor would not be seen.
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 120)
    samples_dir = make_ingest(tmp_path / "d", {"train": 32, "val": 16}, shard_size=8)
    teachers = write_teachers(tmp_path / "t.yaml", {"knn": builtin_teacher("knn", k=2),
                                                    "logreg": builtin_teacher("logreg", k=1)})
    local = tmp_path / "local"
    run_generate(GenerateOptions(samples_dir, str(teachers), local))
    on_ray = tmp_path / "ray"
    try:
        summary = run_generate(GenerateOptions(samples_dir, str(teachers), on_ray,
                                               executor="ray", ray_num_cpus=0.5, ray_actors=2))
    finally:
        ray.shutdown()
    assert summary.shards_done == 6 and summary.traces + summary.rejected == 48 * 3
    # Two actors for six shards: each loaded each teacher once.
    workers = {worker for worker, _ in summary.engine_loads}
    assert len(workers) == 2 and all("@" in worker for worker in workers)  # Ray node named
    assert summary.engine_loads == {(w, t): 1 for w in workers for t in ("knn", "logreg")}
    assert content_set(read_outputs(on_ray)[0]) == content_set(read_outputs(local)[0])
    assert (on_ray / "manifest.json").exists() and not leftovers(on_ray)
