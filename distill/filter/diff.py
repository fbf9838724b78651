"""`distill datasets diff A B`: which traces one version has that the other has not, and why.

A trace kept in A but not in B was *removed*; the reason is B's verdict on it (B's scored
records say which rule, duplicate or cap dropped it), or "not in B's input". Added
traces get A's reason the same way. Policies are compared key by key.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.core.formatting import plain
from distill.filter.store import DatasetStore
from distill.schemas import DatasetManifest

_TRACE_KEY = re.compile(r'"trace_key":"([0-9a-f]{64})"')


@dataclass
class VersionDiff:
    a: DatasetManifest
    b: DatasetManifest
    policy_changes: list[tuple[str, Any, Any]]
    added: Counter = field(default_factory=Counter)  # why A did not keep it -> traces
    removed: Counter = field(default_factory=Counter)  # why B did not keep it -> traces
    examples: dict[str, list[dict]] = field(default_factory=dict)
    unchanged: int = 0

    def to_dict(self) -> dict:
        return {
            "a": self.a.version, "b": self.b.version,
            "policy_changes": [{"key": k, "a": va, "b": vb} for k, va, vb in
                               self.policy_changes],
            "kept": {"a": self.a.counts.get("kept", 0), "b": self.b.counts.get("kept", 0)},
            "unchanged": self.unchanged,
            "added_total": sum(self.added.values()),
            "removed_total": sum(self.removed.values()),
            "added": dict(self.added.most_common()),
            "removed": dict(self.removed.most_common()),
            "examples": self.examples,
        }


def _kept_keys(store: DatasetStore, manifest: DatasetManifest) -> set[str]:
    keys = set()
    folder = store.version_dir(manifest.version)
    for ref in manifest.shards:
        with open(folder / ref.name, encoding="utf-8") as handle:
            for line in handle:
                match = _TRACE_KEY.search(line)
                if match:
                    keys.add(match.group(1))
    return keys


def _scored(store: DatasetStore, manifest: DatasetManifest) -> Iterator[dict]:
    folder = store.version_dir(manifest.version)
    for ref in manifest.scored_shards:
        with open(folder / ref.name, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def policy_changes(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    flat_a, flat_b = _flatten(a), _flatten(b)
    return [(key, flat_a.get(key), flat_b.get(key)) for key in sorted(set(flat_a) | set(flat_b))
            if flat_a.get(key) != flat_b.get(key) and key != "description"]


def diff_versions(store: DatasetStore, a: str, b: str, examples: int = 3) -> VersionDiff:
    """A and B: ids, prefixes or 'latest'; both are checked (name and every shard) first."""
    _, manifest_a = store.open(a, everything=True, images=False)
    _, manifest_b = store.open(b, everything=True, images=False)
    kept_a, kept_b = _kept_keys(store, manifest_a), _kept_keys(store, manifest_b)
    result = VersionDiff(manifest_a, manifest_b,
                         policy_changes(manifest_a.policy, manifest_b.policy),
                         unchanged=len(kept_a & kept_b))
    added, removed = kept_b - kept_a, kept_a - kept_b
    _explain(store, manifest_b, removed, result.removed, result.examples, "removed", examples,
             "not in B's input")
    _explain(store, manifest_a, added, result.added, result.examples, "added", examples,
             "not in A's input")
    return result


def _explain(store: DatasetStore, other: DatasetManifest, keys: set[str], counter: Counter,
             examples: dict[str, list[dict]], direction: str, limit: int,
             absent: str) -> None:
    """Why ``other`` did not keep each of ``keys``, from its scored records."""
    remaining = set(keys)
    for record in _scored(store, other):
        key = record["trace"]["trace_key"]
        if key not in remaining:
            continue
        remaining.discard(key)
        reason = record["reasons"][0] if record["reasons"] else "kept"
        counter[reason] += 1
        bucket = examples.setdefault(f"{direction}: {reason}", [])
        if len(bucket) < limit:
            bucket.append({"trace_key": key, "sample_id": record["sample"]["id"],
                           "teacher_id": record["trace"]["teacher_id"],
                           "reasons": record["reasons"],
                           "final_answer": record["trace"]["final_answer"]})
    if remaining:
        counter[absent] += len(remaining)
        examples.setdefault(f"{direction}: {absent}", []).extend(
            {"trace_key": key} for key in sorted(remaining)[:limit])


def format_diff(diff: VersionDiff) -> str:
    a, b = diff.a.version[:12], diff.b.version[:12]
    lines = [f"A = {a}  (policy {plain(diff.a.policy.get('name'), 'log')}, "
             f"kept {diff.a.counts.get('kept', 0):,})",
             f"B = {b}  (policy {plain(diff.b.policy.get('name'), 'log')}, "
             f"kept {diff.b.counts.get('kept', 0):,})", ""]
    if diff.policy_changes:
        lines.append("policy changes (A -> B):")
        lines += [f"  {key}: {_show(va)} -> {_show(vb)}" for key, va, vb in diff.policy_changes]
    else:
        lines.append("policies: identical")
    if diff.a.inputs != diff.b.inputs:
        lines.append("inputs: differ (see `distill datasets show`)")
    lines += ["", f"kept in both: {diff.unchanged:,}",
              f"removed (kept in A, not in B): {sum(diff.removed.values()):,}"]
    lines += [f"  {n:>8,}  {reason}  (B's verdict)" for reason, n in diff.removed.most_common()]
    lines.append(f"added (kept in B, not in A): {sum(diff.added.values()):,}")
    lines += [f"  {n:>8,}  {reason}  (A's verdict)" for reason, n in diff.added.most_common()]
    if diff.examples:
        lines += ["", "examples:"]
        for label, items in diff.examples.items():
            for item in items:
                lines.append(f"  {plain(label, 'log')}: {plain(item.get('sample_id', '?'), 'log')} "
                             f"{plain(item.get('teacher_id', ''), 'log')} {item['trace_key'][:12]}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    return "-" if value is None else json.dumps(value)


def write_diff_json(diff: VersionDiff, path: Path) -> None:
    path.write_text(json.dumps(diff.to_dict(), indent=2) + "\n", encoding="utf-8")
