"""SIGKILL during a folder replace loses nothing, and a half-replaced folder never looks
finished.

Every stage that replaces its output folder whole (``ingest --overwrite``, ``eval convert
--overwrite``) runs as a real ``python -m distill`` process over an OUT that holds a
finished earlier run, and is killed twice: the moment the old OUT appears renamed aside
(``.OUT.old-PID``: the window between the two renames, or while the old folder is being
deleted), and at a random moment late in its run. After each kill:

* OUT either looks finished and is complete (every shard and image its manifest names is
  there, with the recorded sha256), or does not look finished;
* the same command run again (no kill) restores or replaces, finishes, and leaves no
  staging or old folder beside OUT.

The unit tests below pin the two windows a random kill rarely hits.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.core.folders import replace_folder, staging_folder, sweep_leftovers
from distill.schemas import file_sha256
from tests.conftest import png_bytes

REPO = Path(__file__).resolve().parents[1]
ITEMS = 240  # each with its own image: the old folder takes a moment to delete


def _jsonl_source(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.jsonl", "w", encoding="utf-8") as handle:
        for i in range(ITEMS):
            (folder / f"{i}.png").write_bytes(png_bytes(i, (8, 8)))
            handle.write(json.dumps({"id": f"item-{i}", "image": f"{i}.png",
                                     "question": "How many?", "answer": str(i % 7)}) + "\n")
    return ["ingest", "jsonl", str(folder / "items.jsonl"), "--shard-size", "16"]


def _convert_source(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(ITEMS):
        (folder / f"{i}.png").write_bytes(png_bytes(i, (8, 8)))
        records.append({"pid": str(i), "question": "How many?", "answer": str(i % 7),
                        "image": f"{i}.png", "question_type": "free_form",
                        "answer_type": "integer"})
    (folder / "testmini.json").write_text(json.dumps(records))
    return ["eval", "convert", "mathvista", str(folder / "testmini.json")]


STAGES = {"ingest --overwrite": _jsonl_source, "eval convert --overwrite": _convert_source}


def _run(args: list[str], *, kill_after: float | None = None,
         kill_when_aside: Path | None = None) -> str:
    """Run the command; kill it after ``kill_after`` s, or as soon as an old folder is
    renamed aside in ``kill_when_aside``. Returns what was seen when it ended."""
    env = {**os.environ, "DISTILL_PROGRESS": "0"}
    process = subprocess.Popen([sys.executable, "-m", "distill", *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is None and kill_when_aside is None:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
        return "finished"
    if kill_when_aside is not None:
        while process.poll() is None and not any(
                name.startswith(".out.old-") for name in os.listdir(kill_when_aside)):
            time.sleep(0.0005)
    else:
        time.sleep(kill_after)  # type: ignore[arg-type]
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    left = sorted(name.split("-")[0] for name in os.listdir(kill_when_aside or ".")
                  if name.startswith(".out."))
    return f"exit {process.returncode}, beside OUT: {left}"


def looks_finished(out: Path) -> bool:
    return (out / "manifest.json").is_file()


def complete(out: Path) -> bool:
    """Every shard the manifest names, with its hash, and every image its samples name."""
    manifest = json.loads((out / "manifest.json").read_text())
    for ref in manifest["shards"]:
        shard = out / ref["name"]
        if not shard.is_file() or file_sha256(shard) != ref["sha256"]:
            return False
        for line in shard.read_text().splitlines():
            path = json.loads(line)["image"].get("path")
            if path and not (out / path).is_file():
                return False
    return True


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_kill_during_replace_loses_nothing(tmp_path: Path, stage: str) -> None:
    rng = random.Random(f"replace-{stage}")
    command = [*STAGES[stage](tmp_path / "src"), "--out", str(tmp_path / "out"), "--overwrite"]
    out = tmp_path / "out"
    started = time.monotonic()
    _run(command)
    duration = time.monotonic() - started
    assert looks_finished(out) and complete(out)
    outcomes = []
    for kill in ({"kill_when_aside": tmp_path},
                 {"kill_after": rng.uniform(0.7, 1.0) * duration}):
        seen = _run(command, **kill)  # type: ignore[arg-type]
        finished = looks_finished(out)
        assert not finished or complete(out), "a half-replaced folder looks finished"
        outcomes.append(f"{seen}, OUT looks finished: {finished}")
    _run(command)  # the next run restores or replaces, then finishes
    assert looks_finished(out) and complete(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []
    print(f"{stage}: {outcomes}")


def test_kill_between_the_renames_is_undone_by_the_next_run(tmp_path: Path) -> None:
    """The window a random kill rarely hits: OUT renamed aside, the new one not yet in.
    The next run's sweep puts the old folder back (nothing lost)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    dead = _dead_pid()
    os.rename(out, tmp_path / f".out.old-{dead}")
    (tmp_path / f".out.staging-{dead}").mkdir()
    done = sweep_leftovers(out)
    assert (out / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and len(done) == 2


def test_kill_while_deleting_the_old_folder_leaves_the_new_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    staging = staging_folder(out)
    (staging / "manifest.json").write_text("new")
    replace_folder(staging, out)
    dead = _dead_pid()
    half_deleted = tmp_path / f".out.old-{dead}"
    half_deleted.mkdir()
    (half_deleted / "manifest.json").write_text("old")  # what a kill mid-delete leaves
    sweep_leftovers(out)
    assert (out / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_leftovers_of_a_live_writer_are_kept(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        staging = tmp_path / f".out.staging-{sleeper.pid}"
        staging.mkdir()
        assert sweep_leftovers(tmp_path / "out") == [] and staging.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
