"""One progress bar style for every long job: count, rate, elapsed and ETA, on stderr."""

from __future__ import annotations

import os
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

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second in the unit of the task (traces/s, samples/s, ...)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "it")
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {unit}/s" if speed else f"-- {unit}/s", style="cyan")


class Bar:
    """Handle returned by ``progress_bar``: ``advance`` and ``note`` (extra text)."""

    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None and self._task_id is not None:
            self._progress.advance(self._task_id, amount)

    def note(self, text: str) -> None:
        if self._progress is not None and self._task_id is not None:
            self._progress.update(self._task_id, note=text)

    def set_total(self, total: float | None) -> None:
        if self._progress is not None and self._task_id is not None:
            self._progress.update(self._task_id, total=total)


def progress_enabled() -> bool:
    return os.environ.get("DISTILL_PROGRESS", "1") != "0"


@contextmanager
def progress_bar(description: str, total: float | None = None, unit: str = "it") -> Iterator[Bar]:
    """A live bar on a terminal; silent when stderr is not a terminal or DISTILL_PROGRESS=0."""
    if not progress_enabled():
        yield Bar(None, None)
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
        task_id = progress.add_task(description, total=total, unit=unit, note="")
        yield Bar(progress, task_id)
