"""One progress style for every long job: count, rate, elapsed and ETA, on stderr.

On a terminal, live bars (rich). In a log file (stderr not a terminal, or
``DISTILL_PROGRESS=lines``), whole lines instead: one per bar every ``LINE_EVERY_S``
seconds and one when it ends, never cut (a live bar rendered into a file left fragments
like ``800/… 1.8 0:06…``). ``DISTILL_PROGRESS=0``: silent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from distill.core.formatting import plain  # noqa: F401 - the one name printer, used here

console = Console(stderr=True)
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = 160  # a log file: tables are never cut at rich's default 80 columns

LINE_EVERY_S = 30.0


class RateColumn(ProgressColumn):
    """Items per second in the unit of the task (traces/s, samples/s, ...)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "it")
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {unit}/s" if speed else f"-- {unit}/s", style="cyan")


class Bar:
    """Handle returned by ``progress_bar``: ``advance``, ``note`` (extra text), ``set_total``.
    The base class is silent."""

    def advance(self, amount: float = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def set_total(self, total: float | None) -> None:
        pass

    def close(self) -> None:
        pass


class LiveBar(Bar):
    def __init__(self, progress: Progress, task_id: int) -> None:
        self._progress, self._task_id = progress, task_id

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task_id, amount)

    def note(self, text: str) -> None:
        self._progress.update(self._task_id, note=text)

    def set_total(self, total: float | None) -> None:
        self._progress.update(self._task_id, total=total)


class LineBar(Bar):
    """Progress as whole lines: at most one per ``every`` seconds, and a last one on close.
    The rate counts from the first update (a resumed job starts past zero)."""

    def __init__(self, description: str, total: float | None, unit: str,
                 every: float = LINE_EVERY_S) -> None:
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.count = 0.0
        self._note = ""
        self._started = time.monotonic()
        self._first: tuple[float, float] | None = None  # (time, count) at the first update
        self._printed = self._started

    def advance(self, amount: float = 1) -> None:
        now = time.monotonic()
        self.count += amount
        if self._first is None:  # the origin of the rate (after a resumed job's jump)
            self._first = (now, self.count)
        at_end = self.total is not None and self.count >= self.total  # close() prints it
        if now - self._printed >= self.every and not at_end:
            self._print(now)

    def note(self, text: str) -> None:
        self._note = text

    def set_total(self, total: float | None) -> None:
        self.total = total

    def close(self) -> None:
        self._print(time.monotonic(), done=True)

    def line(self, now: float, done: bool = False) -> str:
        elapsed = now - self._started
        count = f"{self.count:,.0f}" + (f"/{self.total:,.0f}" if self.total else "")
        parts = [f"{self.description}: {count} {self.unit}"]
        rate = None
        if self._first is not None and now > self._first[0]:
            rate = (self.count - self._first[1]) / (now - self._first[0])
        if rate:
            parts.append(f"{rate:,.1f} {self.unit}/s")
        parts.append(f"{_clock(elapsed)} elapsed")
        if not done and rate and self.total:
            parts.append(f"eta {_clock((self.total - self.count) / rate)}")
        if done:
            parts.append("done")
        text = ", ".join(parts)
        return f"{text}  {self._note}" if self._note else text

    def _print(self, now: float, done: bool = False) -> None:
        self._printed = now
        console.print(self.line(now, done), highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_mode() -> str:
    """``live`` (a terminal), ``lines`` (a log file), or ``off``."""
    setting = os.environ.get("DISTILL_PROGRESS", "1")
    if setting == "0":
        return "off"
    if setting == "lines" or not console.is_terminal:
        return "lines"
    return "live"


def progress_enabled() -> bool:
    return progress_mode() != "off"


class Bars:
    """Several bars shown together (e.g. students training side by side)."""

    def __init__(self, progress: Progress | None, mode: str) -> None:
        self._progress, self._mode = progress, mode
        self._bars: list[Bar] = []

    def add(self, description: str, total: float | None = None, unit: str = "it") -> Bar:
        if self._mode == "live":
            bar: Bar = LiveBar(self._progress, self._progress.add_task(
                description, total=total, unit=unit, note=""))
        elif self._mode == "lines":
            bar = LineBar(description, total, unit)
        else:
            bar = Bar()
        self._bars.append(bar)
        return bar


@contextmanager
def progress_bars() -> Iterator[Bars]:
    """A group of bars; each ``Bars.add`` is one job. Lines end when the group ends."""
    mode = progress_mode()
    if mode != "live":
        bars = Bars(None, mode)
        try:
            yield bars
        finally:
            for bar in bars._bars:
                bar.close()
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        yield Bars(progress, mode)


@contextmanager
def progress_bar(description: str, total: float | None = None, unit: str = "it") -> Iterator[Bar]:
    """One bar: live on a terminal, lines in a log file, silent with DISTILL_PROGRESS=0."""
    with progress_bars() as bars:
        yield bars.add(description, total, unit)
