"""Real processes on one data dir: one embedded server, one migration, one signing key."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest

from tests.e2e.servers import postmasters, server_env, start_server, wait_for_no_postmaster
from tests.helpers import PASSWORD

pytestmark = pytest.mark.slow


def _events(log: str) -> list[str]:
    events = []
    for line in log.splitlines():
        try:
            events.append(json.loads(line).get("event", ""))
        except json.JSONDecodeError:
            continue
    return events


def test_two_processes_on_one_data_dir_share_server_and_migrate_once(tmp_path):
    data_dir = tmp_path / "data"
    env = server_env(data_dir)
    servers = [start_server(env, tmp_path / f"server-{i}.log") for i in range(2)]
    try:
        for server in servers:
            health = server.wait_healthy().json()
            assert health["database"] == "ok"
            assert health["migration_revision"] == health["migration_head"]

        events = [_events(server.log()) for server in servers]
        applied = sum(e.count("migrations applied") for e in events)
        current = sum(e.count("database schema is current") for e in events)
        assert (applied, current) == (1, 1), [server.log() for server in servers]

        # One shared database and one generated signing key: a token from one works on the other.
        first, second = servers
        registered = httpx.post(
            f"{first.url}/api/v1/auth/register",
            json={"email": "shared@example.com", "password": PASSWORD, "name": "Shared"},
            timeout=10,
        )
        assert registered.status_code == 201, registered.text
        token = registered.json()["access_token"]
        me = httpx.get(
            f"{second.url}/api/v1/users/me",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert me.status_code == 200, me.text
        assert me.json()["email"] == "shared@example.com"
        assert (data_dir / "secret_key").stat().st_mode & 0o077 == 0
        # The first one out leaves the server to the other; the last one out stops it.
        first.stop()
        assert postmasters(data_dir), "the server stopped under a process still using it"
        assert second.wait_healthy().json()["database"] == "ok"
        second.stop()
        assert not wait_for_no_postmaster(data_dir), "the last process out left it running"
    finally:
        for server in servers:
            server.stop()


def test_sigterm_stops_the_embedded_server(tmp_path):
    data_dir = tmp_path / "data"
    server = start_server(server_env(data_dir), tmp_path / "server.log")
    try:
        server.wait_healthy()
        assert postmasters(data_dir)
    finally:
        server.stop()  # SIGTERM, as systemd, timeout and IDEs send
    assert not wait_for_no_postmaster(data_dir), server.log()[-2000:]


def test_after_a_sigkill_the_next_start_serves_and_stops_cleanly(tmp_path):
    data_dir = tmp_path / "data"
    env = server_env(data_dir)
    killed = start_server(env, tmp_path / "killed.log")
    killed.wait_healthy()
    killed.process.kill()
    killed.process.wait()
    assert postmasters(data_dir), "a SIGKILLed owner cannot stop its server"
    again = start_server(env, tmp_path / "again.log")
    try:
        assert again.wait_healthy().json()["database"] == "ok"
    finally:
        again.stop()
    # The dead owner's id was pruned at start: the last live process out stopped the server.
    assert not wait_for_no_postmaster(data_dir), again.log()[-2000:]


def test_production_mode_refuses_to_start_without_a_secret_key(tmp_path):
    env = server_env(tmp_path / "data", ASSAY_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    server = start_server(env, tmp_path / "server.log")
    try:
        code = server.process.wait(60)
    finally:
        server.stop()
    assert code != 0
    assert "ASSAY_SECRET_KEY" in server.log()


def test_a_dead_embedded_postgres_is_started_again_and_the_service_recovers(tmp_path):
    data_dir = tmp_path / "data"
    server = start_server(server_env(data_dir), tmp_path / "server.log")
    try:
        server.wait_healthy()
        [postmaster] = postmasters((data_dir / "pgdata").resolve())
        postmaster.send_signal(signal.SIGKILL)
        postmaster.wait(10)
        statuses = []  # while it is down, /health says so
        for _ in range(20):
            statuses.append(httpx.get(f"{server.url}/health", timeout=10).status_code)
            if statuses[-1] == 503:
                break
            time.sleep(0.1)
        assert 503 in statuses, statuses
        deadline = time.monotonic() + 60
        while (health := httpx.get(f"{server.url}/health", timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.5)
        [again] = postmasters((data_dir / "pgdata").resolve())
        assert again.pid != postmaster.pid
        registered = httpx.post(
            f"{server.url}/api/v1/auth/register",
            json={"email": "after@example.com", "password": PASSWORD, "name": "After"},
            timeout=30,
        )
        assert registered.status_code == 201, registered.text
        # The restart's log line follows the restart itself: the server may already answer.
        restarted = "the embedded PostgreSQL had stopped: started it again"
        deadline = time.monotonic() + 10
        while restarted not in _events(server.log()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert restarted in _events(server.log())
        assert health.json()["database"] == "ok"
    finally:
        server.stop()
    assert wait_for_no_postmaster((data_dir / "pgdata").resolve()) == []
