"""Start real `python -m app serve` processes for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import PASSWORD

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ASSAY_")}
    env.update(
        {
            "ASSAY_DATA_DIR": str(data_dir),
            "ASSAY_LOG_FORMAT": "json",
            "ASSAY_BCRYPT_ROUNDS": "4",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


@dataclass
class Server:
    port: int
    process: subprocess.Popen[str]
    log_path: Path
    _log: object = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_healthy(self, timeout: float = 60) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: Exception | httpx.Response | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                response = httpx.get(f"{self.url}/health", timeout=2)
                if response.status_code == 200:
                    return response
                last = response
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"server not healthy ({last!r}):\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(env: dict[str, str], log_path: Path) -> Server:
    port = free_port()
    handle = open(log_path, "w")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Server(port=port, process=process, log_path=log_path, _log=handle)


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[str]:
    """A worker-only process (`python -m app worker`): no HTTP, so no health to poll."""
    handle = open(log_path, "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )


def live_env(data_dir: Path, workers: int) -> dict[str, str]:
    return server_env(
        data_dir,
        ASSAY_ALLOW_PRIVATE_NETWORKS="true",
        ASSAY_WORKERS=str(workers),
    )


async def create_run(
    api: httpx.AsyncClient, fake: FakeOpenAI, *, cases: int, concurrency: int
) -> dict[str, Any]:
    """Registers a user (the client keeps its access token) and starts a run of `cases` cases
    with one `contains` metric that every echoed answer passes."""
    registered = await api.post(
        "/auth/register",
        json={"email": "live@example.com", "password": PASSWORD, "name": "Live"},
    )
    assert registered.status_code == 201, registered.text
    api.headers["Authorization"] = f"Bearer {registered.json()['access_token']}"
    model = await api.post(
        "/models",
        json={
            "name": "fake",
            "provider": "openai-compatible",
            "model": "fake-model",
            "base_url": fake.base_url,
            "api_key": "sk-test",
        },
    )
    assert model.status_code == 201, model.text
    project = await api.post("/projects", json={"name": "live"})
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]
    tests = [{"input": f"case {i}", "expected_output": f"case {i}"} for i in range(cases)]
    ids = await api.post("/tests/bulk", json={"project_id": project_id, "tests": tests})
    assert ids.status_code in (200, 201), ids.text
    test_set = await api.post(
        "/test-sets", json={"project_id": project_id, "name": "s", "test_ids": ids.json()["ids"]}
    )
    assert test_set.status_code == 201, test_set.text
    metric = await api.post(
        "/metrics", json={"project_id": project_id, "name": "m", "type": "contains"}
    )
    assert metric.status_code == 201, metric.text
    run = await api.post(
        "/runs",
        json={
            "test_set_id": test_set.json()["id"],
            "target_model_id": model.json()["id"],
            "metric_ids": [metric.json()["id"]],
            "concurrency": concurrency,
        },
    )
    assert run.status_code == 202, run.text
    return dict(run.json())


def postmasters(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL servers running on `data_dir`."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.info["cmdline"] or [])
            if process.info["name"] == "postgres" and f"-D {data_dir}" in command:
                found.append(process)
    return found


def wait_for_no_postmaster(data_dir: Path, timeout: float = 15) -> list[psutil.Process]:
    """Waits for the embedded server on `data_dir` to stop; returns those still running."""
    deadline = time.monotonic() + timeout
    while (left := postmasters(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left
