"""RUN/manifest.json: the RunManifest of a training run, for every stage (stage 0 too).

It is written when a run starts (checkpoint "none"), beside every checkpoint, and at the
end (checkpoint "final", with the run's summary metrics); ``created_at`` stays the run's
start across checkpoints and resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from distill.core.shards import read_json_model, write_json_atomic
from distill.schemas import RunManifest
from distill.train.checkpoint import CheckpointState, TrainerState, save_checkpoint
from distill.train.config import TrainConfig
from distill.train.runtime import Runtime


@dataclass(frozen=True)
class RunIdentity:
    """What a run's manifest says about the run itself, the same at every checkpoint: its
    id, its config, what it trains on and what it starts from."""

    run_id: str
    config: TrainConfig
    dataset_version: str | None
    dataset_path: str | None
    parent_checkpoint: str | None = None
    recipe_hash: str | None = None


def write_run_manifest(run: Path, identity: RunIdentity, progress: TrainerState,
                       checkpoint: str, metrics: dict | None = None) -> RunManifest:
    created = datetime.now(UTC)
    previous = run / "manifest.json"
    if previous.exists():  # the run's start, kept across checkpoints and resumes
        created = read_json_model(previous, RunManifest).created_at
    config = identity.config
    manifest = RunManifest(
        run_id=identity.run_id, created_at=created, stage=config.stage,
        dataset_version=identity.dataset_version, dataset_path=identity.dataset_path,
        parent_checkpoint=identity.parent_checkpoint,
        config=config.model_dump(mode="json"), config_hash=config.hash(),
        recipe_hash=identity.recipe_hash,
        steps=progress.step, examples_seen=progress.examples_seen,
        final_loss=progress.last_loss, checkpoint_path=checkpoint,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
    )
    write_json_atomic(run / "manifest.json", manifest)
    return manifest


def save_run_checkpoint(run: Path, state: CheckpointState, runtime: Runtime,
                        identity: RunIdentity) -> Path:
    """The checkpoint part of a run: RUN/checkpoint-NNNNNN, then the manifest naming it."""
    path = save_checkpoint(run, state, runtime, keep=identity.config.keep_checkpoints)
    if runtime.is_main:
        write_run_manifest(run, identity, state.progress, path.name)
    return path
