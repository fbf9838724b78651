"""One writer per output: the core guard, then two runs of each stage on the same output.

Each stage test starts run A as a real `distill` process and freezes it (SIGSTOP) once it
holds its output's lock, so "two runs at once" is a fact, not a timing hope. Run B on the
same output exits 2 with one line naming A (pid and host); run C with ``--wait`` waits,
then A is thawed, both finish, and the output is a single run's, with no key twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.locks import (
    OutputLockedError,
    lock_path_beside,
    lock_path_for,
    read_holder,
    single_writer,
)
from distill.schemas import StageManifest
from testing.generate import (
    builtin_teacher,
    content_set,
    leftovers,
    make_ingest,
    read_outputs,
    write_teachers,
)

REPO = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()


def _env() -> dict[str, str]:
    return {**os.environ, "DISTILL_PROGRESS": "0", "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _distill(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distill", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


@contextmanager
def frozen_holder(args: list[str], lock_glob: tuple[Path, str]) -> Iterator[subprocess.Popen]:
    """Run ``distill ARGS``; once a lock file matching ``lock_glob`` names it, stop it
    (SIGSTOP) for the body, then let it go on (SIGCONT)."""
    process = _distill(*args)
    folder, pattern = lock_glob
    deadline = time.monotonic() + 240
    try:
        while True:
            holders = [read_holder(p) for p in folder.glob(pattern)]
            if any(h is not None and h.pid == process.pid for h in holders):
                break
            assert process.poll() is None, f"run A ended before it was caught: " \
                                           f"{process.communicate()[0]}"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        process.send_signal(signal.SIGSTOP)
        yield process
    finally:
        process.send_signal(signal.SIGCONT)


def _second_run_refused(args: list[str], holder: subprocess.Popen, capfd) -> None:
    """Run B, in this process: exit 2 and one line naming A's pid and host."""
    capfd.readouterr()
    assert main(list(args)) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"pid {holder.pid} on host {HOST}" in err and "--wait" in err, err


def _waits(args: list[str]) -> subprocess.Popen:
    """Run C with --wait: it must still be waiting a moment later."""
    waiter = _distill(*args, "--wait")
    time.sleep(1.5)
    assert waiter.poll() is None, waiter.communicate()[0]
    return waiter


# --- the guard itself -------------------------------------------------------------------

HOLD = """
import sys, time
from distill.core.locks import single_writer
with single_writer(sys.argv[1], "the test output"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(lock: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)], cwd=REPO,
                               env=_env(), stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_held_lock_names_its_holder_and_a_waiter_gets_it_after(tmp_path):
    lock = tmp_path / "out" / ".lock"
    holder = _holder(lock, 1.0)
    with pytest.raises(OutputLockedError) as refused, single_writer(lock, "the test output"):
        pass
    message = str(refused.value)
    assert "\n" not in message
    assert f"pid {holder.pid} on host {HOST}" in message and "-c" in message
    notes: list[str] = []
    start = time.monotonic()
    with single_writer(lock, "the test output", wait=True, note=notes.append) as me:
        assert read_holder(lock) == me
        waited = time.monotonic() - start
    assert holder.wait(timeout=30) == 0
    assert waited >= 0.5  # it got the lock only once the holder let go
    assert notes and f"pid {holder.pid}" in notes[0]
    assert not lock.exists()  # released: removed, nothing left in the output


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    lock = tmp_path / ".lock"
    holder = _holder(lock, 60)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_holder(lock).pid == holder.pid  # its record is still there
    with single_writer(lock, "the test output") as me:
        assert read_holder(lock) == me


def test_a_record_from_another_host_is_refused_with_what_to_do(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": 4242, "host": "elsewhere", "command": "distill x",
                                "started": "2026-01-01T00:00:00+00:00"}))
    with pytest.raises(OutputLockedError, match=r"pid 4242 on host elsewhere.*another host.*"
                                                r"cannot be checked.*delete"), \
            single_writer(lock, "the test output"):
        pass
    with single_writer(lock, "a shard", refuse_other_hosts=False):  # inside a locked run
        pass


# --- the stages ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory) -> Path:
    return make_ingest(tmp_path_factory.mktemp("single") / "ingest", {"train": 60, "test": 40},
                       shard_size=20)


def test_two_generates_at_once(samples_dir, tmp_path, capfd):
    teachers = write_teachers(tmp_path / "t.yaml", {"knn": builtin_teacher("knn", k=2),
                                                    "logreg": builtin_teacher("logreg", k=1)})
    reference = tmp_path / "reference"
    assert main(["generate", "--samples", str(samples_dir), "--teachers", str(teachers),
                 "--out", str(reference)]) == 0
    out = tmp_path / "gen"
    args = ["generate", "--samples", str(samples_dir), "--teachers", str(teachers),
            "--out", str(out), "--flush-every", "1"]
    with frozen_holder(args, (out, ".lock")) as first:
        _second_run_refused(args, first, capfd)
        waiter = _waits(args)
    _finish(first)
    _finish(waiter)
    traces, rejects = read_outputs(out)
    keys = [t.trace_key for t in traces] + [r.key for r in rejects]
    ref_traces, ref_rejects = read_outputs(reference)
    assert len(keys) == len(set(keys)) == len(ref_traces) + len(ref_rejects)
    assert content_set(traces) == content_set(ref_traces)
    assert not leftovers(out) and not list(out.rglob("*.lock"))


def test_two_judges_at_once(samples_dir, tmp_path, capfd):
    """`distill judge` takes the same guard on its OUT as every stage."""
    from distill.generate.runner import GenerateOptions, run_generate
    from distill.schemas import Judgement, Rejection

    teachers = write_teachers(tmp_path / "t.yaml", {"knn": builtin_teacher("knn", k=1)})
    traces = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), traces))
    reference = tmp_path / "reference"
    assert main(["judge", "--traces", str(traces), "--judge", "digits",
                 "--out", str(reference)]) == 0
    out = tmp_path / "judged"
    args = ["judge", "--traces", str(traces), "--judge", "digits", "--out", str(out),
            "--flush-every", "1"]
    with frozen_holder(args, (out, ".lock")) as first:
        _second_run_refused(args, first, capfd)
        waiter = _waits(args)
    _finish(first)
    _finish(waiter)

    def keyed(folder: Path) -> tuple[list[str], set[str]]:
        judgements = [j for p in sorted(folder.glob("judgements/*/part-*.jsonl"))
                      for j in map(Judgement.model_validate_json, p.read_text().splitlines())]
        rejects = [r for p in sorted(folder.glob("rejects/*/part-*.jsonl"))
                   for r in map(Rejection.model_validate_json, p.read_text().splitlines())]
        keys = [j.judgement_key for j in judgements] + [r.key for r in rejects]
        return keys, {json.dumps(j.content_fields(), sort_keys=True) for j in judgements}

    keys, contents = keyed(out)
    ref_keys, ref_contents = keyed(reference)
    assert len(keys) == len(set(keys)) == len(ref_keys) == 100
    assert contents == ref_contents
    assert not leftovers(out) and not list(out.rglob("*.lock"))


def test_two_ingests_at_once(tmp_path, capfd):
    out = tmp_path / "ingest"
    args = ["ingest", "digits", "--counts", "train=300,test=20", "--shard-size", "50",
            "--out", str(out)]
    with frozen_holder(args, (tmp_path, ".ingest.lock")) as first:
        _second_run_refused(args, first, capfd)
        waiter = _waits([*args, "--overwrite"])
        assert not out.exists()  # nothing written by anyone yet but A's staging folder
    _finish(first)
    _finish(waiter)
    reference = tmp_path / "reference"
    assert main([*args[:-1], str(reference)]) == 0
    mine = read_manifest(out)
    assert [(s.name, s.sha256) for s in mine.shards] == \
        [(s.name, s.sha256) for s in read_manifest(reference).shards]
    ids = [s["id"] for ref in mine.shards
           for s in map(json.loads, (out / ref.name).read_text().splitlines())]
    assert len(ids) == len(set(ids)) == 320
    assert not lock_path_beside(out).exists() and not list(tmp_path.glob(".ingest.ingest-*"))


def read_manifest(folder: Path) -> StageManifest:
    return StageManifest.model_validate_json((folder / "manifest.json").read_text())


def test_two_evals_at_once(samples_dir, tmp_path, capfd):
    cache, results = tmp_path / "cache", tmp_path / "results"
    args = ["eval", "--model", "engine:builtin:knn", "--data", f"{samples_dir}:train",
            "--cache-dir", str(cache), "--out", str(results), "--chunk-size", "4"]
    with frozen_holder(args, (cache, "*/.lock")) as first:
        _second_run_refused(args, first, capfd)
        waiter = _waits(args)
    _finish(first)
    _finish(waiter)
    [folder] = [p for p in cache.iterdir() if p.is_dir()]
    hashes = [json.loads(line)["input_hash"] for shard in sorted(folder.glob("part-*.jsonl"))
              for line in shard.read_text().splitlines()]
    # Every item generated once, by A: C found them all in the cache, asked for none.
    assert len(hashes) == len(set(hashes)) == 60
    assert not list(folder.glob("*.partial")) and not lock_path_for(folder).exists()
    [result] = results.glob("*.json")  # the same result id: one file, written whole
    assert json.loads(result.read_text())["metrics"]["n"] == 60


TRAIN_ARGS = ["--config", "cot", "--set", "model=test-micro", "--set", "llm=full",
              "--set", "max_steps=6", "--set", "batch_size=4", "--set", "save_every=2",
              "--set", "threads=1", "--set", "log_every=1", "--set", "tensorboard=false"]


def test_two_trainings_at_once(tmp_path, capfd):
    from tests.train_support import make_dataset
    from tests.train_support import make_ingest as make_train_ingest

    dataset = make_dataset(make_train_ingest(tmp_path / "ingest", train=24, test=4),
                           tmp_path / "version")
    out = tmp_path / "run"
    args = ["train", *TRAIN_ARGS, "--data", str(dataset), "--out", str(out), "--resume"]
    with frozen_holder(args, (out, ".lock")) as first:
        _second_run_refused(args, first, capfd)
        waiter = _waits(args)
    _finish(first)
    _finish(waiter)
    reference = tmp_path / "reference"
    assert main([*args[:-3], "--out", str(reference)]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and len(steps) == 6
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*") if p.is_file())
    for name in ("final/model.safetensors",):
        assert (out / name).read_bytes() == (reference / name).read_bytes()


def test_a_planted_duplicate_is_repaired_by_generate(samples_dir, tmp_path):
    from distill.generate.runner import GenerateOptions, run_generate

    teachers = write_teachers(tmp_path / "t.yaml", {"knn": builtin_teacher("knn", k=2)})
    out = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), out))
    expected = content_set(read_outputs(out)[0])
    shard = sorted((out / "traces").glob("*/part-*.jsonl"))[1]
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:3] + [lines[1]] + lines[3:]))  # what two writers leave
    summary = run_generate(GenerateOptions(samples_dir, str(teachers), out))
    assert summary.duplicates_removed == 1 and summary.shards_reopened == 1
    assert summary.traces == 0  # nothing asked again: the shard was only repaired
    traces, _ = read_outputs(out)
    assert len({t.trace_key for t in traces}) == len(traces)
    assert content_set(traces) == expected


def test_a_planted_duplicate_is_refused_by_filter_with_its_location(samples_dir, tmp_path):
    from distill.core.errors import InputError
    from distill.filter.pipeline import FilterOptions, run_filter
    from distill.filter.policy import load_policy
    from distill.generate.runner import GenerateOptions, run_generate
    from distill.schemas import file_sha256

    teachers = write_teachers(tmp_path / "t.yaml", {"knn": builtin_teacher("knn", k=1)})
    out = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), out))
    shard = sorted((out / "traces").glob("*/part-*.jsonl"))[0]
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines + [lines[4]]))
    # The racing writers of old also wrote a manifest that matched the bytes on disk.
    manifest = json.loads((out / "manifest.json").read_text())
    for ref in manifest["shards"]:
        if out / ref["name"] == shard:
            ref["sha256"], ref["rows"] = file_sha256(shard), len(lines) + 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError) as refused:
        run_filter(FilterOptions(traces=out, store=tmp_path / "store", policy=load_policy()))
    assert refused.value.location == f"{shard}:{len(lines) + 1}"
    assert refused.value.reason == "duplicate_key" and "first written at line 5" in \
        str(refused.value)


def test_a_duplicate_in_a_committed_eval_cache_shard_is_refused(tmp_path):
    from distill.core.errors import InputError
    from distill.evaluate.cache import GenerationCache

    folder = tmp_path / "key"
    folder.mkdir()
    line = json.dumps({"input_hash": "h1", "sample_id": "s", "text": "x", "output_tokens": 1,
                       "latency_s": 0.0, "finish_reason": "stop"})
    (folder / "part-00000.jsonl").write_text(line + "\n" + line + "\n")
    with pytest.raises(InputError, match=r"part-00000.jsonl:2: field 'input_hash': duplicate"), \
            GenerationCache(tmp_path, "key", {}):
        pass
