"""Selection: a policy applied to one scored shard, in an order that does not depend on
how the input was written.

The steps, per trace, and the drop reason each one gives:

1. ``split``: the item's split is not one the policy takes;
2. ``rule:<signal>``: a rule of the policy does not hold (every failing rule is listed);
3. ``contaminated:<kind>``: the item matches an eval set item;
4. ``duplicate:exact`` / ``duplicate:near``: an earlier trace (this run or the parent
   version) has the same or nearly the same text (``distill.filter.dedup``);
5. ``per_item_cap``: the item already has ``max_traces`` better-ranked kept traces.

Traces are ranked inside a shard by (item position, teacher preference, k, trace key);
the same rank decides which copy of a duplicate survives and which traces the per-item
cap keeps, so the outcome is a pure function of the input's content and the policy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.core.errors import DistillError
from distill.filter.decontam import EvalIndex
from distill.filter.policy import Policy
from distill.filter.score import keys_dtype

STAGE_VERSIONS = {"length_outlier": "1", "decontamination": "1", "dedup": "1", "selection": "1"}


@dataclass(frozen=True)
class CacheEntry:
    """A finished scoring cache entry, opened for selection."""

    path: Path
    shard_name: str  # the input trace shard, relative to the generate folder
    summary: dict

    def select_rows(self) -> list[dict]:
        with open(self.path / "select.jsonl", encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]

    def keys(self, num_perm: int) -> np.ndarray:
        keys = np.load(self.path / "keys.npy")
        if keys.dtype != keys_dtype(num_perm):
            raise DistillError(f"{self.path} was scored with other MinHash settings; "
                               "delete it and run again")
        return keys

    def row_lines(self) -> list[str]:
        with open(self.path / "rows.jsonl", encoding="utf-8") as handle:
            return [line.rstrip("\n") for line in handle]

    @property
    def output_name(self) -> str:
        """Where this shard's scored records go in a version: scored/<split>/<file>."""
        return "scored/" + self.shard_name.removeprefix("traces/")


class LengthStats:
    """Mean and spread of log(1 + length_tokens) per split/category over the run's input."""

    def __init__(self, summaries: Sequence[dict]) -> None:
        totals: dict[str, list[float]] = {}
        for summary in summaries:
            for group, (n, s1, s2) in summary["length_stats"].items():
                acc = totals.setdefault(group, [0.0, 0.0, 0.0])
                acc[0] += n
                acc[1] += s1
                acc[2] += s2
        self.moments: dict[str, tuple[float, float]] = {}
        for group, (n, s1, s2) in totals.items():
            if n < 2:
                continue
            mean = s1 / n
            variance = max(0.0, (s2 - n * mean * mean) / (n - 1))
            self.moments[group] = (mean, math.sqrt(variance))

    def zscore(self, group: str, length_tokens: float) -> float:
        mean, std = self.moments.get(group, (0.0, 0.0))
        if std <= 1e-9:
            return 0.0
        return round((math.log1p(length_tokens) - mean) / std, 6)


@dataclass
class Decision:
    """Selection up to dedup for one shard; dedup and the per-item cap finish it."""

    rows: list[dict]
    keys: np.ndarray
    order: list[int]  # row indices in rank order
    derived: list[dict]  # run-level signals per row
    reasons: list[list[str]]  # drop reasons so far per row
    survivors: list[int]  # rows (in rank order) that go on to dedup


class Selector:
    def __init__(self, policy: Policy, lengths: LengthStats, eval_index: EvalIndex | None,
                 num_perm: int) -> None:
        self.policy = policy
        self.lengths = lengths
        self.eval_index = eval_index if eval_index is not None and not eval_index.empty else None
        self.num_perm = num_perm

    def rank_key(self, row: dict, pos: int) -> tuple:
        return (pos, self.policy.teacher_rank(row["teacher_id"]), row["k"], row["trace_key"])

    def decide(self, entry: CacheEntry) -> Decision:
        rows = entry.select_rows()
        keys = entry.keys(self.num_perm)
        positions = keys["pos"].tolist()
        order = sorted(range(len(rows)), key=lambda i: self.rank_key(rows[i], positions[i]))
        contamination = self._contamination(rows)
        derived, reasons = [], []
        splits = self.policy.splits
        for row in rows:
            group = f"{row['split']}/{row['category']}"
            signals = {
                "length_zscore": self.lengths.zscore(group, row["signals"]["length_tokens"]),
                "contamination": contamination.get(row["sample_id"], "none"),
            }
            derived.append(signals)
            row_reasons = [] if splits is None or row["split"] in splits else ["split"]
            merged = {**row["signals"], **signals}
            row_reasons += [f"rule:{name}" for name in self.policy.failed_rules(merged)]
            if signals["contamination"] != "none":
                row_reasons.append(f"contaminated:{signals['contamination']}")
            reasons.append(row_reasons)
        survivors = [i for i in order if not reasons[i]]
        return Decision(rows, keys, order, derived, reasons, survivors)

    def _contamination(self, rows: list[dict]) -> dict[str, str]:
        if self.eval_index is None:
            return {}
        items: dict[str, tuple[str, str, list[str] | None]] = {}
        for row in rows:
            items.setdefault(row["sample_id"], (row["image"], row["question"], row["choices"]))
        ids = list(items)
        return dict(zip(ids, self.eval_index.check([items[i] for i in ids]), strict=True))

    def apply_item_cap(self, decision: Decision, kept: list[int]) -> set[int]:
        """Rows (of ``kept``, in rank order) that the per-item cap drops."""
        cap = self.policy.per_item.max_traces
        if cap is None:
            return set()
        prefer = self.policy.per_item.prefer
        by_item: dict[int, list[int]] = {}
        positions = decision.keys["pos"]
        for index in kept:
            by_item.setdefault(int(positions[index]), []).append(index)
        dropped: set[int] = set()
        for indices in by_item.values():
            if len(indices) <= cap:
                continue
            ranked = sorted(indices, key=lambda i: self._cap_key(decision.rows[i], prefer))
            dropped.update(ranked[cap:])
        return dropped

    def _cap_key(self, row: dict, prefer: str) -> tuple:
        length = row["signals"]["length_tokens"]
        secondary = {"first": 0, "shortest": length, "longest": -length}[prefer]
        return (self.policy.teacher_rank(row["teacher_id"]), secondary, row["k"],
                row["trace_key"])
