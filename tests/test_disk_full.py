"""A disk that fills up mid-run, on a real size-limited file system (a tmpfs this test
mounts): every stage exits 2 with one clear line, what was finished before stays intact,
and once space is freed the same command completes with exactly the result of a run that
never ran out of space.

Mounting needs root (CI runs as root); elsewhere these tests skip and the injected-ENOSPC
unit tests in test_shards.py still run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors.torch import load_file

from distill.core.shards import iter_records
from distill.schemas import Sample, file_sha256
from distill.train.checkpoint import list_checkpoints
from testing.generate import (
    builtin_teacher,
    content_set,
    generate_command,
    make_ingest,
    read_outputs,
    write_teachers,
)

REPO = Path(__file__).resolve().parents[1]
PAGE = 4096


class SmallDisk:
    """A tmpfs whose free space the test sets, by a ballast file, before each command."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ballast = root / "ballast"

    def leave_free(self, kib: int) -> None:
        """Fill the file system so that only ``kib`` KiB stay free."""
        self.free_all()
        stats = os.statvfs(self.root)
        fill = stats.f_bavail * stats.f_frsize - kib * 1024
        with open(self.ballast, "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, fill)

    def free_all(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file() and p != self.ballast]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield SmallDisk(mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def distill(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISTILL_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "distill", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def assert_clean_disk_full_error(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 2, done.stderr
    assert "no space left on device" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def footprint_kib(folder: Path) -> int:
    """What a folder's files take on a tmpfs, which allocates whole pages."""
    pages = sum(-(-p.stat().st_size // PAGE) for p in folder.rglob("*") if p.is_file())
    return pages * PAGE // 1024


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]


# --- inputs shared by the stages -----------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("disk-full-inputs")
    samples = make_ingest(root / "ingest", {"train": 60, "test": 10}, shard_size=10)
    # Batches of 8: the feed streams asks across shards, and a batch of 256 would hold all
    # seven shards open to the end; with small batches shards finish one after another, so
    # some are finished before the disk fills.
    teachers = write_teachers(root / "teachers.yaml", {
        "knn": {**builtin_teacher("knn", k=2), "batch_size": 8},
        "logreg": {**builtin_teacher("logreg", k=2), "batch_size": 8}})
    generated = root / "gen"
    done = subprocess.run(generate_command(samples, teachers, generated), cwd=REPO,
                          capture_output=True, text=True, env={**os.environ,
                                                               "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return {"samples": samples, "teachers": teachers, "generated": generated, "root": root}


def test_ingest_keeps_the_previous_folder_and_completes_after_space_is_freed(disk, inputs):
    out = disk.root / "ingest"
    assert distill("ingest", "digits", "--out", out, "--counts", "train=20,test=5",
                   "--shard-size", "10").returncode == 0
    before = {p.relative_to(out): file_sha256(p) for p in out.rglob("*") if p.is_file()}
    command = ("ingest", "digits", "--out", out, "--counts", "train=60,test=10",
               "--shard-size", "10", "--overwrite")
    disk.leave_free(footprint_kib(inputs["samples"]) // 2)
    assert_clean_disk_full_error(distill(*command))
    assert {p.relative_to(out): file_sha256(p) for p in out.rglob("*") if p.is_file()} == before
    disk.free_all()
    assert distill(*command).returncode == 0
    rows = [s for p in sorted(out.glob("samples/*/part-*.jsonl")) for s in iter_records(p, Sample)]
    assert len(rows) == 70
    assert not leftovers(disk.root)


def test_generate_keeps_finished_shards_and_resumes_to_the_same_traces(disk, inputs):
    out = disk.root / "gen"
    command = generate_command(inputs["samples"], inputs["teachers"], out)[3:]
    disk.leave_free(footprint_kib(inputs["generated"]) // 2)
    assert_clean_disk_full_error(distill(*command))
    finished = {p: file_sha256(p) for p in out.glob("traces/*/part-*.jsonl")}
    assert finished, "no shard finished before the disk filled; leave more space"
    read_outputs(out)  # whatever is under a final name parses completely
    disk.free_all()
    assert distill(*command).returncode == 0
    assert {p: file_sha256(p) for p in finished} == finished  # never rewritten
    expected_traces, expected_rejects = read_outputs(inputs["generated"])
    traces, rejects = read_outputs(out)
    assert len(traces) == len({t.trace_key for t in traces}) == len(expected_traces)
    assert content_set(traces) == content_set(expected_traces)
    assert len(rejects) == len(expected_rejects)
    assert not leftovers(disk.root)


def test_filter_keeps_published_versions_and_republishes_the_same_id(disk, inputs, tmp_path):
    reference = distill("filter", "--traces", inputs["generated"], "--store", tmp_path / "ref",
                        "--policy", REPO / "data/policies/strict.yaml")
    assert reference.returncode == 0, reference.stderr
    store = disk.root / "store"
    first = distill("filter", "--traces", inputs["generated"], "--store", store)
    assert first.returncode == 0, first.stderr
    published = {p: file_sha256(p) for p in (store / "versions").rglob("*") if p.is_file()}
    command = ("filter", "--traces", inputs["generated"], "--store", store, "--policy",
               REPO / "data/policies/strict.yaml")
    disk.leave_free(max(footprint_kib(store) // 3, 8))
    assert_clean_disk_full_error(distill(*command))
    assert {p: file_sha256(p) for p in published} == published
    disk.free_all()
    again = distill(*command)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split()[-1] == reference.stdout.split()[-1]  # the version id
    assert not leftovers(disk.root)


def test_train_keeps_its_checkpoints_and_resumes_to_the_same_weights(disk, inputs, tmp_path):
    made = distill("filter", "--traces", inputs["generated"], "--store", tmp_path / "store")
    assert made.returncode == 0, made.stderr
    data = next((tmp_path / "store" / "versions").iterdir())
    args = ["--config", "cot", "--data", str(data), "--set", "model=test-micro", "--set",
            "llm=full", "--set", "max_steps=8", "--set", "batch_size=4", "--set",
            "save_every=2", "--set", "keep_checkpoints=2", "--set", "threads=1", "--set",
            "tensorboard=false"]
    whole = distill("train", *args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    checkpoint_kib = footprint_kib(list_checkpoints(tmp_path / "whole")[-1])
    run = disk.root / "run"
    disk.leave_free(checkpoint_kib * 5 // 2)  # room for two checkpoints, not a third
    failed = distill("train", *args, "--out", run)
    assert_clean_disk_full_error(failed)
    assert "--resume" in failed.stderr
    kept = list_checkpoints(run)
    assert kept and not (run / "final").exists()
    assert not leftovers(disk.root)  # the half-written checkpoint was removed
    disk.free_all()
    resumed = distill("train", *args, "--out", run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    b = load_file(str(run / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
