"""`--executor ray` scores shards on a real local Ray cluster and publishes the very
version the local executor does."""

from __future__ import annotations

from pathlib import Path

import pytest
from filter_fixtures import build_generate_dir, faulty_teachers

from distill.filter.pipeline import FilterOptions, run_filter
from distill.filter.policy import load_policy


def test_ray_executor_gives_the_local_version(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import ray

    _, gen = build_generate_dir(tmp_path, {"train": 12}, faulty_teachers(), shard_size=4)
    policy = load_policy()
    local = run_filter(FilterOptions(traces=gen, store=tmp_path / "local", policy=policy))
    try:
        distributed = run_filter(FilterOptions(traces=gen, store=tmp_path / "ray",
                                               policy=policy, executor="ray"))
    finally:
        ray.shutdown()
    assert distributed.scored_shards == 3
    assert distributed.version == local.version
