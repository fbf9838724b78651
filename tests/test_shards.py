"""Durable shards: complete or absent, torn tails repaired, errors that name the line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.core.errors import InputError, disk_full_from
from distill.core.shards import (
    DiskFullError,
    ShardWriter,
    iter_records,
    partial_path,
    write_json_atomic,
)
from distill.schemas import Rejection, file_sha256


def rejection(i: int) -> Rejection:
    return Rejection(stage="generate", key=f"k{i}", reason="test", message=f"m{i}")


def test_commit_renames_a_complete_shard_with_its_hash(tmp_path: Path) -> None:
    final = tmp_path / "part-00000.jsonl"
    writer = ShardWriter(final, flush_every=2)
    for i in range(5):
        writer.write(rejection(i))
    assert not final.exists(), "an unfinished shard must not carry the final name"
    ref = writer.commit()
    assert final.exists() and not partial_path(final).exists()
    assert ref.rows == 5 and ref.sha256 == file_sha256(final)
    assert [r.key for r in iter_records(final, Rejection)] == [f"k{i}" for i in range(5)]


def test_reopening_a_partial_shard_repairs_a_torn_tail_and_appends(tmp_path: Path) -> None:
    final = tmp_path / "part-00000.jsonl"
    writer = ShardWriter(final)
    writer.write(rejection(0))
    writer.write(rejection(1))
    writer.close()
    with open(partial_path(final), "ab") as handle:  # a crash in the middle of a write
        handle.write(rejection(2).model_dump_json().encode()[:25])
    resumed = ShardWriter(final)
    assert resumed.repaired_bytes == 25
    assert [line.count('"key"') for line in resumed.existing_lines()] == [1, 1]
    resumed.write(rejection(2))
    resumed.commit()
    assert [r.key for r in iter_records(final, Rejection)] == ["k0", "k1", "k2"]


def test_a_complete_shard_is_never_rewritten(tmp_path: Path) -> None:
    final = tmp_path / "part-00000.jsonl"
    ShardWriter(final).commit()
    with pytest.raises(Exception, match="already complete"):
        ShardWriter(final)


def test_reading_a_truncated_file_is_an_error_not_a_silent_parse(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(rejection(0).model_dump_json() + "\n" + rejection(1).model_dump_json()[:30])
    with pytest.raises(InputError) as info:
        list(iter_records(path, Rejection))
    assert info.value.line == 2 and "truncated" in str(info.value)


def test_record_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    good = rejection(0).model_dump_json()
    path.write_text(good + "\n" + good.replace('"stage":"generate"', '"stage":"mars"') + "\n")
    with pytest.raises(InputError) as info:
        list(iter_records(path, Rejection))
    assert (info.value.file, info.value.line, info.value.field) == (str(path), 2, "stage")
    path.write_text(good + "\n{not json\n")
    with pytest.raises(InputError, match=r"x.jsonl:2: not valid JSON"):
        list(iter_records(path, Rejection))


def test_disk_full_leaves_finished_work_intact_with_a_clear_error(tmp_path: Path,
                                                                 monkeypatch) -> None:
    done = tmp_path / "part-00000.jsonl"
    first = ShardWriter(done)
    first.write(rejection(0))
    first.commit()
    before = done.read_bytes()
    writer = ShardWriter(tmp_path / "part-00001.jsonl", flush_every=1)
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(DiskFullError, match="no space left.*run the same command again"):
        writer.write(rejection(1))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert done.read_bytes() == before
    assert not (tmp_path / "part-00001.jsonl").exists()


def test_json_files_are_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"version": 1})
    write_json_atomic(path, {"version": 2})
    assert path.read_text().strip().endswith("}") and '"version": 2' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_temp_files_of_killed_writers_are_swept_on_the_next_write(tmp_path: Path) -> None:
    """A writer killed between creating its temp file and renaming it leaves clutter;
    the next write of that file removes it, but never a live writer's temp file."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".manifest.json.tmp-{dead.stdout.strip()}"
    live = tmp_path / f".manifest.json.tmp-{os.getppid()}"
    stale.write_text('{"half": ')
    live.write_text('{"in progress": ')
    write_json_atomic(tmp_path / "manifest.json", {"version": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "manifest.json"]


@pytest.mark.parametrize("raised", [
    OSError(errno.ENOSPC, "No space left on device", "/data/x.jsonl"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
    OSError("100000 requested and 8176 written"),  # numpy's short write
])
def test_every_library_s_way_of_saying_disk_full_is_recognised(raised: Exception) -> None:
    try:
        try:
            raise raised
        except Exception as inner:
            raise RuntimeError("saving the checkpoint failed") from inner
    except RuntimeError as outer:
        full = disk_full_from(outer)
    assert full is not None and "free some space" in str(full)


def test_other_errors_are_not_mistaken_for_a_full_disk() -> None:
    assert disk_full_from(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_from(ValueError("28 items")) is None
