"""PostgreSQL's CPU time over a stretch of a benchmark, its sessions' apart from its background
processes' (see DatabaseCpu)."""

from __future__ import annotations

import re
from pathlib import Path

import psutil

# A session's process title: "postgres: <role> <database> <[local] or host(port)> <state>".
SESSION = re.compile(r"^postgres: \S+ \S+ (\[local\]|\S+\(\d+\))")


def postmaster(data_dir: Path) -> psutil.Process:
    """The embedded PostgreSQL's postmaster (its pid is the first line of postmaster.pid)."""
    pid_file = data_dir / "db" / "pgdata" / "postmaster.pid"
    return psutil.Process(int(pid_file.read_text().split()[0]))


class DatabaseCpu:
    """PostgreSQL's CPU seconds over a phase, in two parts. The sessions: the statements the
    server sent. The background: I/O workers (PostgreSQL 18 reads pages for the sessions in
    them), checkpointer, writers, autovacuum, the postmaster; they work when the data written
    so far calls for it, whatever phase is running then, so they are kept apart from the
    sessions'. Processes that ended count too (the postmaster has reaped them: their time is
    its children's); short-lived background ones are seen by sampling (`read` every 0.1 s),
    and the last moments of their lives count as sessions' time."""

    def __init__(self, postmaster: psutil.Process) -> None:
        self.postmaster = postmaster
        self._first: dict[int, float] = {}  # background process -> its CPU seconds first seen
        self._last: dict[int, float] = {}
        self._beginning = False

    def begin(self) -> float:
        self._first, self._last, self._beginning = {}, {}, True
        try:
            return self.read()
        finally:
            self._beginning = False

    def read(self) -> float:
        """Every PostgreSQL process's CPU seconds so far."""
        times = self.postmaster.cpu_times()
        seconds = times.user + times.system + times.children_user + times.children_system
        self._seen(self.postmaster.pid, times.user + times.system)
        for process in self.postmaster.children():
            try:
                used = sum(process.cpu_times()[:2])
                title = " ".join(process.cmdline())
            except psutil.NoSuchProcess:
                continue  # ended meanwhile: counted among the reaped next time
            seconds += used
            if not SESSION.search(title):
                self._seen(process.pid, used)
        return seconds

    def _seen(self, pid: int, used: float) -> None:
        self._first.setdefault(pid, used if self._beginning else 0.0)
        self._last[pid] = used

    @property
    def background(self) -> float:
        return sum(self._last[pid] - self._first[pid] for pid in self._last)
