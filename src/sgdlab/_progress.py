"""A rich progress bar of a run's steps on stderr (shown on a terminal or in a notebook)."""

from __future__ import annotations

import sys
import time

from rich.console import Console

__all__ = ["ProgressBar", "progress_callback"]


class ProgressBar:
    """``bar(steps_done)`` updates the bar, started at the first report; ``close()`` removes it.
    When stderr is neither a terminal nor a notebook the bar is disabled (every call a no-op),
    or with ``log`` a plain line ``DESCRIPTION: N of TOTAL steps`` is printed at the first
    report and then at most every ``interval`` seconds (batch logs)."""

    def __init__(self, total: int, description: str, *, log: bool = False, interval: float = 30.0) -> None:
        self.total, self.description = total, description
        self.console = Console(stderr=True)
        self.enabled = self.console.is_terminal or self.console.is_jupyter
        self.log = log and not self.enabled
        self.interval, self.last = interval, -float("inf")
        self.progress = None
        self.task = None

    def __call__(self, done: int) -> None:
        if self.log and time.monotonic() - self.last >= self.interval:
            self.last = time.monotonic()
            print(f"{self.description}: {done} of {self.total} steps", file=sys.stderr, flush=True)
        if not self.enabled:
            return
        if self.progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("steps, ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=self.total)
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def progress_callback(progress, total: int, description: str):
    """The callback of ``run(progress=...)``: a :class:`ProgressBar` for ``True``, ``None`` for
    ``None`` or ``False``, a callable as given."""
    if progress is True:
        return ProgressBar(total, description)
    return None if progress is False or progress is None else progress
