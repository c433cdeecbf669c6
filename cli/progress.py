"""What a followed run has done so far, and how it is shown: a redrawn progress bar in a
terminal, plain lines at a modest rate elsewhere (CI logs), nothing with --quiet."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from cli.stream import Event
from cli.terminal import cell

MAX_KEPT_FAILURES = 50
# Outside a terminal: a line when another tenth of the run is done, or this many seconds passed.
LINE_EVERY_SECONDS = 10.0


@dataclass
class Tally:
    """Counted from the run's events, each case (position, repetition) once."""

    total: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0
    cost: float = 0.0
    reconnects: int = 0
    started_at: float = field(default_factory=time.monotonic)
    seen: set[tuple[int, int]] = field(default_factory=set)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.passed + self.failed + self.errored

    def add(self, event: Event) -> bool:
        """Counts the event; False when it adds nothing (a result already counted)."""
        data = event.data
        if event.type == "run.started" or event.type in (
            "run.progress",
            "run.finished",
            "run.cancelled",
        ):
            self.total = int(data.get("total") or self.total)
        elif event.type == "result.recorded":
            key = (int(data["position"]), int(data["repetition"]))
            if key in self.seen:
                return False
            self.seen.add(key)
            status = data["status"]
            setattr(self, status, getattr(self, status) + 1)
            self.cost += float(data.get("cost") or 0.0)
            self.cost += sum(float(e.get("cost") or 0.0) for e in data.get("evaluations") or [])
            if status != "passed" and len(self.failures) < MAX_KEPT_FAILURES:
                self.failures.append(data)
        return True

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = max(self.total - self.done, 0)
        eta = f", ETA {left / rate:.0f}s" if rate > 0 and left else ""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        return (
            f"{self.done}/{self.total or '?'} cases{share}: {self.passed} passed,"
            f" {self.failed} failed, {self.errored} errored; {rate:.1f}/s{eta};"
            f" ${self.cost:.4f}"
        )


class Display(Protocol):
    def start(self, run: dict[str, Any]) -> None: ...
    def update(self, tally: Tally) -> None: ...
    def stop(self) -> None: ...


class BarDisplay:
    """A terminal: one redrawn bar with the counts, rate, ETA and cost."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]✓ {task.fields[passed]}[/] [red]✗ {task.fields[failed]}[/]"
                " [yellow]! {task.fields[errored]}[/]"
            ),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TimeRemainingColumn(),
            TextColumn("${task.fields[cost]:.4f}"),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, run: dict[str, Any]) -> None:
        self._progress.start()
        self._task = self._progress.add_task(
            cell(run.get("name") or "run"),
            total=None,
            passed=0,
            failed=0,
            errored=0,
            rate=0.0,
            cost=0.0,
        )

    def update(self, tally: Tally) -> None:
        assert self._task is not None
        self._progress.update(
            self._task,
            total=tally.total or None,
            completed=tally.done,
            passed=tally.passed,
            failed=tally.failed,
            errored=tally.errored,
            rate=tally.rate(),
            cost=tally.cost,
        )

    def stop(self) -> None:
        self._progress.stop()


class LineDisplay:
    """Not a terminal (a CI log): plain lines, no control characters, at a modest rate."""

    def __init__(self, console: Console, every: float = LINE_EVERY_SECONDS) -> None:
        self._console = console
        self._every = every
        self._last_time = 0.0
        self._last_tenth = -1
        self._last_done = -1
        self._tally: Tally | None = None

    def start(self, run: dict[str, Any]) -> None:
        self._last_time = time.monotonic()

    def update(self, tally: Tally) -> None:
        self._tally = tally
        tenth = 10 * tally.done // tally.total if tally.total else 0
        now = time.monotonic()
        if tenth > self._last_tenth or now - self._last_time >= self._every:
            self._emit(tally.line())
            self._last_tenth, self._last_time = tenth, now

    def stop(self) -> None:
        if self._tally is not None and self._tally.done != self._last_done:
            self._emit(self._tally.line())  # where it ended, if not said yet

    def _emit(self, line: str) -> None:
        assert self._tally is not None
        self._console.print(line, markup=False, highlight=False)
        self._last_done = self._tally.done


class QuietDisplay:
    def start(self, run: dict[str, Any]) -> None:
        pass

    def update(self, tally: Tally) -> None:
        pass

    def stop(self) -> None:
        pass


def display_for(console: Console, *, quiet: bool) -> Display:
    if quiet:
        return QuietDisplay()
    # A terminal's own, not Rich's word (FORCE_COLOR, set for a CI log's colours, makes it
    # say so): a redrawn bar in a log is control characters on every line.
    isatty = getattr(console.file, "isatty", None)
    interactive = console.is_terminal and callable(isatty) and isatty()
    return BarDisplay(console) if interactive else LineDisplay(console)
