"""Run one worker over many shards: in this process (default) or on a Ray actor pool.

Stages are written as a shard worker ``worker(task) -> summary`` that reads its input
shard and durably writes its output shard itself; an executor only decides where the
calls run. Results (small summaries) come back in task order.

A streaming worker (``stream=True``) also has ``worker.map(tasks)``, which takes many
shards at once and yields ``(task, summary)`` as each one completes, in any order: the
generate and judge stages keep their engines fed across shard boundaries that way. Here
it gets every task; on Ray each actor gets one share of them per call (about an equal
share each, so there is no barrier between shards inside an actor, and a lost actor's
share is retried elsewhere, resuming from its shards' durable files).

A worker may hold expensive state (a teacher's engine: a 70B vLLM model takes minutes to
load), so executors take a *factory* of workers, not a function: ``make_worker()`` is
called once per process that runs shards -- once here on the local executor, once per
actor on Ray -- and the worker it returns handles every shard that process is given.
On Ray that state lives where Ray keeps state, in actors: a Ray Data ``map_batches`` over
a callable class (an actor pool), so whether an engine loads once or once per shard no
longer depends on how Ray reuses task worker processes. A worker with a ``close()`` is
closed when its process is done with it. The core stays generic: the stage passes its
factory in (a class is a factory), the core never imports a stage.

Placement: each actor asks for ``num_cpus`` and ``num_gpus``; with ``tensor_parallel`` >
1 each actor instead gets its own placement group of that many one-GPU bundles on one
node (STRICT_PACK), which the engine's own workers (vLLM's tensor-parallel ranks) are
scheduled into, following vLLM's Ray Data example (vllm-project/vllm,
examples/offline_inference/distributed.py @1628e182). Actors are spread across nodes,
so one lost machine takes down as few of them as possible; Ray Data restarts a lost
actor on a surviving node and retries its shard, which resumes from the shard's durable
partial files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from distill.core.errors import require_extra
from distill.core.paths import PACKAGE_PARENT

T = TypeVar("T")
R = TypeVar("R")
Executor = Literal["local", "ray"]
WorkerFactory = Callable[[], Callable[[T], R]]

# On a 2-core machine an actor/task pool at the default 1 CPU each can starve Ray's own
# scheduling and deadlock; fractional CPUs keep it moving.
DEFAULT_RAY_CPUS = 0.5


@dataclass(frozen=True)
class RayOptions:
    """Where shard workers run on Ray: per-actor resources and the pool's size."""

    num_cpus: float = DEFAULT_RAY_CPUS
    num_gpus: float = 0.0
    actors: int | None = None  # pool size; None: as many as the cluster's resources fit
    tensor_parallel: int = 1  # GPUs per actor, placed together on one node
    spread: bool = True  # one actor per node before two on one node


def map_shards(make_worker: WorkerFactory, tasks: Sequence[T], *,
               executor: Executor = "local", ray: RayOptions | None = None,
               progress: Callable[[int], None] | None = None,
               settled: Callable[[R], int] | None = None, stream: bool = False,
               status: Callable[[str], None] | None = None) -> Iterator[R]:
    """Yield the result of every task (one worker per process): in task order, or with
    ``stream`` in the order the worker's ``map`` completes them.

    ``progress`` is advanced as work settles: in this process the worker is handed it and
    advances it per output (``worker(task, progress)``); on Ray, where a shard runs
    elsewhere, it is advanced by ``settled(result)`` when each shard's result comes back.
    ``status`` (local, streaming) gets the worker's status lines."""
    if executor == "local":
        worker = make_worker()
        try:
            if stream:
                for _, result in worker.map(tasks, progress, status):  # type: ignore[attr-defined]
                    yield result
            else:
                for task in tasks:
                    yield worker(task, progress) if progress else worker(task)
        finally:
            _close(worker)
        return
    if executor != "ray":
        raise ValueError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    for result in _map_on_ray(make_worker, list(tasks), ray or RayOptions(), stream):
        if progress and settled:
            progress(settled(result))
        yield result


def init_ray() -> None:
    """Join a running cluster (RAY_ADDRESS) or start a quiet local one."""
    ray = require_extra("ray", "ray", "--executor ray")
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=_runtime_env())
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env=_runtime_env())


def _runtime_env() -> dict:
    """Workers must import this package even when it is not installed (a checkout run
    with PYTHONPATH or pytest's pythonpath): put its root on their path."""
    root = str(PACKAGE_PARENT)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}}


def _close(worker: object) -> None:
    close = getattr(worker, "close", None)
    if callable(close):
        close()


class ShardActor:
    """The callable class of the actor pool: one worker per actor, built when the actor
    starts, reused for every batch of shards the actor is given. The task list (small
    plain data) travels once per actor; rows carry task indices."""

    def __init__(self, make_worker: WorkerFactory, tasks: Sequence[Any],
                 stream: bool = False) -> None:
        self.tasks = tasks
        self.stream = stream
        self.worker = make_worker()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        indices = [int(index) for index in batch["index"]]
        if not self.stream:
            return {"index": indices, "result": [self.worker(self.tasks[i]) for i in indices]}
        by_task = {id(task): result for task, result
                   in self.worker.map([self.tasks[i] for i in indices])}
        return {"index": indices, "result": [by_task[id(self.tasks[i])] for i in indices]}

    def __del__(self) -> None:  # Ray Data deletes the callable when the actor shuts down
        worker = getattr(self, "worker", None)
        if worker is not None:
            self.worker = None
            _close(worker)


def pool_size(options: RayOptions, tasks: int) -> int:
    """Actors to start: what was asked, else what the cluster's CPUs and GPUs fit; never
    more than there are shards."""
    if options.actors:
        return max(1, min(options.actors, tasks))
    import ray

    resources = ray.cluster_resources()
    fits = int(resources.get("CPU", 1) // options.num_cpus) if options.num_cpus else tasks
    gpus = actor_gpus(options)
    if gpus:
        fits = min(fits, int(resources.get("GPU", 0) // gpus))
    return max(1, min(fits, tasks))


def actor_gpus(options: RayOptions) -> float:
    return float(options.tensor_parallel) if options.tensor_parallel > 1 else options.num_gpus


def actor_resources(options: RayOptions, groups: PlacementGroups | None = None
                    ) -> dict[str, Any]:
    """``map_batches`` resource arguments for one actor (see the module docstring); with
    tensor parallelism, ``groups`` hands each actor its placement group."""
    args: dict[str, Any] = {"num_cpus": options.num_cpus}
    if options.tensor_parallel > 1:
        if groups is None:
            raise ValueError("tensor_parallel > 1 needs the pool's placement groups")
        args["num_gpus"] = 0
        args["ray_remote_args_fn"] = groups.next_strategy
        return args
    if options.num_gpus:
        args["num_gpus"] = options.num_gpus
    if options.spread:
        args["ray_remote_args_fn"] = _spread
    return args


class PlacementGroups:
    """One placement group of ``tensor_parallel`` one-GPU bundles on one node
    (STRICT_PACK) per actor of the pool, made before the pool starts and removed when it
    is done. Ray Data asks for an actor's scheduling each time it starts one (a restarted
    actor too); handing out the pool's groups in turn, instead of making a group per ask,
    never leaves a group holding GPUs that no actor will use."""

    def __init__(self, count: int, options: RayOptions) -> None:
        import ray

        bundles = [{"GPU": 1.0, "CPU": options.num_cpus}] * options.tensor_parallel
        self.groups = [ray.util.placement_group(bundles, strategy="STRICT_PACK")
                       for _ in range(count)]
        self.handed = 0

    def next_strategy(self) -> dict[str, Any]:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = self.groups[self.handed % len(self.groups)]
        self.handed += 1
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            group, placement_group_capture_child_tasks=True)}

    def remove(self) -> None:
        import ray

        for group in self.groups:
            ray.util.remove_placement_group(group)


def _spread() -> dict[str, Any]:
    return {"scheduling_strategy": "SPREAD"}


def _map_on_ray(make_worker: WorkerFactory, tasks: list[T], options: RayOptions,
                stream: bool = False) -> Iterator[R]:
    if not tasks:
        return
    init_ray()
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.verbose_progress = False
    dataset = ray.data.from_items([{"index": index} for index in range(len(tasks))],
                                  override_num_blocks=len(tasks))
    size = pool_size(options, len(tasks))
    groups = PlacementGroups(size, options) if options.tensor_parallel > 1 else None
    # Streaming: each actor's call takes a share of the shards and feeds them through its
    # engines in one stream; one shard per call otherwise.
    per_call = -(-len(tasks) // size) if stream else 1
    try:
        results = dataset.map_batches(
            ShardActor, fn_constructor_kwargs={"make_worker": make_worker, "tasks": tasks,
                                               "stream": stream},
            batch_size=per_call, batch_format="default", concurrency=size,
            **actor_resources(options, groups),
        ).take_all()
    finally:
        if groups is not None:
            groups.remove()
    for row in sorted(results, key=lambda row: int(row["index"])):
        yield row["result"]
