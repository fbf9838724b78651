"""DatasetManifest: an immutable, content-addressed training dataset and its lineage."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import Field, JsonValue

from distill.schemas.base import NonEmptyStr, Record, Sha256Hex
from distill.schemas.hashing import content_hash
from distill.schemas.manifest import ShardRef


class DatasetManifest(Record):
    """A published dataset version.

    ``version`` is a content hash over the inputs, the policy, the scorer versions, the
    parent and the output shards; ``created_at`` is left out of it, so the same filter on
    the same input publishes the same version.
    """

    version: Sha256Hex
    parent: Sha256Hex | None = None
    created_at: datetime
    trace_dir: NonEmptyStr
    image_root: str | None = None
    inputs: list[ShardRef]
    policy: dict[str, JsonValue]
    policy_hash: Sha256Hex
    scorer_versions: dict[str, str]
    teachers: list[str]
    prompts: dict[str, str] = Field(default_factory=dict)
    eval_sets: list[str] = Field(default_factory=list)
    counts: dict[str, int]
    drop_reasons: dict[str, int] = Field(default_factory=dict)
    shards: list[ShardRef]
    scored_shards: list[ShardRef] = Field(default_factory=list)

    def content_version(self) -> str:
        """The id this manifest's content hashes to: what ``version`` must be. A reader
        recomputes it instead of trusting ``version`` (an edited shard whose new sha256 was
        written into the manifest no longer hashes to the name it was published under)."""
        return version_id(parent=self.parent, inputs=self.inputs, policy_hash=self.policy_hash,
                          scorer_versions=self.scorer_versions, eval_sets=self.eval_sets,
                          shards=self.shards, scored_shards=self.scored_shards)


def version_id(*, parent: str | None, inputs: list[ShardRef], policy_hash: str,
               scorer_versions: dict[str, str], eval_sets: list[str], shards: list[ShardRef],
               scored_shards: list[ShardRef]) -> str:
    """A version's name: the hash of everything that decides its content (not its time,
    nor where its inputs lie on disk)."""
    return content_hash({
        "parent": parent,
        "inputs": [ref.model_dump(mode="json") for ref in inputs],
        "policy": policy_hash,
        "scorers": scorer_versions,
        "eval_sets": sorted(eval_set_hash(label) for label in eval_sets),
        "shards": [ref.model_dump(mode="json") for ref in shards],
        "scored_shards": [ref.model_dump(mode="json") for ref in scored_shards],
    })


def eval_set_label(digest: str, path: Path | str) -> str:
    """How ``DatasetManifest.eval_sets`` names an eval set: its content hash, then where it
    was read from (the path is for people; the hash is what lineage and versions compare)."""
    return f"{digest} {path}"


def eval_set_hash(label: str) -> str:
    """The content hash of an ``eval_sets`` entry (see ``eval_set_label``)."""
    return label.split(" ", 1)[0]
