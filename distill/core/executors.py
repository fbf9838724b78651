"""Run one function over many shards: in this process (default) or on Ray Data.

Stages are written as a pure-ish shard function ``fn(task) -> summary`` that reads its
input shard and durably writes its output shard itself; an executor only decides where
the calls run. Results (small summaries) come back in task order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from distill.core.errors import require_extra

T = TypeVar("T")
R = TypeVar("R")
Executor = Literal["local", "ray"]

# On a 2-core machine an actor/task pool at the default 1 CPU each can starve Ray's own
# scheduling and deadlock; fractional CPUs keep it moving.
DEFAULT_RAY_CPUS = 0.5


def map_shards(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    *,
    executor: Executor = "local",
    ray_num_cpus: float = DEFAULT_RAY_CPUS,
    ray_num_gpus: float = 0.0,
    ray_concurrency: int | None = None,
) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in task order."""
    if executor == "local":
        for task in tasks:
            yield fn(task)
        return
    if executor != "ray":
        raise ValueError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    yield from _map_on_ray(fn, list(tasks), ray_num_cpus, ray_num_gpus, ray_concurrency)


def init_ray() -> None:
    """Join a running cluster (RAY_ADDRESS) or start a quiet local one."""
    ray = require_extra("ray", "ray", "--executor ray")
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # Workers must import this package even when it is not installed (a checkout
        # run with PYTHONPATH or pytest's pythonpath): put its root on their path.
        root = str(Path(__file__).resolve().parents[2])
        paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})


def _map_on_ray(fn: Callable[[T], R], tasks: list[T], num_cpus: float, num_gpus: float,
                concurrency: int | None) -> Iterator[R]:
    init_ray()
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.verbose_progress = False

    def run_one(row: dict) -> dict:
        return {"index": row["index"], "result": fn(tasks[row["index"]])}

    dataset = ray.data.from_items([{"index": index} for index in range(len(tasks))],
                                  override_num_blocks=max(1, len(tasks)))
    options: dict = {"num_cpus": num_cpus}
    if num_gpus:
        options["num_gpus"] = num_gpus
    if concurrency:
        options["concurrency"] = concurrency
    rows = dataset.map(run_one, **options).take_all()
    for row in sorted(rows, key=lambda row: row["index"]):
        yield row["result"]
