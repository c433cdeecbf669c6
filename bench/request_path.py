"""The request path: Assay's reads against a bare ASGI + asyncpg app doing the same work.

Every server runs in a process of its own (uvicorn, uvloop, httptools; Assay as
`python -m app serve`, the baseline as `python -m bench.raw_app`, and as a second baseline the
same SQL served through FastAPI, `python -m bench.framework_app`: the gap between the two
baselines is the framework's share, the rest is Assay's own path) against one throw-away
embedded PostgreSQL, as the same runtime role under the same row-level security. One load
generator drives each in turn with the same concurrency: CONNECTIONS HTTP/1.1 keep-alive
connections, each sending its next request once the last response is in.

The load generator is this module run as `python -m bench.request_path drive ...`, another
process, so its CPU is not the server's, and made of raw asyncio protocols: an HTTP client
library costs more CPU per request than the baseline server itself, and on a two-core machine
the client would be what is measured.

Per endpoint: requests per second of each side and their ratio, and the server process's CPU
per request (psutil, user + system), which the machine's noise moves less than the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from sqlalchemy.engine import make_url

from bench.harness import StolenTime, bench_database, free_port, serve_env, wait_healthy
from utils.config import DEFAULT_DB_MAX_OVERFLOW, DEFAULT_DB_POOL_SIZE

CONNECTIONS = 32
WARMUP_SECONDS = 1.5
SECONDS = 5.0
PASSWORD = "bench-password-1"


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    credential: str  # "none", "api_key" or "token"


ENDPOINTS = (
    Endpoint("GET /health", "/health", "none"),
    Endpoint("GET /tests/{id} (API key)", "/api/v1/tests/{test_id}", "api_key"),
    Endpoint("GET /tests?limit=50 (API key)", "/api/v1/tests?limit=50", "api_key"),
    Endpoint("GET /users/me (token)", "/api/v1/users/me", "token"),
)


@dataclass(frozen=True)
class Measured:
    rate: float  # requests per second
    cpu_ms: float  # server CPU per request
    errors: int
    sessions: int  # PostgreSQL sessions opened during the load (warm-up included)


async def run() -> None:
    print(f"\nRequest path: Assay vs bare ASGI + asyncpg, {CONNECTIONS} keep-alive connections")
    stolen = StolenTime()
    secret = secrets.token_urlsafe(48)
    async with (
        bench_database() as (data_dir, owner, runtime),
        _owner_connection(owner) as probe,
        _serve(
            _assay_command(),
            serve_env(data_dir, owner, runtime, ASSAY_SECRET_KEY=secret),
            data_dir,
        ) as assay,
        _serve(_baseline_command("raw_app", runtime, secret), dict(os.environ), data_dir) as raw,
        _serve(
            _baseline_command("framework_app", runtime, secret), dict(os.environ), data_dir
        ) as framework,
    ):
        credentials = await _setup(assay.url)
        await asyncio.sleep(1.5)  # Assay tunes its garbage collector a second after start-up
        print(
            "req/s and server CPU per request of the bare app (raw), the same SQL through FastAPI"
            " (bench.framework_app), and Assay; ratios are Assay's"
        )
        print(
            f"{'endpoint':30} {'raw':>6} {'FastAPI':>7} {'Assay':>6} {'÷raw':>5}"
            f" {'CPU raw':>8} {'FastAPI':>7} {'Assay':>6} {'÷raw':>5} {'÷FastAPI':>8}"
            "  new PostgreSQL sessions, raw/FastAPI/Assay"
        )
        for endpoint in ENDPOINTS:
            path = endpoint.path.format(test_id=credentials["test_id"])
            headers = _headers(endpoint.credential, credentials)
            with stolen.measure():
                base = await _drive(raw, path, headers, probe)
                floor = await _drive(framework, path, headers, probe)
                ours = await _drive(assay, path, headers, probe)
            errors = {"raw": base.errors, "FastAPI": floor.errors, "Assay": ours.errors}
            print(
                f"{endpoint.name:30} {base.rate:6.0f} {floor.rate:7.0f} {ours.rate:6.0f}"
                f" {_ratio(ours.rate, base.rate):>5} {base.cpu_ms:6.2f}ms {floor.cpu_ms:5.2f}ms"
                f" {ours.cpu_ms:4.2f}ms {_ratio(ours.cpu_ms, base.cpu_ms):>5}"
                f" {_ratio(ours.cpu_ms, floor.cpu_ms):>8}"
                f"  {base.sessions}/{floor.sessions}/{ours.sessions}"
                + (
                    "  non-200: " + ", ".join(f"{k} {v}" for k, v in errors.items())
                    if any(errors.values())
                    else ""
                )
            )
    share = stolen.share
    print(
        "CPU steal while measuring: "
        + ("n/a" if share is None else f"{share:.1%}")
        + " (goal: Assay >= 0.5x the raw req/s on authenticated reads, >= 0.7x on /health,"
        " <= 2x the CPU per request)"
    )


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}" if base else "n/a"


# --- the servers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    pid: int
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _assay_command() -> list[str]:
    return [sys.executable, "-m", "app", "serve", "--port", "{port}"]


@asynccontextmanager
async def _owner_connection(owner: str) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection, to read the database's statistics."""
    connection = await asyncpg.connect(_driver_dsn(owner))
    try:
        yield connection
    finally:
        await connection.close()


def _driver_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _baseline_command(module: str, runtime: str, secret: str) -> list[str]:
    command = [
        sys.executable,
        "-m",
        f"bench.{module}",
        "--dsn",
        _driver_dsn(runtime),
        f"--secret={secret}",  # it may start with "-"
        f"--pool-size={DEFAULT_DB_POOL_SIZE + DEFAULT_DB_MAX_OVERFLOW}",  # Assay's at most
    ]
    return [*command, "--port", "{port}"]


@asynccontextmanager
async def _serve(command: list[str], env: dict[str, str], data_dir: Path) -> AsyncIterator[Server]:
    port = free_port()
    log_path = data_dir / f"server-{port}.log"
    with open(log_path, "w") as log:  # noqa: ASYNC230 (before the server starts)
        process = await asyncio.create_subprocess_exec(
            *[part.format(port=port) for part in command], env=env, stdout=log, stderr=log
        )
    server = Server(process.pid, port)
    try:
        await wait_healthy(process, server.url, log_path)
        yield server
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)


async def _setup(base_url: str) -> dict[str, str]:
    """A user with an organization, 60 tests and a viewer API key, made through Assay's API."""
    async with httpx.AsyncClient(base_url=f"{base_url}/api/v1", timeout=30) as client:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = await client.post(path, json=body)
            assert response.status_code in (200, 201), (path, response.text)
            return dict(response.json())

        registered = await post(
            "/auth/register", {"email": "path@example.com", "password": PASSWORD, "name": "Bench"}
        )
        token = registered["access_token"]
        organization_id = registered["organization"]["id"]
        client.headers["Authorization"] = f"Bearer {token}"
        project = await post("/projects", {"name": "request path"})
        tests = [
            {"input": f"What is {i} + {i}?", "expected_output": str(2 * i), "tags": ["math"]}
            for i in range(60)
        ]
        ids = (await post("/tests/bulk", {"project_id": project["id"], "tests": tests}))["ids"]
        key = await post(
            f"/organizations/{organization_id}/api-keys", {"name": "bench", "role": "viewer"}
        )
    return {"token": token, "api_key": key["key"], "test_id": ids[0]}


def _headers(credential: str, credentials: dict[str, str]) -> dict[str, str]:
    if credential == "api_key":
        return {"X-API-Key": credentials["api_key"]}
    if credential == "token":
        return {"Authorization": f"Bearer {credentials['token']}"}
    return {}


async def _drive(
    server: Server, path: str, headers: dict[str, str], probe: asyncpg.Connection
) -> Measured:
    """Runs the load generator against `server`; the server's CPU is read from the moment it
    says the warm-up is over to the moment it says it stopped counting. `probe` (the owner's
    connection) counts the PostgreSQL sessions opened meanwhile: a pool that keeps its
    connections opens none once it has filled."""
    sessions_before = await _sessions(probe)
    command = [sys.executable, "-m", "bench.request_path", "drive", "--port", str(server.port)]
    command += ["--path", path, "--connections", str(CONNECTIONS)]
    command += ["--warmup", str(WARMUP_SECONDS), "--seconds", str(SECONDS)]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    measured = psutil.Process(server.pid)
    assert (await process.stdout.readline()).strip() == b"go"
    before = measured.cpu_times()
    assert (await process.stdout.readline()).strip() == b"stop"
    after = measured.cpu_times()
    result = json.loads(await process.stdout.readline())
    await process.wait()
    cpu = (after.user - before.user) + (after.system - before.system)
    requests = max(result["requests"], 1)
    return Measured(
        rate=result["requests"] / result["seconds"],
        cpu_ms=cpu * 1000 / requests,
        errors=result["errors"],
        sessions=await _sessions(probe) - sessions_before,
    )


async def _sessions(probe: asyncpg.Connection) -> int:
    """Sessions opened to the database so far. A backend reports its start with its first
    statistics, at the end of a transaction at most once a second, or when it exits: one
    opened in the last second of a load may be counted with the next."""
    await probe.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        await probe.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
    )


# --- the load generator (another process) -------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request, its whole response (Content-Length), the next."""

    def __init__(self, request: bytes, counts: dict[str, int]) -> None:
        self.request = request
        self.counts = counts
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = buffer[:head_end].lower()
            length = _content_length(head)
            if len(buffer) < head_end + 4 + length:
                break
            self.counts["requests"] += 1
            if not head.startswith(b"http/1.1 200"):
                self.counts["errors"] += 1
            buffer = buffer[head_end + 4 + length :]
            assert self.transport is not None
            self.transport.write(self.request)
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _content_length(head: bytes) -> int:
    start = head.find(b"content-length:")
    if start < 0:
        return 0
    end = head.find(b"\r\n", start)
    return int(head[start + 15 : end if end >= 0 else len(head)])


async def _generate(args: argparse.Namespace) -> None:
    lines = [f"GET {args.path} HTTP/1.1", f"Host: 127.0.0.1:{args.port}", *args.header]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    counts = {"requests": 0, "errors": 0}
    loop = asyncio.get_running_loop()
    connections = [
        (await loop.create_connection(lambda: _Connection(request, counts), "127.0.0.1", args.port))
        for _ in range(args.connections)
    ]
    await asyncio.sleep(args.warmup)
    print("go", flush=True)
    counts.update(requests=0, errors=0)
    started = time.perf_counter()
    await asyncio.sleep(args.seconds)
    done, elapsed = dict(counts), time.perf_counter() - started
    print("stop", flush=True)
    for transport, _ in connections:
        transport.close()
    print(json.dumps({**done, "seconds": elapsed}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["drive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--warmup", type=float, default=WARMUP_SECONDS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    import uvloop

    uvloop.run(_generate(parser.parse_args()))


if __name__ == "__main__":
    main()
