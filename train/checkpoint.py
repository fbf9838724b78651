"""Checkpoints that let ``--resume`` continue the very same run.

``RUN/checkpoint-NNNNNN/`` holds the trainable weights (safetensors), the optimizer and
scheduler states, every RNG state (python, numpy, torch, CUDA; one file per process) and
the data position (step, epoch, batch in epoch), all without pickle (``distill.train.safe_state``).
A checkpoint is written into a hidden temp folder and renamed into place, so a kill at
any moment leaves either the old set of checkpoints or the new one, never a half-written
folder that looks complete.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distill.core.errors import DistillError
from distill.core.folders import replace_folder, sweep_leftovers
from distill.core.shards import fsync_dir
from distill.train.runtime import Runtime
from distill.train.safe_state import load_state, save_state

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{6,})$")
WEIGHTS = "trainable.safetensors"
STATE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where a run stands: the data position, what it has seen, its last loss, and the hash
    a resume must match (the same config and data)."""

    step: int
    epoch: int
    batch_in_epoch: int
    examples_seen: int
    tokens_seen: int
    outcome_hash: str
    last_loss: float | None = None

    @classmethod
    def start(cls, outcome_hash: str) -> TrainerState:
        return cls(0, 0, 0, 0, 0, outcome_hash)


@dataclass
class CheckpointState:
    """What a checkpoint saves and ``--resume`` restores: the trainable weights of
    ``model``, the optimizer and its schedule, every RNG (taken when saving), and where the
    run stands (``progress``, which the loop moves on after every step)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LRScheduler: its state_dict goes with the optimizer's
    progress: TrainerState
    fsdp: bool = False  # the model is sharded (FSDP): weights are gathered to save them


FINAL = "final"


def is_due(step: int, every: int, total: int) -> bool:
    """A checkpoint after ``step`` steps of ``total``: every ``every`` steps, except at the
    end (the final model is saved then)."""
    return step % every == 0 and step < total


def check_run_folder(run: Path, resume: bool) -> None:
    """One run per folder: a folder holding a run is continued with ``--resume`` only."""
    has_run = (run / "manifest.json").exists() or latest_checkpoint(run) is not None
    if has_run and not resume:
        raise DistillError(f"{run} already holds a run; pass --resume to continue it, or "
                           "choose another --out")


def is_finished(run: Path) -> bool:
    """A run is finished when its final model and its manifest are both in place: the
    final folder is renamed into place whole, and the manifest naming it comes after."""
    return (run / FINAL / "config.json").exists() and (run / "manifest.json").exists()


def save_final(run: Path, write: Callable[[Path], None]) -> Path:
    """Write the final model through ``write(folder)`` into a temp folder, make it durable,
    and rename it to RUN/final: a kill leaves the old final model or the new one, whole."""
    final, tmp = run / FINAL, run / f".{FINAL}.tmp"
    sweep_leftovers(final)
    shutil.rmtree(tmp, ignore_errors=True)
    with _discarded_on_failure(tmp, is_main=True):
        write(tmp)
        _fsync_tree(tmp)
        replace_folder(tmp, final)  # the old final goes only once the new one is in
    return final


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for directory in sorted({p.parent for p in folder.rglob("*")} | {folder}):
        fsync_dir(directory)


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / f"checkpoint-{step:06d}"


def list_checkpoints(run: Path) -> list[Path]:
    found = [p for p in run.glob("checkpoint-*") if p.is_dir() and CHECKPOINT_RE.match(p.name)
             and (p / STATE).exists()]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def latest_checkpoint(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def trainable_state(model: torch.nn.Module, fsdp: bool = False) -> dict[str, torch.Tensor]:
    """Trainable weights on the CPU (gathered from every process under FSDP; a collective)."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    full = full_model_state(model, fsdp)
    if full is None:
        return {}
    return {name: t.detach().to("cpu").contiguous() for name, t in full.items() if name in names}


def full_model_state(model: torch.nn.Module, fsdp: bool) -> dict[str, torch.Tensor] | None:
    """The whole state dict; under FSDP gathered to the main process (None elsewhere)."""
    if not fsdp:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    return state or None


def optimizer_state(model: torch.nn.Module, optimizer, fsdp: bool) -> dict:
    if not fsdp:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: Path, state: CheckpointState, runtime: Runtime, *, keep: int) -> Path:
    """RUN/checkpoint-NNNNNN for ``state.progress.step``, the oldest beyond ``keep`` removed.
    Every process writes its RNG state; the main process writes the rest and renames.

    (DDP keeps weights and optimizer states identical on every process.)
    """
    final = checkpoint_dir(run, state.progress.step)
    tmp = run / f".{final.name}.tmp"
    is_main = runtime.is_main
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    runtime.barrier()
    with _discarded_on_failure(tmp, is_main):
        save_state(rng_state(), tmp / f"rng-{runtime.rank}")
        # collectives under FSDP: every process calls them
        weights = trainable_state(state.model, state.fsdp)
        optim = optimizer_state(state.model, state.optimizer, state.fsdp)
        if is_main:
            save_file(weights, str(tmp / WEIGHTS))
            save_state({"optimizer": optim, "scheduler": state.scheduler.state_dict(),
                        "world_size": runtime.world_size, "fsdp": state.fsdp},
                       tmp / "optimizer")
        runtime.barrier()
        if is_main:
            (tmp / STATE).write_text(json.dumps(asdict(state.progress), indent=2) + "\n",
                                     encoding="utf-8")
            _fsync_tree(tmp)
            sweep_leftovers(final)
            replace_folder(tmp, final)
            for old in list_checkpoints(run)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        runtime.barrier()
    return final


@contextmanager
def _discarded_on_failure(tmp: Path, is_main: bool) -> Iterator[None]:
    """A full disk or a crash mid-write: the earlier checkpoints stay, the half goes."""
    try:
        yield
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(path: Path, state: CheckpointState, runtime: Runtime) -> TrainerState:
    """Restore ``state`` from the checkpoint at ``path``: its weights, optimizer, schedule,
    this process's RNGs and its progress (returned too). The checkpoint must have been
    written by the same run (``state.progress.outcome_hash``) on as many processes."""
    progress = TrainerState(**json.loads((path / STATE).read_text(encoding="utf-8")))
    if progress.outcome_hash != state.progress.outcome_hash:
        raise DistillError(
            f"{path} was written by a run with a different config or data; --resume only "
            "continues the same run (start a new --out, or restore the original config)")
    weights = load_file(str(path / WEIGHTS))
    params = dict(state.model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise DistillError(f"{path} lacks trainable weights {missing[:3]}; was it written by "
                           "a different stage?")
    blob = load_state(path / "optimizer")
    if blob["world_size"] != runtime.world_size or blob.get("fsdp", False) != state.fsdp:
        raise DistillError(f"{path} was written by {blob['world_size']} process(es)"
                           f"{' with FSDP' if blob.get('fsdp') else ''}; resume it the same way")
    if state.fsdp:
        _load_sharded(state, weights, blob["optimizer"])
    else:
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        state.optimizer.load_state_dict(blob["optimizer"])
    state.scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(load_state(path / f"rng-{runtime.rank}"))
    state.progress = progress
    return progress


def _load_sharded(state: CheckpointState, weights: dict, optimizer: dict) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(state.model, weights, options=options)
    set_optimizer_state_dict(state.model, state.optimizer, optimizer, options=options)
