"""What happens to training runs left unattended: damaged checkpoints, a second writer,
bad options. Each is a function that does it to a real run folder of the micro student,
shared by the tests (tests/test_train_hostile.py, tests/test_fuzz_inputs.py) and
bench/train_reliability.py, which counts how each case ends.

Every case runs the real CLI (``distill.cli.main`` in this process, or ``python -m
distill`` where two processes must meet) on a real dataset version.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from distill.cli import main
from distill.core.locks import read_holder

REPO = Path(__file__).resolve().parents[1]

# A 6-step run of the micro student that checkpoints at steps 2 and 4 (both kept).
MICRO_SET = ["model=test-micro", "llm=full", "max_steps=6", "batch_size=4", "save_every=2",
             "keep_checkpoints=2", "threads=1", "log_every=1", "tensorboard=false"]


def train_args(data: Path, out: Path, *sets: str, resume: bool = False) -> list[str]:
    """``distill train`` arguments for a micro run (``sets`` override MICRO_SET)."""
    args = ["train", "--config", "cot", "--data", str(data), "--out", str(out)]
    for item in [*MICRO_SET, *sets]:
        args += ["--set", item]
    return args + (["--resume"] if resume else [])


def run_cli(args: list[str]) -> tuple[int, str]:
    """``distill ARGS`` in this process: (exit status, stderr with the log)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    return code, err.getvalue() + out.getvalue()


def error_lines(text: str) -> list[str]:
    """The error lines: ours (``error: ...``), or click's for a bad option value."""
    return [line for line in text.splitlines()
            if line.startswith(("error:", "Error: Invalid value"))]


def final_weights(run: Path) -> bytes | None:
    path = run / "final" / "model.safetensors"
    return path.read_bytes() if path.exists() else None


# --- a run stopped before its end --------------------------------------------------------


def finished_run(data: Path, out: Path, *sets: str) -> Path:
    """A micro run trained to its end (the reference every resume must reach)."""
    code, text = run_cli(train_args(data, out, *sets))
    assert code == 0, text
    return out


def stopped_copy(finished: Path, out: Path) -> Path:
    """A copy of a finished run as a kill after its last step leaves it: its checkpoints,
    metrics and manifest, no final model (a resume trains from checkpoint-000004 on)."""
    shutil.copytree(finished, out, ignore=shutil.ignore_patterns("final", ".lock"))
    checkpoints = sorted(out.glob("checkpoint-*"))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(checkpoint_path=checkpoints[-1].name,
                    steps=int(checkpoints[-1].name.split("-")[1]))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


# --- damage to one checkpoint folder -------------------------------------------------------


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_bit(path: Path) -> None:
    """One bit flipped in the middle of a safetensors file's tensor data."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    at = header + (len(data) - header) // 2
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    """Rewrite a JSON object file after ``change`` edited it in place."""
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def keep_only(folder: Path, *names: str) -> None:
    for path in folder.iterdir():
        if path.name not in names:
            path.unlink()


def copy_from(other: Path, folder: Path, *names: str) -> None:
    for name in names:
        shutil.copyfile(other / name, folder / name)


# name -> what it does to checkpoint ``ck`` (``older``: the run's previous checkpoint)
CHECKPOINT_DAMAGE: dict[str, Callable[[Path, Path], None]] = {
    "trainable.safetensors cut short": lambda ck, older: cut_in_half(ck / "trainable.safetensors"),
    "trainable.safetensors deleted": lambda ck, older: (ck / "trainable.safetensors").unlink(),
    "optimizer.safetensors cut short": lambda ck, older: cut_in_half(ck / "optimizer.safetensors"),
    "optimizer.safetensors deleted": lambda ck, older: (ck / "optimizer.safetensors").unlink(),
    "optimizer.json deleted": lambda ck, older: (ck / "optimizer.json").unlink(),
    "trainer_state.json not JSON": lambda ck, older: (ck / "trainer_state.json")
    .write_text("{\"step\": 4,"),
    "trainer_state.json null": lambda ck, older: (ck / "trainer_state.json").write_text("null"),
    "trainer_state.json lacks a field": lambda ck, older: edit_json(
        ck / "trainer_state.json", lambda s: s.pop("tokens_seen")),
    "trainer_state.json negative step": lambda ck, older: edit_json(
        ck / "trainer_state.json", lambda s: s.update(step=-4)),
    "trainer_state.json says step 999 of 6": lambda ck, older: edit_json(
        ck / "trainer_state.json", lambda s: s.update(step=999)),
    "optimizer.json not JSON": lambda ck, older: (ck / "optimizer.json").write_text("{\"opt"),
    "optimizer.json null": lambda ck, older: (ck / "optimizer.json").write_text("null"),
    "rng-0.json not JSON": lambda ck, older: (ck / "rng-0.json").write_text("[1, 2"),
    "rng-0.json null": lambda ck, older: (ck / "rng-0.json").write_text("null"),
    "rng-0.safetensors deleted": lambda ck, older: (ck / "rng-0.safetensors").unlink(),
    "half-copied folder (state only)": lambda ck, older: keep_only(ck, "trainer_state.json"),
    "empty folder": lambda ck, older: keep_only(ck),
    "a flipped bit in trainable.safetensors": lambda ck, older: flip_a_bit(
        ck / "trainable.safetensors"),
    "a flipped bit in optimizer.safetensors": lambda ck, older: flip_a_bit(
        ck / "optimizer.safetensors"),
    "another checkpoint's optimizer copied in": lambda ck, older: copy_from(
        older, ck, "optimizer.json", "optimizer.safetensors"),
    "another checkpoint's weights copied in": lambda ck, older: copy_from(
        older, ck, "trainable.safetensors"),
}


def damage(run: Path, kind: str, *, every: bool = False) -> list[Path]:
    """Do ``kind`` to the newest checkpoint of RUN (to each one with ``every``; the oldest
    then takes another's files from the newest); returns the folders damaged."""
    checkpoints = sorted(run.glob("checkpoint-*"))
    targets = checkpoints if every else checkpoints[-1:]
    with tempfile.TemporaryDirectory() as tmp:  # each takes another's files as they were
        originals = {ck: shutil.copytree(ck, Path(tmp) / ck.name) for ck in checkpoints}
        for ck in targets:
            other = checkpoints[-1] if ck == checkpoints[0] else checkpoints[0]
            CHECKPOINT_DAMAGE[kind](ck, originals[other])
    return targets


def vouch(checkpoint: Path) -> None:
    """Rewrite a checkpoint's record to match the files it holds now (what a tool that
    "repairs" checkpoints would do): only the checks of the state itself stand then."""
    from distill.train.sealed import seal

    record = checkpoint / "checkpoint.json"
    try:
        fields = json.loads(record.read_text())
        fields.pop("files")
    except (OSError, ValueError, AttributeError, KeyError):
        fields = {"format": 1, "step": int(checkpoint.name.split("-")[1])}
    record.unlink(missing_ok=True)
    seal(checkpoint, record.name, fields)


# --- bad options ----------------------------------------------------------------------------

# (the --set or option, the field the one error line must name)
BAD_OPTIONS: list[tuple[list[str], str]] = [
    (["--set", "seed=-1"], "seed"), (["--set", "seed=4294967296"], "seed"),
    (["--set", "seed=18446744073709551617"], "seed"), (["--set", "seed=1.5"], "seed"),
    (["--seeds", "-1"], "--seeds"), (["--seeds", "4294967296"], "--seeds"),
    (["--set", "threads=0"], "threads"), (["--set", "threads=-2"], "threads"),
    (["--set", "threads=1000000"], "threads"),
    (["--set", "num_workers=-1"], "num_workers"), (["--set", "num_workers=100000"], "num_workers"),
    (["--set", "betas=[2, 3]"], "betas"), (["--set", "betas=[0.9]"], "betas"),
    (["--set", "betas=[-0.1, 0.9]"], "betas"), (["--set", "betas=[0.9, 1.0]"], "betas"),
    (["--set", "betas=x"], "betas"),
    (["--set", "llm=lora", "--set", "lora.target_modules=[q_prj]"], "lora.target_modules"),
    (["--set", "llm=lora", "--set", "lora.target_modules=[]"], "lora.target_modules"),
    (["--set", "llm=lora", "--set", "lora.target_modules=[model]"], "lora.target_modules"),
    (["--set", "llm=lora", "--set", "lora.r=0"], "lora.r"),
    (["--set", "llm=lora", "--set", "lora.r=1000000"], "lora.r"),
    (["--set", "lr=0"], "lr"), (["--set", "lr=.nan"], "lr"),
    (["--set", "warmup_steps=-1"], "warmup_steps"), (["--set", "max_steps=0"], "max_steps"),
    (["--set", "max_steps=1000000000000"], "max_steps"),
    (["--set", "batch_size=0"], "batch_size"), (["--set", "save_every=0"], "save_every"),
    (["--set", "micro_batch_size=3"], "micro_batch_size"),
    (["--set", "data_start=-1"], "data_start"),
]


# --- two processes on one folder ----------------------------------------------------------


def distill_process(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m distill ARGS`` in a session of its own (its children too: a --seeds
    run's jobs), output to ``log``."""
    env = {**os.environ, "DISTILL_PROGRESS": "0", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "distill", *args], cwd=REPO, env=env,
                                stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)


def session_pids(leader: int) -> set[int]:
    """The processes of ``leader``'s session (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == leader and fields[0] != "Z":  # session id
                found.add(int(entry.name))
    return found


@contextlib.contextmanager
def frozen_when_locked(process: subprocess.Popen, folder: Path, timeout: float = 240
                       ) -> Iterator[int]:
    """Wait until a ``.lock`` under ``folder`` names a process of ``process``'s session,
    then stop the whole session (SIGSTOP) for the body, which gets the holder's pid; let
    it go on after (SIGCONT)."""
    deadline = time.monotonic() + timeout
    holder = None
    try:
        while holder is None:
            pids = session_pids(process.pid)
            for lock in folder.rglob(".lock"):
                record = read_holder(lock)
                if record is not None and record.pid in pids:
                    holder = record.pid
            if holder is None:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"run A ended or took no lock (exit {process.poll()})")
                time.sleep(0.005)
        os.killpg(process.pid, signal.SIGSTOP)
        yield holder
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)


def stop_session(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_during_save(args: list[str], run: Path, log: Path, *, after: int = 0,
                     timeout: float = 240) -> bool:
    """Start ``distill ARGS`` and SIGKILL it while it writes a checkpoint (its hidden temp
    folder exists) once ``after`` checkpoints are in place; False when the run ended
    before such a save could be caught."""
    process = distill_process(args, log)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if any(run.glob(".checkpoint-*.tmp")) and \
                    len(list(run.glob("checkpoint-*"))) >= after:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.0005)
        return False
    finally:
        stop_session(process)
