"""Checkpoints that let ``--resume`` continue the very same run.

``RUN/checkpoint-NNNNNN/`` holds the trainable weights (safetensors), the optimizer and
scheduler states, every RNG state (python, numpy, torch, CUDA; one file per process) and
the data position (step, epoch, batch in epoch), all without pickle (``distill.train.safe_state``).
A checkpoint is written into a hidden temp folder and renamed into place, so a kill at
any moment leaves either the old set of checkpoints or the new one, never a half-written
folder that looks complete.

A checkpoint proves itself (``distill.train.sealed``): ``checkpoint.json``, written last,
records each file's size and hash (XXH3-128). ``--resume`` checks them, then the state's fields and
ranges (the step is the folder's, before the run's end; the optimizer and schedule stepped
as often; every trained weight there, in its shape), and resumes from the newest
checkpoint that holds up, saying which it skipped and why. When none does it refuses,
naming the files. A checkpoint of another config or dataset is refused outright: that is
a different run, not a damaged one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclasses_fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distill.core.errors import DistillError
from distill.core.folders import replace_folder, sweep_leftovers
from distill.core.shards import fsync_dir
from distill.core.text import parse_json
from distill.train.runtime import Runtime
from distill.train.safe_state import load_state, save_state
from distill.train.sealed import FolderDamagedError, read_seal, seal

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{6,})$")
WEIGHTS = "trainable.safetensors"
STATE = "trainer_state.json"
OPTIMIZER = "optimizer"  # optimizer.json + optimizer.safetensors (distill.train.safe_state)
RECORD = "checkpoint.json"  # the files' sizes and hashes, the step, the run; written last
RECORD_FORMAT = 1
FINAL_RECORD = ".files.json"  # the final model's files' sizes and hashes (RUN/final)


class CheckpointError(FolderDamagedError):
    """A checkpoint that does not hold up: its file, and what is wrong with it."""


class RunMismatchError(DistillError):
    """A run folder holds another run (another config, dataset or start): --resume only
    continues the same run."""


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

    @classmethod
    def read(cls, path: Path) -> TrainerState:
        """A checkpoint's ``trainer_state.json``, every field there with its type and range
        (CheckpointError otherwise)."""
        try:
            data = parse_json(path.read_bytes(), file=path)
        except (OSError, DistillError) as exc:
            raise CheckpointError(path, f"is not readable ({_reason(exc)})") from None
        if not isinstance(data, dict):
            raise CheckpointError(path, f"holds {type(data).__name__}, not the object of a "
                                        "trainer state")
        names = [f.name for f in dataclasses_fields(cls)]
        missing = [n for n in names if n not in data and n != "last_loss"]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise CheckpointError(path, f"lacks {missing}" if missing else
                                  f"holds unknown fields {unknown}")
        for name in names[:5]:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CheckpointError(path, f"field '{name}' is {value!r}, not a count (an "
                                            "integer >= 0)")
        loss = data.get("last_loss")
        if not isinstance(data["outcome_hash"], str) or not (
                loss is None or (isinstance(loss, int | float) and not isinstance(loss, bool)
                                 and math.isfinite(loss))):
            raise CheckpointError(path, "field 'outcome_hash' or 'last_loss' has the wrong "
                                        "type")
        return cls(**data)


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


SEED_RUN_RE = re.compile(r"^seed-\d+$")


def holds_run(run: Path) -> bool:
    """RUN holds a training run (started, at least): its manifest or a checkpoint."""
    return (run / "manifest.json").exists() or latest_checkpoint(run) is not None


def seed_runs(group: Path) -> list[str]:
    """The runs of a ``--seeds`` group in ``group`` (its ``seed-N`` folders holding one)."""
    if not group.is_dir():
        return []
    return sorted(p.name for p in group.iterdir()
                  if SEED_RUN_RE.match(p.name) and p.is_dir() and holds_run(p))


def check_run_folder(run: Path, resume: bool) -> None:
    """One run per folder: a folder holding a run is continued with ``--resume`` only, and a
    ``--seeds`` group's folder holds its seeds' runs, never one of its own."""
    seeds = seed_runs(run)
    if seeds:
        raise DistillError(f"{run} holds the runs of a --seeds group ({', '.join(seeds)}); "
                           f"train one of them with --out {run}/seed-N, or choose another "
                           f"--out")
    if holds_run(run) and not resume:
        raise DistillError(f"{run} already holds a run; pass --resume to continue it, or "
                           "choose another --out")


def is_finished(run: Path) -> bool:
    """A run is finished when its final model is in place, whole, and its manifest names
    it: the final folder is renamed into place whole, and the manifest naming it comes
    after (a kill between the two leaves a run that resumes from its last checkpoint).
    Whole: each file its record lists, of its size (sizes only: this is asked often; a
    final folder from before records counts by its config and weights). A final model cut short
    or half copied is no finished run: a resume trains its last steps again."""
    final = run / FINAL
    if not (final / "config.json").is_file() or not (final / "model.safetensors").is_file():
        return False
    if (final / FINAL_RECORD).exists():
        try:
            read_seal(final, FINAL_RECORD, [], hash_files=False)
        except FolderDamagedError as exc:
            log.warning("%s is not whole (%s): the run is resumed to write it again", final,
                        exc)
            return False
    try:
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # unreadable: not finished, resumed
        return False
    return isinstance(manifest, dict) and manifest.get("checkpoint_path") == FINAL


def save_final(run: Path, write: Callable[[Path], None]) -> Path:
    """Write the final model through ``write(folder)`` into a temp folder, make it durable,
    and rename it to RUN/final: a kill leaves the old final model or the new one, whole."""
    final, tmp = run / FINAL, run / f".{FINAL}.tmp"
    sweep_leftovers(final)
    shutil.rmtree(tmp, ignore_errors=True)
    with _discarded_on_failure(tmp, is_main=True):
        write(tmp)
        seal(tmp, FINAL_RECORD, {"format": RECORD_FORMAT})
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


def checkpoint_step(path: Path) -> int:
    return int(CHECKPOINT_RE.match(path.name).group(1))


def list_checkpoints(run: Path) -> list[Path]:
    """Every ``checkpoint-NNNNNN`` folder of RUN, oldest first, whole or not (a resume
    checks each before it trusts it)."""
    found = [p for p in run.glob("checkpoint-*") if CHECKPOINT_RE.match(p.name) and p.is_dir()
             and not p.is_symlink()]
    return sorted(found, key=checkpoint_step)


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
            seal(tmp, RECORD, {"format": RECORD_FORMAT, "step": state.progress.step,
                               "run": state.progress.outcome_hash,
                               "world_size": runtime.world_size})
            _fsync_tree(tmp)
            sweep_leftovers(final)
            replace_folder(tmp, final)
            # Newer ones are left by a timeline a resume went back from (it skipped them as
            # damaged); this run replaces each when it gets there.
            done = [p for p in list_checkpoints(run) if checkpoint_step(p) <= state.progress.step]
            for old in done[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        runtime.barrier()
    return final


def adopt_unrecorded(run: Path) -> tuple[list[str], list[str]]:
    """Record the files of RUN's checkpoints written before checkpoints recorded them
    (``--adopt-old-checkpoints``; call with the run's lock held): the user vouches for
    their bytes as they are now. Each is adopted only when every file a resume reads is
    there and its state and weights parse; one that is not stays unrecorded (a resume
    skips it, saying why). Returns a line per checkpoint adopted, and per one refused."""
    adopted, refused = [], []
    for path in list_checkpoints(run):
        if (path / RECORD).exists():
            continue
        try:
            files = _adopt(path)
        except CheckpointError as exc:
            refused.append(str(exc))
            continue
        adopted.append(f"{path.name}: step {checkpoint_step(path)}, its {files} files "
                       "recorded as they are now")
    return adopted, refused


def _adopt(path: Path) -> int:
    """Check one unrecorded checkpoint is whole, then record its files; their count."""
    progress = TrainerState.read(path / STATE)
    if progress.step != checkpoint_step(path):
        raise CheckpointError(path / STATE, f"says step {progress.step} in the folder of "
                                            f"step {checkpoint_step(path)}")
    blob = _read(path / f"{OPTIMIZER}.json", lambda: load_state(path / OPTIMIZER))
    world = blob.get("world_size") if isinstance(blob, dict) else None
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        raise CheckpointError(path / f"{OPTIMIZER}.json", "names no world size")
    needed = [WEIGHTS, *(f"rng-{rank}.{kind}" for rank in range(world)
                         for kind in ("json", "safetensors"))]
    for name in needed:
        if not (path / name).is_file() or (path / name).is_symlink():
            raise CheckpointError(path / name, "is missing: this checkpoint is incomplete")
    _read(path / WEIGHTS, lambda: load_file(str(path / WEIGHTS)))
    seal(path, RECORD, {"format": RECORD_FORMAT, "step": progress.step,
                        "run": progress.outcome_hash, "world_size": world, "adopted": True})
    fsync_dir(path)
    return len(needed) + 3  # and the state, optimizer.json and optimizer.safetensors


@contextmanager
def _discarded_on_failure(tmp: Path, is_main: bool) -> Iterator[None]:
    """A full disk or a crash mid-write: the earlier checkpoints stay, the half goes."""
    try:
        yield
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def resume_latest(run: Path, state: CheckpointState, runtime: Runtime, total_steps: int
                  ) -> Path | None:
    """Restore ``state`` from the newest checkpoint of RUN that holds up; returns it (None
    when RUN has no checkpoint). Each one skipped is logged with its reason; when none
    holds up, CheckpointError names them all, and nothing trains."""
    skipped: list[FolderDamagedError] = []
    for path in reversed(list_checkpoints(run)):
        try:
            load_checkpoint(path, state, runtime, total_steps)
        except FolderDamagedError as exc:  # CheckpointError too
            log.warning("skipping %s: %s", path.name, exc)
            skipped.append(exc)
            continue
        if skipped:
            log.warning("resuming %s from %s (step %d), the newest checkpoint that holds up; "
                        "skipped %s", run, path.name, state.progress.step,
                        ", ".join(exc.path.parent.name for exc in skipped))
        return path
    if skipped:
        raise CheckpointError(run, "no checkpoint here can be resumed: "
                                   + "; ".join(str(exc) for exc in skipped)
                                   + ". Restore them from a copy, or remove them to start over")
    return None


def load_checkpoint(path: Path, state: CheckpointState, runtime: Runtime,
                    total_steps: int) -> TrainerState:
    """Restore ``state`` from the checkpoint at ``path``: its weights, optimizer, schedule,
    this process's RNGs and its progress (returned too), once every file matches its
    record and the state's fields are in range (CheckpointError otherwise). The checkpoint
    must have been written by the same run (``state.progress.outcome_hash``: else
    RunMismatchError) on as many processes."""
    rng_files = [f"rng-{rank}.{kind}" for rank in range(runtime.world_size)
                 for kind in ("json", "safetensors")]
    record = read_seal(path, RECORD, [WEIGHTS, STATE, f"{OPTIMIZER}.json",
                                      f"{OPTIMIZER}.safetensors", *rng_files])
    progress = TrainerState.read(path / STATE)
    if progress.outcome_hash != state.progress.outcome_hash:
        raise RunMismatchError(
            f"{path} was written by a run with a different config or data; --resume only "
            "continues the same run (start a new --out, or restore the original config)")
    _check_progress(path, progress, record, total_steps)
    weights = _read_weights(path / WEIGHTS, state.model, state.fsdp)
    blob = _read_optimizer(path, state, runtime, progress.step)
    rng = _read(path / f"rng-{runtime.rank}.json", lambda: load_state(path / f"rng-{runtime.rank}"))
    if not isinstance(rng, dict) or not {"python", "numpy", "torch"} <= rng.keys():
        raise CheckpointError(path / f"rng-{runtime.rank}.json", "is not an RNG state")
    if state.fsdp:
        _load_sharded(state, weights, blob["optimizer"])
    else:
        params = dict(state.model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        _apply(path / f"{OPTIMIZER}.json", lambda: state.optimizer.load_state_dict(
            blob["optimizer"]))
    _apply(path / f"{OPTIMIZER}.json", lambda: state.scheduler.load_state_dict(blob["scheduler"]))
    _apply(path / f"rng-{runtime.rank}.json", lambda: set_rng_state(rng))
    state.progress = progress
    return progress


def _check_progress(path: Path, progress: TrainerState, record: dict, total: int) -> None:
    """The step is the folder's and its record's, after the start and before the end
    (a checkpoint is never written at the last step: the final model is)."""
    step = checkpoint_step(path)
    if progress.step != step or record.get("step") != step:
        raise CheckpointError(path / STATE, f"says step {progress.step} (its record "
                                            f"{record.get('step')!r}) in the folder of step "
                                            f"{step}")
    if not 0 < step < total:
        raise CheckpointError(path / STATE, f"says step {step}, outside this run's steps "
                                            f"1..{total - 1} (a checkpoint comes before the "
                                            f"last step, {total})")


def _read_weights(path: Path, model: torch.nn.Module, fsdp: bool) -> dict[str, torch.Tensor]:
    """The trained weights: exactly the parameters this stage trains, each in its shape."""
    weights = _read(path, lambda: load_file(str(path)))
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trained.keys() - weights.keys())
    extra = sorted(weights.keys() - trained.keys())
    if missing or extra:
        raise CheckpointError(path, f"lacks trained weights {missing[:3]}" if missing else
                              f"holds weights this stage does not train {extra[:3]}; was it "
                              "written by a different stage?")
    if not fsdp:
        for name, value in weights.items():
            if value.shape != trained[name].shape or not value.is_floating_point():
                raise CheckpointError(path, f"weight {name} is {value.dtype} "
                                            f"{tuple(value.shape)}, the model's "
                                            f"{tuple(trained[name].shape)}")
    return weights


def _read_optimizer(path: Path, state: CheckpointState, runtime: Runtime, step: int) -> dict:
    """The optimizer and schedule state: written on as many processes, stepped ``step``
    times (a copy of another checkpoint's is caught even when its hashes were updated), and
    the shapes of this model's parameters."""
    where = path / f"{OPTIMIZER}.json"
    blob = _read(where, lambda: load_state(path / OPTIMIZER))
    if not isinstance(blob, dict) or not {"optimizer", "scheduler", "world_size"} <= blob.keys():
        raise CheckpointError(where, "is not an optimizer and schedule state")
    if blob["world_size"] != runtime.world_size or blob.get("fsdp", False) != state.fsdp:
        raise DistillError(f"{path} was written by {blob['world_size']} process(es)"
                           f"{' with FSDP' if blob.get('fsdp') else ''}; resume it the same way")
    scheduler = blob["scheduler"]
    if not isinstance(scheduler, dict) or scheduler.get("last_epoch") != step:
        last = scheduler.get("last_epoch") if isinstance(scheduler, dict) else scheduler
        raise CheckpointError(where, f"holds a schedule at step {last!r}, not {step}")
    optimizer = blob["optimizer"]
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict) \
            or not isinstance(optimizer.get("param_groups"), list):
        raise CheckpointError(where, "holds no optimizer state")
    steps = [_number(entry.get("step")) for entry in optimizer["state"].values()
             if isinstance(entry, dict)]
    if steps and max(steps) != step:
        raise CheckpointError(where, f"holds an optimizer stepped {max(steps):g} times, not "
                                     f"{step} (another checkpoint's optimizer?)")
    if not state.fsdp:
        _check_optimizer_shapes(where, optimizer, state.optimizer)
    return blob


def _check_optimizer_shapes(where: Path, saved: dict, optimizer: torch.optim.Optimizer) -> None:
    groups = saved["param_groups"]
    live = optimizer.param_groups
    if len(groups) != len(live) or any(
            not isinstance(g, dict) or not isinstance(g.get("params"), list)
            or len(g["params"]) != len(h["params"]) for g, h in zip(groups, live, strict=False)):
        raise CheckpointError(where, "holds parameter groups of another model")
    params = {index: param for g, h in zip(groups, live, strict=True)
              for index, param in zip(g["params"], h["params"], strict=True)}
    for index, entry in saved["state"].items():
        if index not in params or not isinstance(entry, dict):
            raise CheckpointError(where, f"holds state for parameter {index!r}, which this "
                                         "model does not train")
        for key, value in entry.items():
            if key != "step" and isinstance(value, torch.Tensor) \
                    and value.shape != params[index].shape:
                raise CheckpointError(where, f"holds {key} of shape {tuple(value.shape)} for a "
                                             f"parameter of shape "
                                             f"{tuple(params[index].shape)}")


def _number(value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return float(value) if isinstance(value, int | float) else math.nan


def _read(path: Path, read: Callable[[], Any]) -> Any:
    """What ``read()`` returns; whatever it raises, one CheckpointError naming ``path``
    (the file matched its record, so this is a bug in what wrote it, or a record that was
    made to vouch for other bytes)."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - any reader failure is this file's fault
        raise CheckpointError(path, f"cannot be read back ({_reason(exc)})") from None


def _apply(path: Path, apply: Callable[[], object]) -> None:
    try:
        apply()
    except Exception as exc:  # noqa: BLE001 - a state the live objects refuse
        raise CheckpointError(path, f"does not fit this run ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _load_sharded(state: CheckpointState, weights: dict, optimizer: dict) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(state.model, weights, options=options)
    set_optimizer_state_dict(state.model, state.optimizer, optimizer, options=options)
