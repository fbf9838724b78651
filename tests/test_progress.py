"""Progress in a log file: whole lines (never the fragments a live bar leaves in a file),
throttled, with a rate that ignores a resumed job's jump; tables never cut at 80 columns."""

from __future__ import annotations

import os

import pytest

from distill.core import progress
from distill.core.progress import LineBar, console, progress_bar, progress_mode


def test_a_log_file_gets_whole_lines_throttled_and_a_last_one(monkeypatch, capsys):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = LineBar("train direct-equal-time", total=2000, unit="steps", every=30)
    bar.advance(400)  # a resumed run jumps to its checkpoint: not part of the rate
    for _ in range(10):
        clock[0] += 2.0
        bar.advance(20)  # 10 steps/s
    assert capsys.readouterr().err == ""  # 20 s: under the 30 s between lines
    bar.note("loss 0.1234  5,678 tok/s")
    clock[0] += 12.0
    bar.advance(120)
    line = capsys.readouterr().err.strip()
    assert line == ("train direct-equal-time: 720/2,000 steps, 10.0 steps/s, 0:00:32 elapsed, "
                    "eta 0:02:08  loss 0.1234  5,678 tok/s")
    bar.close()
    assert capsys.readouterr().err.strip().startswith(
        "train direct-equal-time: 720/2,000 steps, 10.0 steps/s, 0:00:32 elapsed, done")


def test_progress_modes(monkeypatch):
    monkeypatch.setenv("DISTILL_PROGRESS", "0")
    assert progress_mode() == "off"
    monkeypatch.setenv("DISTILL_PROGRESS", "lines")
    assert progress_mode() == "lines"
    monkeypatch.setenv("DISTILL_PROGRESS", "1")
    assert progress_mode() == ("live" if console.is_terminal else "lines")


def test_a_bar_in_a_log_file_prints_its_last_line_whole(monkeypatch, capsys):
    monkeypatch.setenv("DISTILL_PROGRESS", "lines")
    note = "loss 0.0123  " + "x" * 150  # wider than any terminal default
    with progress_bar("train cot", total=800, unit="steps") as bar:
        bar.advance(800)
        bar.note(note)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train cot: 800/800 steps")
    assert note in err and "…" not in err


@pytest.mark.skipif(console.is_terminal, reason="the width rule is for log files")
def test_tables_in_a_log_file_are_not_cut_at_80_columns():
    assert console.width >= 160 or "COLUMNS" in os.environ
