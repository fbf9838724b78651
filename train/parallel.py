"""Several training runs side by side, one process each (the demo's students).

A small student on a small CPU trains fastest on one thread per process: a second thread
in one process mostly waits on the first (bench/RESULTS.md, threads), while a second
process keeps a second core busy. So runs that do not depend on each other train at once,
each in its own process, and the parent shows their progress from their metrics files.

Every run keeps its resume semantics, decided under the run's lock: a finished run is
skipped, a partial one resumes from its newest checkpoint that holds up, one that died
before its first checkpoint starts over (nothing is deleted: its files are rewritten). A
run folder that another run holds stops that job, naming the holder. The processes die
with their parent (Linux: ``PR_SET_PDEATHSIG``), so a killed demo leaves no
process writing into a run folder, and running it again resumes every run. Each process
writes its log to ``RUN.log`` beside its run folder; a failure is reported with its tail.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distill.core.errors import DistillError
from distill.core.progress import Bar, progress_bars
from distill.core.shards import process_alive, read_json_model
from distill.schemas import RunManifest
from distill.train.checkpoint import holds_run
from distill.train.config import TrainConfig
from distill.train.metrics import parse_record

POLL_S = 1.0
USER_ERROR = 2  # a job's exit code for a DistillError (bad input, a held folder, ...)
ERROR_PREFIX = "error: "


@dataclass(frozen=True)
class TrainJob:
    name: str
    config: TrainConfig
    data: Path
    out: Path
    # Run in the job's process once training is done (picklable: a module-level function or
    # a partial of one). The demo evaluates each student there, so its eval overlaps the
    # other students' training instead of waiting for the last of them.
    after: Callable[[], object] | None = field(default=None, compare=False)
    # Jobs (by name) that must have finished before this one starts: a run that continues
    # another's model. A name that is not among the jobs being trained counts as finished.
    needs: tuple[str, ...] = ()
    # Another run holding ``out``: wait for it (``--wait``) rather than stop.
    wait: bool = False
    # A seed of the --seeds run that holds ``out``'s parent folder (train_seed_group).
    in_group: bool = False

    @property
    def log_path(self) -> Path:
        return self.out.parent / f"{self.out.name}.log"


def train_or_resume(config: TrainConfig, data: Path, out: Path, *, wait: bool = False,
                    in_group: bool = False) -> RunManifest:
    """Train ``out`` to the end, or resume it. Every decision is taken under OUT's lock
    (``train``): a finished run of this recipe is returned as it is, a partial one resumes,
    an attempt that died before its first checkpoint starts over in place; another recipe's
    run, or a run another process holds, is refused."""
    from distill.train.loop import train

    return train(config, data, out, resume=True, wait=wait, in_group=in_group)


@dataclass
class Started:
    """A job running in its own process (``start_job``); ``train_side_by_side`` waits for it."""

    job: TrainJob
    process: multiprocessing.process.BaseProcess

    def stop(self) -> None:
        """End this job's process (it resumes from its last checkpoint next time)."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()


def start_job(job: TrainJob) -> Started:
    """Start one job in a process of its own and return at once."""
    job.out.parent.mkdir(parents=True, exist_ok=True)
    # not a daemon: a run on a GPU starts data-loader workers of its own
    process = _job_context().Process(target=_run_job, args=(job, os.getpid(), dict(os.environ)),
                                     name=f"train-{job.name}")
    process.start()
    return Started(job, process)


# What a job imports before its first step: loaded once, by the fork server.
PRELOAD = ["distill.train.loop", "distill.train.parallel"]


def _job_context() -> multiprocessing.context.BaseContext:
    """A fork server where the platform has one, spawn elsewhere; never a fork of the
    parent, which may hold torch threads and open files.

    The fork server imports torch, transformers and the training loop once, and forks every
    job from that clean process: a job skips the ~9 s of imports that a spawned one pays on
    a 2-core box (six demo students: ~50 CPU-seconds). A job still gets the parent's
    working folder and sys.path (multiprocessing sends them) and its environment
    (``_run_job`` takes a copy: the server was started with the parent's first one).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def train_side_by_side(jobs: list[TrainJob], processes: int,
                       started: list[Started] | tuple = ()) -> None:
    """Train every job, at most ``processes`` at a time (besides the ``started`` ones,
    which are waited for too), each in a process of its own, in the list's order except
    that a job waits for the jobs it ``needs``."""
    pending = list(jobs)
    running = {s.job.name: s for s in started}
    ours = set()  # the jobs started here: at most ``processes`` of them at once
    shown: dict[str, int] = {}
    with progress_bars() as bars:
        bar_of = {job.name: bars.add(f"train {job.name}", _total_steps(job.config), "steps")
                  for job in [*(s.job for s in started), *jobs]}
        try:
            while pending or running:
                while len(ours & running.keys()) < max(1, processes):
                    job = _next_ready(pending, running)
                    if job is None:
                        break
                    running[job.name] = start_job(job)
                    ours.add(job.name)
                time.sleep(POLL_S)
                for name, run in list(running.items()):
                    _show_progress(run.job, bar_of[name], shown)
                    if run.process.exitcode is None:
                        continue
                    del running[name]
                    if run.process.exitcode == 0:
                        _show_progress(run.job, bar_of[name], shown, finished=True)
                    elif run.process.exitcode == USER_ERROR:
                        raise DistillError(f"training {name} failed: "
                                           f"{_last_error(run.job.log_path)}")
                    else:
                        raise DistillError(f"training {name} failed (exit code "
                                           f"{run.process.exitcode}); the end of "
                                           f"{run.job.log_path}:\n{_tail(run.job.log_path)}")
        finally:
            for run in running.values():  # only the processes started here
                run.stop()


def _next_ready(pending: list[TrainJob], running: dict[str, Started]) -> TrainJob | None:
    """Take the first pending job none of whose ``needs`` is pending or running."""
    waiting = {job.name for job in pending} | running.keys()
    for index, job in enumerate(pending):
        if not waiting & set(job.needs):
            return pending.pop(index)
    if pending and not running:
        raise DistillError(f"training jobs wait on each other: {[j.name for j in pending]}")
    return None


def _total_steps(config: TrainConfig) -> int | None:
    return config.vision_steps if config.stage == "vision" else config.max_steps


def _show_progress(job: TrainJob, bar: Bar, shown: dict[str, int],
                   finished: bool = False) -> None:
    """Advance the job's bar to its last logged step (to its manifest's at the end: stage 0
    logs no metrics)."""
    record = last_metrics(job.out)
    step = int(record.get("step", 0))
    if finished:
        step = max(step, read_json_model(job.out / "manifest.json", RunManifest).steps)
    if step > shown.get(job.name, 0):
        bar.advance(step - shown.get(job.name, 0))
        shown[job.name] = step
    if record:
        bar.note(f"loss {record['loss']:.4f}  {record['tokens_per_s']:,.0f} tok/s")


def last_metrics(run: Path) -> dict:
    """The last complete record of RUN/metrics.jsonl ({} while there is none)."""
    try:
        text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return {}
    lines = text.split("\n")[:-1]  # a line still being written has no newline yet
    for line in reversed(lines):
        record = parse_record(line)
        if record is not None:
            return record
    return {}


def _last_error(path: Path) -> str:
    """The one-line message a job that exited USER_ERROR wrote last to its log."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    errors = [line.removeprefix(ERROR_PREFIX) for line in lines if line.startswith(ERROR_PREFIX)]
    return errors[-1] if errors else f"stopped with an error; see {path}"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace")
                         .splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run_job(job: TrainJob, parent: int, environ: dict[str, str]) -> None:
    """The child process: the parent's environment, its output to the job's log, no
    progress bars, die with the parent, exit 1 on any error (the parent reports the log's
    tail)."""
    _die_with_parent(parent)
    os.environ.clear()
    os.environ.update(environ)
    fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["DISTILL_PROGRESS"] = "0"
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train_or_resume(job.config, job.data, job.out, wait=job.wait, in_group=job.in_group)
        if job.after is not None:
            job.after()
    except DistillError as exc:  # the user's to fix: one line, as the CLI prints it
        print(ERROR_PREFIX + " ".join(str(exc).split()), file=sys.stderr, flush=True)
        os._exit(USER_ERROR)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


def _die_with_parent(parent: int) -> None:
    """End this process as soon as the job's parent dies, wherever it was started from.

    A spawned job is the parent's child: the kernel's parent-death signal kills it. A job
    forked by the fork server is the server's child, and the server outlives the parent
    while any job runs (each job holds the server's liveness pipe), so a thread watches
    the parent itself and ends the job when it is gone.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == parent:
        return
    if not process_alive(parent):  # died before this process started watching
        os._exit(1)
    threading.Thread(target=_exit_when_gone, args=(parent,), daemon=True,
                     name="parent-watch").start()


def _exit_when_gone(parent: int) -> None:
    """Block until ``parent`` ends (a pidfd where the kernel has them, else a 0.5 s poll),
    then end this process at once, as the parent-death signal would."""
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):
        while process_alive(parent):
            time.sleep(0.5)
    else:
        select.select([fd], [], [])
    os._exit(1)
    return True


# --- several seeds of one recipe -------------------------------------------------------------


def seed_run_dir(out: Path, seed: int) -> Path:
    """Where seed ``seed`` of a recipe trains: OUT/seed-N (compare labels the group OUT)."""
    return out / f"seed-{seed}"


def seed_jobs(config: TrainConfig, data: Path, out: Path, seeds: list[int],
              wait: bool = False) -> list[TrainJob]:
    """One job per seed, the config otherwise unchanged, so their RunManifests share a
    recipe hash and compare groups them."""
    if len(set(seeds)) != len(seeds):
        raise DistillError(f"repeated seeds in {seeds}")
    return [TrainJob(f"seed-{seed}", config.model_copy(update={"seed": seed}), data,
                     seed_run_dir(out, seed), wait=wait, in_group=True) for seed in seeds]


def train_seed_group(config: TrainConfig, data: Path, out: Path, seeds: list[int],
                     processes: int, *, wait: bool = False) -> None:
    """Every seed of one recipe into OUT/seed-N, ``processes`` at a time. The group holds
    OUT's lock for its whole length (one ``--seeds`` run per OUT, and no single run in
    it), and each seed's job its own folder's (no other run writes in that seed's)."""
    from distill.train.loop import run_lock

    with run_lock(out, wait):
        if holds_run(out):
            raise DistillError(f"{out} holds a single run, not a --seeds group; --seeds trains "
                               f"into {out}/seed-N: choose another --out")
        train_side_by_side(seed_jobs(config, data, out, seeds, wait), processes)


def seed_processes(n_jobs: int, *, cuda: bool, cores: int | None = None) -> tuple[int, int]:
    """(processes at once, threads each): one after another on a GPU (each run wants the
    whole device), side by side on a CPU, one process per core at most, the cores shared
    out evenly (a second process keeps a core busy where a second thread mostly waits)."""
    if cuda:
        return 1, 1
    cores = cores or os.cpu_count() or 1
    processes = max(1, min(n_jobs, cores))
    return processes, max(1, cores // processes)
