"""Losing a machine: a Ray cluster of a head and two worker nodes in this machine's
processes (``ray.cluster_utils.Cluster``). Generate runs across the nodes on an actor pool
(one actor per node, each loading its teacher once); one worker node is removed while it
is generating; a replacement node joins; the same command again gives exactly the traces
of an uninterrupted run. Filter then scores on the pool, loses a node in its turn, and the
same command again publishes the uninterrupted run's dataset version id."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from distill.core.executors import init_ray
from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions
from distill.generate.runner import GenerateOptions, run_generate
from tests.helpers.generate import content_set, leftovers, make_ingest, read_outputs, write_teachers
from tests.helpers.openai_server import EngineServer

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = pytest.mark.slow  # ~1-2 min on 2 cores: its own step in .ci/run

NODE = {"num_cpus": 2, "object_store_memory": 80 * 1024**2}


def _teachers(path: Path, base_url: str) -> Path:
    return write_teachers(path, {"remote": {
        "engine": "openai", "model": "digits-knn", "prompt": "cot", "k": 2,
        "sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 128, "seed": 0},
        "options": {"base_url": base_url, "api_key_env": None, "max_concurrency": 2,
                    "timeout_s": 10.0}}})


def _run_while(work: Callable[[], object], condition: Callable[[], bool],
               action: Callable[[], None]) -> tuple[object, bool]:
    """Run ``work`` in a thread; here (Ray adds nodes from the main thread only) do
    ``action`` once ``condition`` holds while it runs. Returns (result or exception, whether
    the action landed mid-run)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except Exception as exc:  # a run may fail when its node goes; it is rerun
            box["result"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while thread.is_alive() and not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    landed = thread.is_alive()
    if landed:
        action()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the run did not end after losing a node"
    return box["result"], landed


def test_losing_a_node_mid_generate_and_mid_filter(tmp_path, monkeypatch):
    from distill.filter.pipeline import FilterOptions, run_filter
    from distill.filter.policy import load_policy

    samples_dir = make_ingest(tmp_path / "ingest", {"train": 48}, shard_size=8)
    reader = BuiltinDigitsEngine("knn", BuiltinOptions())
    removed: list[str] = []
    with EngineServer(reader, latency_s=0.05, max_lifetime_s=600) as server:
        teachers = _teachers(tmp_path / "t.yaml", server.base_url)
        reference = tmp_path / "reference"
        run_generate(GenerateOptions(samples_dir, str(teachers), reference))
        expected = content_set(read_outputs(reference)[0])
        asked_before = sum(len(a) for a in server.actions.values())

        cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": 80 * 1024**2, "include_dashboard": False})
        try:
            # The driver joins first, so that it is attached to the head's raylet: the
            # worker nodes are then free to go.
            monkeypatch.setenv("RAY_ADDRESS", cluster.address)
            init_ray()
            victims = [cluster.add_node(**NODE) for _ in range(2)]
            cluster.wait_for_nodes()
            options = GenerateOptions(samples_dir, str(teachers), tmp_path / "gen",
                                      executor="ray", ray_num_cpus=1.0, ray_actors=2)

            asked = lambda: sum(len(a) for a in server.actions.values()) - asked_before  # noqa: E731

            def lose_a_node() -> None:
                cluster.remove_node(victims[0], allow_graceful=False)
                removed.append("generate")
                cluster.add_node(**NODE)  # the replacement a cluster manager brings

            first, landed = _run_while(lambda: run_generate(options), lambda: asked() >= 30,
                                       lose_a_node)
            assert landed, "the node was not removed during the run"
            if isinstance(first, Exception):
                print(f"\nfirst run ended with {type(first).__name__}: {first}")
                first = None
            again = run_generate(options)  # the same command again
            traces, rejects = read_outputs(tmp_path / "gen")
            keys = [t.trace_key for t in traces]
            assert not rejects and len(keys) == len(set(keys)) == 96
            assert content_set(traces) == expected
            assert not leftovers(tmp_path / "gen")
            # Engine loads: one per actor (a restarted actor loads once more), never per shard.
            loads = (first.engine_loads if first else {}) | again.engine_loads
            assert loads and all(n == 1 for n in loads.values()), loads
            generate_actors = len({worker for worker, _ in loads})
            assert generate_actors <= 3 < 6  # 2 actors + 1 restart, for 6 shards

            local = run_filter(FilterOptions(traces=tmp_path / "gen", store=tmp_path / "local",
                                             policy=load_policy()))
            store = tmp_path / "store"
            filter_options = FilterOptions(traces=tmp_path / "gen", store=store,
                                           policy=load_policy(), executor="ray")

            def lose_another() -> None:
                cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
                removed.append("filter")

            def entries() -> int:
                folder = store / "cache" / "scored"
                return len([p for p in folder.glob("*") if not p.name.startswith(".")]) \
                    if folder.is_dir() else 0

            outcome, mid_filter = _run_while(lambda: run_filter(filter_options),
                                             lambda: entries() >= 1, lose_another)
            if isinstance(outcome, Exception):
                print(f"first filter ended with {type(outcome).__name__}: {outcome}")
            distributed = run_filter(filter_options)
            assert distributed.version == local.version
        finally:
            ray.shutdown()
            cluster.shutdown()
    print(f"\nray cluster: nodes removed during {removed} (filter kill landed mid-run: "
          f"{mid_filter}); 96 traces, lost 0, duplicated 0, same traces as the "
          f"uninterrupted run; engine loads {sum(loads.values())} over {generate_actors} "
          f"actor(s) for 6 shards; version {distributed.version[:12]} == uninterrupted")
