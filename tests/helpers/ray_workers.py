"""Shard workers for the actor-pool tests: importable by Ray's worker processes."""

from __future__ import annotations

import os


class PlacementProbe:
    """Reports where its actor was placed: its GPUs and its placement group's bundles."""

    def __init__(self) -> None:
        import ray

        self.gpus = [str(g) for g in ray.get_gpu_ids()]
        group = ray.util.get_current_placement_group()
        self.bundles = [dict(b) for b in group.bundle_specs] if group is not None else []
        self.pid = os.getpid()

    def __call__(self, task: int) -> dict:
        return {"task": task, "pid": self.pid, "gpus": self.gpus, "bundles": self.bundles}
