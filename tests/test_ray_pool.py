"""The core's actor pool on a local Ray with two (logical) GPUs: GPUs per actor, and a
placement group of one-GPU bundles per actor for tensor parallelism."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill.core.executors import RayOptions, map_shards
from tests.helpers.ray_workers import PlacementProbe

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_gpu_ray():
    paths = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": paths}})
    yield
    ray.shutdown()


def test_each_actor_gets_its_own_gpu_and_keeps_its_worker(two_gpu_ray, monkeypatch):
    # Ray Data hands shards to whichever actor is up: on a loaded machine the first actor
    # could serve all six before the second starts. Waiting for the whole pool makes both
    # serve, so where each actor was placed is what this test sees.
    import ray.data

    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 120)
    results = list(map_shards(PlacementProbe, list(range(6)), executor="ray",
                              ray=RayOptions(num_cpus=0.5, num_gpus=1, actors=2)))
    assert [r["task"] for r in results] == list(range(6))  # in task order
    by_actor = {r["pid"]: r["gpus"] for r in results}
    assert len(by_actor) == 2  # two actors served six shards: one worker each, reused
    assert sorted(g for gpus in by_actor.values() for g in gpus) == ["0", "1"]


def test_tensor_parallel_actors_get_a_placement_group_of_gpu_bundles(two_gpu_ray):
    from ray.util import placement_group_table

    options = RayOptions(num_cpus=0.5, tensor_parallel=2, actors=1)
    [result, *_] = list(map_shards(PlacementProbe, [0, 1], executor="ray", ray=options))
    assert result["bundles"] == [{"GPU": 1.0, "CPU": 0.5}] * 2
    # The pool's groups are gone when it is done: a second pool gets the same GPUs.
    assert {g["state"] for g in placement_group_table().values()} == {"REMOVED"}
    [again, *_] = list(map_shards(PlacementProbe, [0], executor="ray", ray=options))
    assert again["bundles"] == result["bundles"]
