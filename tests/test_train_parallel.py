"""Training runs side by side, one process each: both run at once, each resumes, a failure
is reported with its log, and no process outlives a killed parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from distill.core.errors import DistillError
from distill.core.shards import read_json_model
from distill.schemas import RunManifest
from distill.train.checkpoint import is_finished
from distill.train.parallel import TrainJob, train_side_by_side
from tests.train_support import config, make_dataset, make_ingest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parallel-data")
    return make_dataset(make_ingest(root / "ingest", train=16, test=2), root / "version")


def test_a_failing_run_is_reported_with_its_log_and_the_others_stopped(data, tmp_path):
    bad = TrainJob("bad", config(max_steps=4, batch_size=4), tmp_path / "no-such-dataset",
                   tmp_path / "bad")
    slow = TrainJob("slow", config(max_steps=100_000, batch_size=4), data, tmp_path / "slow")
    with pytest.raises(DistillError, match=r"training bad failed[\s\S]*no-such-dataset"):
        train_side_by_side([bad, slow], processes=2)  # returns: the slow run was stopped
    assert not is_finished(slow.out)


def test_a_jobs_after_step_runs_in_its_process_once_it_has_trained(data, tmp_path):
    """The demo evaluates each student in its own training process (its eval overlaps the
    others' training): the step runs after the run is finished, in the child, and not at
    all when training failed."""
    marker, never = tmp_path / "after.txt", tmp_path / "never.txt"
    good = TrainJob("good", config(max_steps=2, batch_size=4), data, tmp_path / "good",
                    after=partial(_write_pid_if_finished, tmp_path / "good", marker))
    bad = TrainJob("bad", config(max_steps=2, batch_size=4), tmp_path / "no-such-dataset",
                   tmp_path / "bad", after=partial(_write_pid_if_finished, tmp_path / "bad",
                                                   never))
    train_side_by_side([good], processes=1)
    written = marker.read_text()
    assert written.isdigit() and int(written) != os.getpid()  # a finished run, in the child
    with pytest.raises(DistillError, match="training bad failed"):
        train_side_by_side([bad], processes=1)
    assert not never.exists()


def test_a_job_starts_once_the_run_it_continues_has_finished(data, tmp_path):
    first = TrainJob("first", config(max_steps=6, batch_size=4), data, tmp_path / "first")
    then = TrainJob("then", config(max_steps=3, batch_size=4, data_start=6,
                                   init=str(first.out / "final")),
                    data, tmp_path / "then", needs=("first",))
    train_side_by_side([then, first], processes=2)  # listed first, it still starts second
    assert is_finished(then.out)  # its init, first's final model, was there when it started
    manifest = read_json_model(then.out / "manifest.json", RunManifest)
    assert manifest.parent_checkpoint == "../first/final" and manifest.steps == 3
    assert (first.out / "final").stat().st_mtime <= (then.out / "metrics.jsonl").stat().st_ctime


def test_jobs_that_wait_on_each_other_are_refused_before_any_starts(data, tmp_path):
    a = TrainJob("a", config(), data, tmp_path / "a", needs=("b",))
    b = TrainJob("b", config(), data, tmp_path / "b", needs=("a",))
    with pytest.raises(DistillError, match="wait on each other"):
        train_side_by_side([a, b], processes=2)
    assert not a.out.exists() and not b.out.exists()


def _write_pid_if_finished(run: Path, marker: Path) -> None:
    marker.write_text(str(os.getpid()) if is_finished(run) else "unfinished")


PARENT = """
import sys
from pathlib import Path
from tests.test_train_parallel import jobs
from distill.train.parallel import train_side_by_side
train_side_by_side(jobs(Path(sys.argv[1]), Path(sys.argv[2])), processes=2)
"""


STEPS = 150  # long enough that neither run ends between its first checkpoint and the kill


def jobs(data: Path, folder: Path) -> list[TrainJob]:
    return [TrainJob(name, config(max_steps=STEPS, batch_size=4, save_every=5, seed=seed), data,
                     folder / name) for seed, name in enumerate(["a", "b"])]


def _stat(pid: int | str) -> list[str]:
    """/proc/PID/stat's fields after the command name: state, parent pid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int, command: str = "") -> list[int]:
    """Processes whose parent is ``pid`` (and whose command line holds ``command``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(entry.name)
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if int(fields[1]) == pid and command in cmdline:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waits for its parent to reap it)."""
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def _job_processes(parent: int) -> list[int]:
    """The parent's training processes: forked by its fork server (Linux), or spawned."""
    forked = [job for server in _children(parent, "forkserver") for job in _children(server)]
    return forked + _children(parent, "spawn_main")


@pytest.mark.slow  # five Python processes start (each imports torch): ~40 s of CPU
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, PR_SET_PDEATHSIG")
def test_runs_train_at_once_die_with_a_killed_parent_and_resume(data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILL_PROGRESS": "0"}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(data), str(tmp_path)],
                              cwd=REPO, env=env)
    runs = [job.out for job in jobs(data, tmp_path)]
    try:
        deadline = time.monotonic() + 180
        at_once = 0
        while time.monotonic() < deadline and not all(list(r.glob("checkpoint-*"))
                                                      for r in runs):
            at_once = max(at_once, len(_job_processes(parent.pid)))
            time.sleep(0.2)
        assert all(list(r.glob("checkpoint-*")) for r in runs), "no checkpoints in 3 minutes"
        children = _job_processes(parent.pid)
        servers = _children(parent.pid, "forkserver")
        assert at_once == len(children) == 2  # one process a run, both at once
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while any(map(_running, children + servers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_running, children + servers))  # died with it
    finally:
        if parent.poll() is None:
            parent.kill()
    assert not any(is_finished(r) for r in runs)
    # the same jobs again resume from the checkpoints the killed processes left
    again = jobs(data, tmp_path)
    train_side_by_side(again, processes=2)
    for job in again:
        assert is_finished(job.out)
        assert "resuming" in job.log_path.read_text()
        assert read_json_model(job.out / "manifest.json", RunManifest).steps == STEPS
    ended = (again[0].out / "manifest.json").stat().st_mtime
    train_side_by_side(again, processes=2)  # finished runs: nothing is redone
    assert (again[0].out / "manifest.json").stat().st_mtime == ended
