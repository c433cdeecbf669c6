"""The files of prometheus' multiprocess mode: what an earlier process left is forgotten when
it would be wrong (live gauges of the dead, a previous process with this very name), kept when
it is history (counters), and the directories of earlier boots go."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from utils import metrics as metrics_module
from utils.config import Settings

HOST = socket.gethostname()
DEAD = 2**22 + 12345  # above the usual pid_max: no such process


@pytest.fixture
def restore() -> Iterator[None]:
    yield
    metrics_module.configure(None)


def test_configure_keeps_history_and_forgets_what_would_be_wrong(tmp_path: Path, restore):
    current = tmp_path / "boot-b"
    current.mkdir()
    earlier_boot = tmp_path / "boot-a"
    earlier_boot.mkdir()
    (earlier_boot / f"counter_{HOST}-1.db").write_bytes(b"x")
    files = {
        "own": current / f"counter_{HOST}-{os.getpid()}.db",
        "own_gauge": current / f"gauge_livesum_{HOST}-{os.getpid()}.db",
        "dead_gauge": current / f"gauge_livesum_{HOST}-{DEAD}.db",
        "dead_counter": current / f"counter_{HOST}-{DEAD}.db",
        "other_host_gauge": current / f"gauge_livesum_elsewhere-{DEAD}.db",
    }
    for path in files.values():
        path.write_bytes(b"x")

    configured = metrics_module.configure(current, forget_siblings=True)

    # (This process's own files are there again, but its own: started empty.)
    left = {name for name, path in files.items() if path.exists() and path.read_bytes() == b"x"}
    assert left == {"dead_counter", "other_host_gauge"}
    assert not earlier_boot.exists()
    # This process writes there now, and a scrape reads it (without the stand-ins above).
    for name in left:
        files[name].unlink()
    configured.cases.labels("passed").inc(3)
    assert b'assay_cases_total{status="passed"} 3.0' in configured.render()


def test_development_mode_keeps_one_metrics_directory_per_boot(tmp_path: Path):
    embedded = Settings(data_dir=tmp_path)
    directory = embedded.metrics_directory
    assert directory is not None and directory.parent == tmp_path / "metrics"
    assert directory.name == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    production = Settings(data_dir=tmp_path, database_url="postgresql://x@h/db")
    assert production.metrics_directory is None
    shared = Settings(database_url="postgresql://x@h/db", metrics_dir=tmp_path / "m")
    assert shared.metrics_directory == tmp_path / "m"
