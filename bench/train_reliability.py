"""The hostile and unlucky cases of issue 34 for `distill train`, each tried once and
counted: damaged checkpoints, finished runs resumed with another recipe, two writers on one
run folder, SIGKILL during a save, bad options. Prints one line per case (held, or broke
and how) and the totals; RELIABILITY.md records them.

A case holds when it ends as the issue asks:
* a damaged newest checkpoint: the resume skips it, says which and why, and reaches the
  final weights of an uninterrupted run, byte for byte; every checkpoint damaged: exit 2
  with one `error:` line naming the file; never a traceback, never other weights;
* a finished run resumed with another max_steps or dataset: refused in one line (the same
  recipe: exit 0, saying it is done, nothing rewritten);
* a second writer: exit 2 naming the holder, or waiting with --wait; nothing of the
  first run's deleted; every step logged once; final weights equal a single run's;
* a bad option: exit 2, one line naming the field.

    python bench/train_reliability.py                 # every case (~5 min on 2 cores)
    python bench/train_reliability.py --only options  # checkpoints | finished | writers | options
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("DISTILL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from testing.train_fixtures import write_dataset_version  # noqa: E402
from testing.train_hostile import (  # noqa: E402
    BAD_OPTIONS,
    CHECKPOINT_DAMAGE,
    damage,
    distill_process,
    error_lines,
    final_weights,
    finished_run,
    frozen_when_locked,
    kill_during_save,
    run_cli,
    stop_session,
    stopped_copy,
    train_args,
)

torch.set_num_threads(1)
RESULTS: list[tuple[str, str, bool, str]] = []  # (group, case, held, how)
ONLY_CASE = ""  # --case


def record(group: str, case: str, held: bool, how: str) -> None:
    RESULTS.append((group, case, held, how))
    print(f"{'held ' if held else 'BROKE'}  {group:11s} {case}: {how}", flush=True)


def attempt(group: str, case: str, body: Callable[[], tuple[bool, str]]) -> None:
    if ONLY_CASE and ONLY_CASE not in case:
        return
    try:
        held, how = body()
    except BaseException as exc:  # noqa: BLE001 - a traceback is the finding
        held, how = False, f"traceback: {type(exc).__name__}: {str(exc)[:120]}"
        if os.environ.get("DEBUG"):
            traceback.print_exc()
    record(group, case, held, how)


def one_line(code: int, text: str, *names: str) -> tuple[bool, str]:
    """Exit 2 with exactly one error line that names one of ``names``."""
    errors = error_lines(text)
    if "Traceback" in text:
        return False, "traceback in the output"
    if code != 2 or len(errors) != 1:
        return False, f"exit {code}, {len(errors)} error line(s): {text.strip()[-160:]}"
    named = any(name in errors[0] for name in names)
    return named, errors[0][:200] if named else f"names none of {names}: {errors[0][:160]}"


# --- data and the reference run ------------------------------------------------------------


def make_data(root: Path) -> dict[str, Path]:
    from distill.ingest.pipeline import IngestOptions, ingest
    from distill.ingest.sources.digits import DigitsConfig, iter_digits

    ingest(iter_digits(DigitsConfig(seed=0, counts={"train": 24, "test": 4})),
           IngestOptions(out=root / "ingest"))
    return {"data": write_dataset_version(root / "ingest", root / "version"),
            "other": write_dataset_version(root / "ingest", root / "version-b", limit=20)}


# --- checkpoints ---------------------------------------------------------------------------


def checkpoint_cases(root: Path, data: Path, reference: Path) -> None:
    expected = final_weights(reference)
    for every in (False, True):
        for kind in CHECKPOINT_DAMAGE:
            case = f"{kind}{' (every checkpoint)' if every else ''}"

            def body(kind: str = kind, every: bool = every) -> tuple[bool, str]:
                run = stopped_copy(reference, root / "ck")
                try:
                    damaged = damage(run, kind, every=every)
                    code, text = run_cli(train_args(data, run, resume=True))
                    if code == 0:
                        if final_weights(run) != expected:
                            return False, "exit 0 with other final weights (trained on it)"
                        if every:
                            return False, "exit 0 though no checkpoint was whole"
                        said = damaged[0].name in text and "skip" in text
                        return said, ("resumed from the older checkpoint, said why, same "
                                      "weights" if said else "skipped it without a word")
                    return one_line(code, text, *(str(d) for d in damaged))
                finally:
                    shutil.rmtree(run, ignore_errors=True)

            attempt("checkpoint", case, body)


# --- finished runs resumed with another recipe ---------------------------------------------


def finished_cases(root: Path, data: Path, other: Path, reference: Path) -> None:
    def resumed(sets: list[str], data_path: Path, same: bool) -> tuple[bool, str]:
        run = root / "fin"
        shutil.copytree(reference, run)
        try:
            before = final_weights(run)
            code, text = run_cli(train_args(data_path, run, *sets, resume=True))
            if final_weights(run) != before:
                return False, "the final model was rewritten"
            if same:
                ok = code == 0 and "already finished" in text
                return ok, "exit 0, said it is done" if ok else f"exit {code}: {text[-160:]}"
            return one_line(code, text, str(run))
        finally:
            shutil.rmtree(run, ignore_errors=True)

    attempt("finished", "--resume, the same recipe", lambda: resumed([], data, True))
    attempt("finished", "--resume with another max_steps",
            lambda: resumed(["max_steps=8"], data, False))
    attempt("finished", "--resume with another lr", lambda: resumed(["lr=0.01"], data, False))
    attempt("finished", "--resume on another dataset version",
            lambda: resumed([], other, False))

    def unfinished() -> tuple[bool, str]:
        run = stopped_copy(reference, root / "unf")
        try:
            return one_line(*run_cli(train_args(data, run, "max_steps=8", resume=True)),
                            str(run))
        finally:
            shutil.rmtree(run, ignore_errors=True)

    attempt("finished", "an unfinished run, --resume with another max_steps", unfinished)


# --- two writers ---------------------------------------------------------------------------


def writer_cases(root: Path, data: Path, reference: Path) -> None:
    slow = ["max_steps=6", "save_every=2"]  # A's recipe; B and C the same

    def second_refused(a_args: list[str], b_args: list[str], folder: Path,
                       a_run: Path | None) -> tuple[bool, str]:
        a = distill_process(a_args, root / "a.log")
        try:
            with frozen_when_locked(a, folder) as holder:
                before = set(_files(folder))
                b = distill_process(b_args, root / "b.log")
                try:
                    b.wait(timeout=240)
                except Exception:  # noqa: BLE001 - a B that does not stop is the finding
                    stop_session(b)
                    return False, "B kept running beside A"
                text = (root / "b.log").read_text()
                after = set(_files(folder, locks=True))
                if before - after:
                    return False, f"B deleted A's files: {sorted(map(str, before - after))[:2]}"
                held, how = one_line(b.returncode, text, f"pid {holder}")
            if a.wait(timeout=300) != 0:
                return False, f"A failed after B: {(root / 'a.log').read_text()[-200:]}"
            if a_run is not None and final_weights(a_run) != final_weights(reference):
                return False, "A's final weights differ from a single run's"
            return held, how
        finally:
            stop_session(a)

    def case(name: str, a_of: Callable[[Path], list[str]], b_of: Callable[[Path], list[str]],
             a_run: Callable[[Path], Path | None]) -> None:
        def body() -> tuple[bool, str]:
            folder = root / "w"
            shutil.rmtree(folder, ignore_errors=True)
            try:
                return second_refused(a_of(folder), b_of(folder), folder, a_run(folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        attempt("writers", name, body)

    def plain(out: Path, resume: bool = False) -> list[str]:
        return train_args(data, out, *slow, resume=resume)

    def seeds(out: Path) -> list[str]:
        return [*train_args(data, out, *slow), "--seeds", "0"]

    case("two `train --resume` on one --out", lambda f: plain(f, resume=True),
         lambda f: plain(f, resume=True), lambda f: f)
    case("`train` then `train --resume` on one --out", lambda f: plain(f),
         lambda f: plain(f, resume=True), lambda f: f)
    case("two `train --seeds 0` on one --out", seeds, seeds, lambda f: f / "seed-0")
    case("`train --seeds 0 --out S` beside `train --out S/seed-0`",
         lambda f: plain(f / "seed-0"), seeds, lambda f: f / "seed-0")
    case("`train --out S/seed-0 --resume` beside `train --seeds 0 --out S`",
         seeds, lambda f: plain(f / "seed-0", resume=True), lambda f: f / "seed-0")
    case("`train --out S` beside `train --seeds 0 --out S`", seeds, lambda f: plain(f),
         lambda f: f / "seed-0")
    case("two stage-0 (vision) runs on one --out",
         lambda f: ["train", "--config", "vision", "--out", str(f), "--set", "model=test-micro",
                    "--set", "vision_steps=40", "--set", "vision_batch_size=8",
                    "--set", "threads=1"],
         lambda f: ["train", "--config", "vision", "--out", str(f), "--set", "model=test-micro",
                    "--set", "vision_steps=40", "--set", "vision_batch_size=8",
                    "--set", "threads=1", "--resume"], lambda f: None)
    attempt("writers", "lock file deleted under a running run, a second run started",
            lambda: lock_deleted(root, data, reference))
    for name, args_of, observe_s in (("plain", lambda f: plain(f, resume=True), 30),
                                     ("--seeds", seeds, 120)):
        attempt("writers", f"`--wait` waits ({name})",
                lambda args_of=args_of, observe_s=observe_s: waits(root, args_of, reference,
                                                                   observe_s))
    attempt("writers", "SIGKILL during a checkpoint save, then --resume",
            lambda: killed_in_save(root, data, reference))
    attempt("writers", "SIGKILL of the holder, then a second run resumes",
            lambda: holder_killed(root, data, reference))


def waits(root: Path, args_of: Callable[[Path], list[str]], reference: Path,
          observe_s: float) -> tuple[bool, str]:
    folder = root / "wait"
    shutil.rmtree(folder, ignore_errors=True)
    a = distill_process(args_of(folder), root / "a.log")
    c = None
    try:
        with frozen_when_locked(a, folder):
            before = _files(folder, locks=True)
            c = distill_process([*args_of(folder), "--wait"], root / "c.log")
            # long enough for C to start, and a --seeds C's jobs too, on a loaded box
            deadline = time.monotonic() + observe_s
            while time.monotonic() < deadline:
                if c.poll() is not None:
                    return False, f"C did not wait: exit {c.returncode}, " \
                                  f"{(root / 'c.log').read_text()[-160:]}"
                if _files(folder, locks=True) != before:
                    return False, "C wrote, deleted or replaced files while A held the folder"
                time.sleep(0.05)
        if a.wait(timeout=300) != 0 or c.wait(timeout=300) != 0:
            return False, f"exit A {a.returncode}, C {c.returncode}"
        run = folder / "seed-0" if (folder / "seed-0").exists() else folder
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text()
                 .splitlines()]
        if steps != sorted(set(steps)) or final_weights(run) != final_weights(reference):
            return False, f"steps logged {steps}; weights equal: " \
                          f"{final_weights(run) == final_weights(reference)}"
        return True, "C waited, then found the run finished; each step logged once"
    finally:
        stop_session(a)
        if c is not None:
            stop_session(c)
        shutil.rmtree(folder, ignore_errors=True)


def _files(folder: Path, locks: bool = False) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and inode (lock files only if asked: a
    waiter may create its own beside a folder, never replace the holder's)."""
    found = {}
    for path in folder.rglob("*"):
        try:
            if path.is_file() and (locks or path.name != ".lock"):
                info = path.stat()
                found[str(path)] = (info.st_size, info.st_ino)
        except FileNotFoundError:
            continue
    return found


def lock_deleted(root: Path, data: Path, reference: Path) -> tuple[bool, str]:
    """A holds the lock (frozen); its lock file is deleted; B (--resume) starts; A goes
    on. One of them may write from then on, never both."""
    folder = root / "lost"
    shutil.rmtree(folder, ignore_errors=True)
    args = train_args(data, folder, "max_steps=40", "save_every=2", resume=True)
    a = distill_process(args, root / "a.log")
    b = None
    try:
        with frozen_when_locked(a, folder):
            (folder / ".lock").unlink()
            b = distill_process(args, root / "b.log")
            deadline = time.monotonic() + 240
            while not (folder / "metrics.jsonl").exists() and b.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        codes = sorted([a.wait(timeout=300), b.wait(timeout=300)])
        steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text()
                 .splitlines()]
        said = (root / "a.log").read_text()
        if steps != sorted(set(steps)) or final_weights(folder) is None:
            return False, f"exit codes {codes}; steps logged {steps[:12]}..."
        if codes == [0, 2] and "deleted or replaced" in said:
            return True, "A stopped at its next write, naming its lost lock; B trained alone"
        if codes == [0, 0] and "already finished" in said:
            return True, "B trained alone; A, let go, found the run finished and wrote nothing"
        return False, f"exit codes {codes}: {said[-160:]}"
    finally:
        stop_session(a)
        if b is not None:
            stop_session(b)
        shutil.rmtree(folder, ignore_errors=True)


def killed_in_save(root: Path, data: Path, reference: Path) -> tuple[bool, str]:
    run = root / "kill"
    shutil.rmtree(run, ignore_errors=True)
    try:
        if not kill_during_save(train_args(data, run), run, root / "k.log"):
            return False, "no save was caught (the run ended first)"
        code, text = run_cli(train_args(data, run, resume=True))
        same = code == 0 and final_weights(run) == final_weights(reference)
        return same, "final weights byte-identical" if same else f"exit {code}: {text[-160:]}"
    finally:
        shutil.rmtree(run, ignore_errors=True)


def holder_killed(root: Path, data: Path, reference: Path) -> tuple[bool, str]:
    run = root / "held"
    shutil.rmtree(run, ignore_errors=True)
    a = distill_process(train_args(data, run), root / "a.log")
    try:
        with frozen_when_locked(a, run):
            pass
        while a.poll() is None and not list(run.glob("checkpoint-*")):
            time.sleep(0.01)
        stop_session(a)
        code, text = run_cli(train_args(data, run, resume=True))
        same = code == 0 and final_weights(run) == final_weights(reference)
        return same, "took the lock over, same final weights" if same else \
            f"exit {code}: {text[-160:]}"
    finally:
        stop_session(a)
        shutil.rmtree(run, ignore_errors=True)


# --- options -------------------------------------------------------------------------------

def in_child(work: Callable[[], tuple[int, str]], timeout: float = 180) -> tuple[int, str]:
    """``work()`` in a forked child (a case that crashes the interpreter, or runs without
    end, is counted rather than taking this script down): its (code, text), or (-1, how
    it broke)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(work())
        except BaseException as exc:  # noqa: BLE001 - the traceback is the finding
            send.send((-1, f"traceback: {type(exc).__name__}: {str(exc)[:120]}"))

    process = context.Process(target=child)
    process.start()
    deadline = time.monotonic() + timeout
    result = None
    while result is None and time.monotonic() < deadline:
        if receive.poll(0.2):
            result = receive.recv()
        elif not process.is_alive():
            process.join()
            result = (-1, f"the process died (exit code {process.exitcode}), no traceback")
    if process.is_alive():
        process.kill()
    process.join()
    return result or (-1, f"still running after {timeout:.0f} s")


def option_cases(root: Path, data: Path) -> None:
    for options, field in BAD_OPTIONS:
        def body(options: list[str] = options, field: str = field) -> tuple[bool, str]:
            out = root / "opt"
            shutil.rmtree(out, ignore_errors=True)
            try:
                code, text = in_child(lambda: run_cli([*train_args(data, out), *options]))
                if code == -1:
                    return False, text
                return one_line(code, text, field)
            finally:
                shutil.rmtree(out, ignore_errors=True)
        attempt("options", " ".join(options), body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["checkpoints", "finished", "writers", "options"])
    parser.add_argument("--case", help="only the cases whose name holds this text")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    global ONLY_CASE
    ONLY_CASE = args.case or ""
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="train-hostile-") as tmp:
        root = Path(tmp)
        paths = make_data(root)
        reference = finished_run(paths["data"], root / "reference")
        groups = {
            "checkpoints": lambda: checkpoint_cases(root, paths["data"], reference),
            "finished": lambda: finished_cases(root, paths["data"], paths["other"], reference),
            "writers": lambda: writer_cases(root, paths["data"], reference),
            "options": lambda: option_cases(root, paths["data"]),
        }
        for name, run in groups.items():
            if args.only in (None, name):
                run()
    print(f"\n{len(RESULTS)} cases, {sum(r[2] for r in RESULTS)} held, "
          f"{sum(not r[2] for r in RESULTS)} broke ({time.time() - started:.0f} s)")
    for group in dict.fromkeys(r[0] for r in RESULTS):
        rows = [r for r in RESULTS if r[0] == group]
        print(f"  {group}: {len(rows)} tried, {sum(r[2] for r in rows)} held")
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("group", "case", "held", "how"), r,
                                                  strict=True)) for r in RESULTS], indent=1))


if __name__ == "__main__":
    main()
