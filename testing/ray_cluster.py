"""The lost-machine scenario shared by tests/test_ray_cluster.py and bench/scale_out.py.

A ``ray.cluster_utils.Cluster`` in this machine's processes: a head (no CPUs: it only
hosts the driver) and two worker nodes. `distill generate` runs on an actor pool across
the worker nodes (one actor per node) against a loopback OpenAI server; once it has
asked ``kill_after`` requests a worker node is removed and a replacement joins; the same
command again completes. `distill filter --executor ray` then scores on the pool, loses a
node once its first shard is scored, and the same command again publishes. Everything is
compared with an uninterrupted run on the local executor.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distill.core.executors import init_ray
from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions
from distill.generate.runner import GenerateOptions, RunSummary, run_generate
from testing.generate import content_set, leftovers, make_ingest, read_outputs, write_teachers
from testing.openai_server import EngineServer

NODE = {"num_cpus": 2, "object_store_memory": 80 * 1024**2}
SHARDS, PER_SHARD, K = 6, 8, 2


@dataclass
class LostNodeRun:
    removed: list[str]  # stages that lost a node mid-run
    first_generate_failed: bool
    first_filter_failed: bool
    keys: list[str]
    rejects: int
    same_traces: bool
    leftovers: list[Path]
    engine_loads: dict[tuple[str, str], int]  # (actor, teacher) -> loads
    version: str
    local_version: str
    seconds: float

    @property
    def actors(self) -> int:
        return len({worker for worker, _ in self.engine_loads})


def _teachers(path: Path, base_url: str) -> Path:
    return write_teachers(path, {"remote": {
        "engine": "openai", "model": "digits-knn", "prompt": "cot", "k": K,
        "sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 128, "seed": 0},
        "options": {"base_url": base_url, "api_key_env": None, "max_concurrency": 2,
                    "timeout_s": 10.0}}})


def run_while(work: Callable[[], object], condition: Callable[[], bool],
              action: Callable[[], None]) -> tuple[object, bool]:
    """Run ``work`` in a thread; here (Ray adds nodes from the main thread only) do
    ``action`` once ``condition`` holds while it runs. Returns (its result, or the
    exception it ended with; whether the action landed mid-run)."""
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


def lose_nodes(root: Path, kill_after: int = 30) -> LostNodeRun:
    import ray
    from ray.cluster_utils import Cluster

    from distill.filter.pipeline import FilterOptions, run_filter
    from distill.filter.policy import load_policy

    start = time.perf_counter()
    samples_dir = make_ingest(root / "ingest", {"train": SHARDS * PER_SHARD},
                              shard_size=PER_SHARD)
    reader = BuiltinDigitsEngine("knn", BuiltinOptions())
    removed: list[str] = []
    previous_address = os.environ.get("RAY_ADDRESS")
    with EngineServer(reader, latency_s=0.05, max_lifetime_s=900) as server:
        teachers = _teachers(root / "t.yaml", server.base_url)
        run_generate(GenerateOptions(samples_dir, str(teachers), root / "reference"))
        expected = content_set(read_outputs(root / "reference")[0])
        asked_before = sum(len(a) for a in server.actions.values())
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": 80 * 1024**2, "include_dashboard": False})
        try:
            # The driver joins before the worker nodes exist, so it is attached to the
            # head's raylet and the worker nodes are free to go.
            os.environ["RAY_ADDRESS"] = cluster.address
            init_ray()
            victim = cluster.add_node(**NODE)
            cluster.add_node(**NODE)
            cluster.wait_for_nodes()
            gen = root / "gen"
            options = GenerateOptions(samples_dir, str(teachers), gen, executor="ray",
                                      ray_num_cpus=1.0, ray_actors=2)

            def lose_a_node() -> None:
                cluster.remove_node(victim, allow_graceful=False)
                removed.append("generate")
                cluster.add_node(**NODE)  # the replacement a cluster manager brings

            def asked() -> int:
                return sum(len(a) for a in server.actions.values()) - asked_before

            first, _ = run_while(lambda: run_generate(options),
                                 lambda: asked() >= kill_after, lose_a_node)
            again = run_generate(options)  # the same command again
            loads = dict(again.engine_loads)
            if isinstance(first, RunSummary):
                loads.update(first.engine_loads)
            traces, rejects = read_outputs(gen)

            local = run_filter(FilterOptions(traces=gen, store=root / "local",
                                             policy=load_policy()))
            store = root / "store"
            filter_options = FilterOptions(traces=gen, store=store, policy=load_policy(),
                                           executor="ray")

            def lose_another() -> None:
                cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
                removed.append("filter")

            def entries() -> int:
                folder = store / "cache" / "scored"
                return len([p for p in folder.glob("*") if not p.name.startswith(".")]) \
                    if folder.is_dir() else 0

            first_filter, _ = run_while(lambda: run_filter(filter_options),
                                        lambda: entries() >= 1, lose_another)
            distributed = run_filter(filter_options)  # the same command again
        finally:
            ray.shutdown()
            cluster.shutdown()
            if previous_address is None:
                os.environ.pop("RAY_ADDRESS", None)
            else:
                os.environ["RAY_ADDRESS"] = previous_address
    return LostNodeRun(
        removed=removed, first_generate_failed=isinstance(first, Exception),
        first_filter_failed=isinstance(first_filter, Exception),
        keys=[t.trace_key for t in traces], rejects=len(rejects),
        same_traces=content_set(traces) == expected, leftovers=leftovers(gen),
        engine_loads=loads, version=distributed.version, local_version=local.version,
        seconds=time.perf_counter() - start)
