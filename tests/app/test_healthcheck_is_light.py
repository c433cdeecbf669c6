"""The container's healthcheck runs every 15 s inside a 5 s timeout: it imports only its check,
never the service, and reads the migration state without alembic (the worker's connects as the
service does, through SQLAlchemy's core, so that its URL's options mean the same)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from alembic.script import ScriptDirectory

from database.migrate import alembic_config
from database.revisions import migration_revisions

ROOT = Path(__file__).resolve().parents[2]
SERVICES = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
# What the service imports and a healthcheck has no use for (seconds of CPU between them).
HEAVY = ("sqlalchemy", "alembic", "numpy", "jinja2", "fastapi", "uvicorn", "structlog", "database")
# The migration scripts read as text, and (the worker's) the database URL as the service reads
# it, connecting through SQLAlchemy's core.
LIGHT_OF_OURS = {"database", "database.revisions", "database.urls"}
ALLOWED = {"api": (), "worker": ("sqlalchemy",)}


def _healthcheck(service: str) -> list[str]:
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"], test
    return [sys.executable, *test[2:]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _imported(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, set[str]]:
    """The exit code of `command` run with -X importtime, and the modules it imported."""
    done = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert modules, done.stderr
    return done.returncode, modules


@pytest.mark.parametrize(
    ("service", "env"),
    [
        ("api", {"PORT": "1"}),  # nothing listens: not ready
        ("api", {}),  # PORT from the settings (.env), as `serve` reads it
        ("worker", {"ASSAY_DATABASE_URL": "postgresql://nobody@/none?host=/nonexistent"}),
    ],
)
def test_a_healthcheck_imports_none_of_the_service(tmp_path, service, env) -> None:
    (tmp_path / ".env").write_text("PORT=1\n")
    code, modules = _imported(_healthcheck(service), tmp_path, env)
    assert code == 1
    heavy = sorted(
        name
        for name in modules - LIGHT_OF_OURS
        if name.split(".")[0] in HEAVY and name.split(".")[0] not in ALLOWED[service]
    )
    assert not heavy, heavy
    assert len(modules) < 700, len(modules)  # the service: some 1,500


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health/ready" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def ready_api() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_http_healthcheck_asks_the_port_serve_listens_on(tmp_path, ready_api) -> None:
    """PORT from the environment (the image sets it), else from .env as `serve` reads it."""
    (tmp_path / ".env").write_text(f"PORT={ready_api}\n")
    assert _imported(_healthcheck("api"), tmp_path, {})[0] == 0
    assert _imported(_healthcheck("api"), tmp_path, {"PORT": str(ready_api)})[0] == 0
    assert _imported(_healthcheck("api"), tmp_path, {"PORT": str(_free_port())})[0] == 1


def test_the_migration_state_is_read_as_alembic_reads_it() -> None:
    head, known = migration_revisions()
    scripts = ScriptDirectory.from_config(alembic_config())
    assert head == scripts.get_current_head()
    assert known == {script.revision for script in scripts.walk_revisions()}


def test_two_heads_are_refused(tmp_path) -> None:
    for name, down in (("a", None), ("b", "a"), ("c", "a")):
        (tmp_path / f"{name}.py").write_text(
            f"revision: str = {name!r}\ndown_revision: str | None = {down!r}\n"
        )
    with pytest.raises(RuntimeError, match="2 heads"):
        migration_revisions(tmp_path)
    (tmp_path / "d.py").write_text('revision = "d"\ndown_revision = ("b", "c")\n')
    assert migration_revisions(tmp_path) == ("d", frozenset("abcd"))
