"""RUN/manifest.json: the RunManifest of a training run, for every stage (stage 0 too).

It is written when a run starts (checkpoint "none"), beside every checkpoint, and at the
end (checkpoint "final", with the run's summary metrics); ``created_at`` stays the run's
start across checkpoints and resumes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from distill.core.errors import DistillError
from distill.core.shards import read_json_model, write_json_atomic
from distill.schemas import RunManifest
from distill.train.checkpoint import (
    CheckpointState,
    RunMismatchError,
    TrainerState,
    is_finished,
    list_checkpoints,
    save_checkpoint,
)
from distill.train.config import SPEED_FIELDS, TrainConfig
from distill.train.runtime import Runtime

log = logging.getLogger(__name__)


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


def read_run_manifest(run: Path) -> RunManifest | None:
    """RUN/manifest.json, or None when it is missing or unreadable (said in the log: the
    run's checkpoints, which prove themselves, decide then, and the next write replaces
    it)."""
    path = run / "manifest.json"
    if not path.exists():
        return None
    try:
        return read_json_model(path, RunManifest)
    except DistillError as exc:
        log.warning("%s is unreadable; it is rewritten from the run's state (%s)", path, exc)
        return None


def check_same_run(run: Path, identity: RunIdentity) -> RunManifest | None:
    """The manifest of the run in RUN when that run is this one (the same config, dataset
    and start; speed settings may change), else RunMismatchError naming what differs.
    A folder with nothing to lose (no checkpoint, not finished: an attempt that died
    before its first checkpoint) is never another run: a new one starts over there."""
    manifest = read_run_manifest(run)
    if manifest is None or not (is_finished(run) or list_checkpoints(run)):
        return None
    differences = _differences(manifest, identity, run)
    keyed = identity.config.stage != "vision"  # a student's run id hashes its data too
    if differences or (keyed and manifest.run_id != identity.run_id):
        what = ", ".join(differences) or ("the dataset's content (its manifest changed), or "
                                            "--init spelled as another path")
        done = "finished run" if is_finished(run) else "run"
        raise RunMismatchError(
            f"{run} holds a {done} of another recipe ({what}); --resume only continues the "
            f"same run: choose another --out, or resume with the run's own settings")
    return manifest


def _differences(manifest: RunManifest, identity: RunIdentity, run: Path) -> list[str]:
    before, now = manifest.config, identity.config.model_dump(mode="json")
    found = [f"{key}: {before.get(key)!r} there, {now.get(key)!r} now"
             for key in sorted(before.keys() | now.keys())
             if key not in SPEED_FIELDS and before.get(key) != now.get(key)]
    if manifest.dataset_version != identity.dataset_version:
        found.append(f"dataset version {manifest.dataset_version} there, "
                     f"{identity.dataset_version} now")
    if _where(run, manifest.parent_checkpoint) != _where(run, identity.parent_checkpoint):
        found.append(f"--init {manifest.parent_checkpoint} there, {identity.parent_checkpoint} "
                     "now")
    return found


def _where(run: Path, path: str | None) -> Path | None:
    """A manifest's path (relative to the run's folder, or absolute in older runs)."""
    return None if path is None else Path(os.path.normpath(run.resolve() / path))


def write_run_manifest(run: Path, identity: RunIdentity, progress: TrainerState,
                       checkpoint: str, metrics: dict | None = None) -> RunManifest:
    created = datetime.now(UTC)
    previous = read_run_manifest(run)
    if previous is not None:  # the run's start, kept across checkpoints and resumes
        created = previous.created_at
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
