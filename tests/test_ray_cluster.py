"""Losing a machine: a Ray cluster of a head and two worker nodes in this machine's
processes (``ray.cluster_utils.Cluster``, see ``testing/ray_cluster.py``). Generate
runs across the nodes on an actor pool (one actor per node, each loading its teacher
once); a worker node is removed while it is generating and a replacement joins; the same
command again gives exactly the traces of an uninterrupted run. Filter scores on the pool,
loses a node in its turn, and the same command again publishes the uninterrupted run's
dataset version id."""

from __future__ import annotations

import pytest

from testing.ray_cluster import PER_SHARD, SHARDS, K, lose_nodes

pytest.importorskip("ray.cluster_utils")
pytestmark = pytest.mark.slow  # ~1.5-2 min on 2 cores: its own step in .ci/run


def test_losing_a_node_mid_generate_and_mid_filter(tmp_path):
    run = lose_nodes(tmp_path)
    assert run.removed == ["generate", "filter"], "a node was not removed mid-run"
    assert not run.rejects and len(run.keys) == len(set(run.keys)) == SHARDS * PER_SHARD * K
    assert run.same_traces and not run.leftovers  # nothing lost, nothing twice
    # One load per actor (a restarted actor loads once more), never one per shard.
    assert run.engine_loads and set(run.engine_loads.values()) == {1}, run.engine_loads
    assert run.actors <= 3 < SHARDS  # 2 actors + 1 restart, for 6 shards
    assert run.version == run.local_version
    outcome = {True: "failed, rerun", False: "finished on a restarted actor"}
    print(f"\nray cluster: nodes removed mid-{' and mid-'.join(run.removed)} (first generate "
          f"{outcome[run.first_generate_failed]}, first filter "
          f"{outcome[run.first_filter_failed]}); "
          f"{len(run.keys)} traces, lost 0, duplicated 0, the uninterrupted run's traces; "
          f"engine loads {sum(run.engine_loads.values())} over {run.actors} actor(s) for "
          f"{SHARDS} shards; version {run.version[:12]} == uninterrupted; "
          f"{run.seconds:.0f} s")
