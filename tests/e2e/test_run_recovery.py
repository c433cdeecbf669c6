"""Runs survive what production throws at them: a worker process killed with SIGKILL mid-run,
and the database restarting under a running run. Real uvicorn processes, a fake provider."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from database import embedded
from database.core import asyncpg_connect_args
from tests.e2e.servers import Server, create_run, server_env, start_server
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow

CASES = 200


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return server_env(
        data_dir,
        ASSAY_ALLOW_PRIVATE_NETWORKS="true",
        ASSAY_JOB_LEASE_SECONDS="3",
        ASSAY_RUN_CHUNK_SIZE="50",
        ASSAY_WORKERS="2",
        **extra,
    )


async def _progress(api: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    response = await api.get(f"/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def _until(api: httpx.AsyncClient, run_id: str, predicate: Any, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        run = await _progress(api, run_id)
        if predicate(run):
            return run
        assert time.monotonic() < deadline, f"gave up waiting: {run['status']} {run['counts']}"
        await asyncio.sleep(0.2)


async def _one_result_per_case(api: httpx.AsyncClient, run_id: str) -> None:
    keys = []
    for offset in range(0, CASES, 200):
        page = await api.get(f"/runs/{run_id}/results", params={"limit": 200, "offset": offset})
        keys += [(r["position"], r["repetition"]) for r in page.json()["items"]]
    assert sorted(keys) == [(position, 0) for position in range(CASES)]


def _owner_args(data_dir: Path) -> dict[str, Any]:
    server = embedded.EmbeddedServer(socket_dir=(data_dir / "pgdata").resolve())
    return asyncpg_connect_args(server.url(embedded.OWNER_ROLE))


async def test_sigkilled_worker_process_is_taken_over_with_one_result_per_case(tmp_path):
    data_dir = tmp_path / "data"
    servers: list[Server] = []
    with FakeOpenAI(require_api_key="sk-test", latency=0.1) as fake:
        try:
            servers = [start_server(_env(data_dir), tmp_path / f"s{i}.log") for i in range(2)]
            for server in servers:
                await asyncio.to_thread(server.wait_healthy)
            async with httpx.AsyncClient(base_url=f"{servers[0].url}/api/v1", timeout=30) as api:
                run = await create_run(api, fake, cases=CASES, concurrency=8)
                await _until(api, run["id"], lambda r: r["counts"]["done"] >= 20, 60)

                owner = await asyncpg.connect(**_owner_args(data_dir))
                try:
                    holders = await owner.fetch(
                        "SELECT DISTINCT locked_by FROM jobs"
                        " WHERE kind = 'run.chunk' AND status = 'running'"
                    )
                finally:
                    await owner.close()
                pids = {int(row["locked_by"].split(":")[1]) for row in holders}
                by_pid = {server.process.pid: server for server in servers}
                victim = by_pid[next(pid for pid in pids if pid in by_pid)]
                os.kill(victim.process.pid, signal.SIGKILL)
                victim.process.wait(10)
                auth = api.headers["Authorization"]

            survivor = next(server for server in servers if server is not victim)
            async with httpx.AsyncClient(base_url=f"{survivor.url}/api/v1", timeout=30) as api:
                api.headers["Authorization"] = auth
                killed_at = (await _progress(api, run["id"]))["counts"]["done"]
                assert killed_at < CASES, "the run finished before the kill; nothing was tested"
                done = await _until(
                    api, run["id"], lambda r: r["status"] in ("completed", "failed"), 120
                )
                assert done["status"] == "completed", done
                assert done["counts"]["done"] == CASES
                assert done["counts"]["passed"] == CASES
                await _one_result_per_case(api, run["id"])
        finally:
            for server in servers:
                server.stop()


async def test_a_run_survives_its_process_killed_five_times_in_a_row(tmp_path):
    """A crash loop: the process executing the run's one chunk is SIGKILLed five times as the
    chunk restarts. A takeover is not a failed attempt, so the run still completes, with
    exactly one result per case."""
    data_dir = tmp_path / "data"
    env = {**_env(data_dir), "ASSAY_RUN_CHUNK_SIZE": "1000"}  # one chunk: the same job each time
    run: dict[str, Any] | None = None
    auth = ""
    with FakeOpenAI(require_api_key="sk-test", latency=0.2) as fake:
        for kill in range(5):
            server = start_server(env, tmp_path / f"killed-{kill}.log")
            try:
                await asyncio.to_thread(server.wait_healthy)
                async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as api:
                    if run is None:
                        run = await create_run(api, fake, cases=CASES, concurrency=2)
                        auth = api.headers["Authorization"]
                    api.headers["Authorization"] = auth
                    target = (await _progress(api, run["id"]))["counts"]["done"] + 5
                    await _until(api, run["id"], lambda r, at=target: r["counts"]["done"] >= at, 60)
            finally:
                os.kill(server.process.pid, signal.SIGKILL)
                server.process.wait(10)
        assert run is not None
        server = start_server(env, tmp_path / "last.log")
        try:
            await asyncio.to_thread(server.wait_healthy)
            async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as api:
                api.headers["Authorization"] = auth
                killed_at = (await _progress(api, run["id"]))["counts"]["done"]
                assert killed_at < CASES, "the run finished before the last kill: nothing tested"
                done = await _until(
                    api, run["id"], lambda r: r["status"] in ("completed", "failed"), 120
                )
                assert done["status"] == "completed", (done, server.log()[-3000:])
                assert done["counts"]["done"] == CASES
                await _one_result_per_case(api, run["id"])
        finally:
            server.stop()


def _restart_database(data_dir: Path) -> None:
    """pg_ctl restart of the embedded server in immediate mode: every connection is cut and the
    server recovers from its log on start, as after a crash.

    Under pgserver's inter-process lock, which the server's own watchdog takes to restart it.
    Without it the watchdog could see the server stopped and start it first; pg_ctl then waited
    for that new postmaster to shut down, and failed at its timeout ("server does not shut
    down"), with the run completing meanwhile."""
    import pwd

    from database.embedded import _pgserver

    pgserver = _pgserver()
    user = "pgserver" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    pgdata = str((data_dir / "pgdata").resolve())
    with pgserver.postgres_server.PostgresServer._lock:
        pgserver.pgexec.pgexec(
            "pg_ctl",
            ("-D", pgdata, "-w", "-t", "170", "-m", "immediate", "restart"),
            bin_path=pgserver.utils.POSTGRES_VERSIONS[pgserver.utils.TARGET_POSTGRES_VERSION],
            user=user,
            timeout=180,
        )


async def test_database_restart_under_a_running_run(tmp_path):
    data_dir = tmp_path / "data"
    with FakeOpenAI(require_api_key="sk-test", latency=0.05) as fake:
        server = start_server(_env(data_dir), tmp_path / "server.log")
        try:
            await asyncio.to_thread(server.wait_healthy)
            async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as api:
                run = await create_run(api, fake, cases=CASES, concurrency=4)
                await _until(api, run["id"], lambda r: r["counts"]["done"] >= 20, 60)
                await asyncio.to_thread(_restart_database, data_dir)
                done = await _until_reachable(api, run["id"], 120)
                assert done["status"] == "completed", (done, server.log()[-3000:])
                assert done["counts"]["done"] == CASES
                await _one_result_per_case(api, run["id"])
        finally:
            server.stop()


async def _until_reachable(api: httpx.AsyncClient, run_id: str, seconds: float) -> dict:
    """Like _until(ended), tolerating the API's errors while the database comes back."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await api.get(f"/runs/{run_id}")
        if response.status_code == 200 and response.json()["status"] in ("completed", "failed"):
            return response.json()
        await asyncio.sleep(0.3)
    raise AssertionError("the run did not end after the database restart")
