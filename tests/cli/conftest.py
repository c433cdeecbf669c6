"""The real `assay` command (the console script `uv sync` installs) against a real server
process, with the fake OpenAI-compatible provider as the target."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.proxy import Proxy
from tests.e2e.servers import Server, live_env, start_server
from tests.fakes.openai_server import FakeOpenAI, echo_reply
from tests.helpers import PASSWORD

ASSAY = Path(sys.executable).parent / "assay"
# Anything but text, tab and newline: what a redrawn bar or colours would leave in a CI log.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass
class Lab:
    """One organization on the server: an admin API key, a project, the fake as a model."""

    server: Server
    fake: FakeOpenAI
    api: httpx.Client
    api_key: str
    project_id: str
    model_name: str
    home: Path
    made: dict[str, Any] = field(default_factory=dict)

    def env(self, **extra: str | None) -> dict[str, str]:
        """The command's environment: the lab's, with `extra` over it (None: left unset)."""
        env: dict[str, str | None] = {
            k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "NO_COLOR"))
        }
        env.update(
            ASSAY_URL=self.server.url,
            ASSAY_API_KEY=self.api_key,
            ASSAY_CONFIG_DIR=str(self.home),
            COLUMNS="200",
        )
        env.update(extra)
        return {key: value for key, value in env.items() if value is not None}

    def assay(
        self, *args: str, cwd: Path | None = None, timeout: float = 120, **env: str | None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ASSAY), *args],
            capture_output=True,
            text=True,
            env=self.env(**env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str, **env: str | None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(ASSAY), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(**env),
        )

    @contextmanager
    def running(self, *args: str, **env: str | None) -> Iterator[subprocess.Popen[str]]:
        """The command started (`popen`), killed and read to its end should the block leave it
        running."""
        process = self.popen(*args, **env)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()

    def post(self, path: str, body: Any, expect: int = 201) -> Any:
        response = self.api.post(path, json=body)
        assert response.status_code == expect, response.text
        return response.json()

    def test_set(self, cases: int, name: str | None = None, prefix: str = "case") -> dict[str, Any]:
        tests = [
            {"input": f"{prefix} {i}", "expected_output": f"{prefix} {i}"} for i in range(cases)
        ]
        ids = self.post("/tests/bulk", {"project_id": self.project_id, "tests": tests})["ids"]
        body = {"project_id": self.project_id, "name": name or _name("set"), "test_ids": ids}
        return dict(self.post("/test-sets", body))

    def metric(self, name: str | None = None, type: str = "contains") -> dict[str, Any]:
        body = {"project_id": self.project_id, "name": name or _name("m"), "type": type}
        return dict(self.post("/metrics", body))


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, FakeOpenAI]]:
    root = tmp_path_factory.mktemp("cli")
    with FakeOpenAI(require_api_key="sk-test") as fake:
        env = {
            **live_env(root / "data", 2),
            "ASSAY_AUTH_RATE_LIMIT": "1000/minute",
            # The command waits the stream's `retry:` before reconnecting: streams the tests'
            # proxies cut are reopened sooner than the default 2 s.
            "ASSAY_SSE_RETRY_MS": "300",
        }
        server = start_server(env, root / "server.log")
        try:
            server.wait_healthy(120)
            yield server, fake
        finally:
            server.stop()


@pytest.fixture
def lab(cli_server: tuple[Server, FakeOpenAI], tmp_path: Path) -> Iterator[Lab]:
    server, fake = cli_server
    fake.reply = echo_reply
    fake.latency = 0.0
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as api:
        email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
        registered = api.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "name": "CLI"}
        )
        assert registered.status_code == 201, registered.text
        api.headers["Authorization"] = f"Bearer {registered.json()['access_token']}"
        organization_id = api.get("/users/me").json()["organization_id"]
        key = api.post(
            f"/organizations/{organization_id}/api-keys", json={"name": "ci", "role": "admin"}
        )
        assert key.status_code == 201, key.text
        project = api.post("/projects", json={"name": "cli"}).json()
        model_name = _name("fake")
        model = api.post(
            "/models",
            json={
                "name": model_name,
                "provider": "openai-compatible",
                "model": "fake-model",
                "base_url": fake.base_url,
                "api_key": "sk-test",
                "input_price_per_mtok": 1000,
                "output_price_per_mtok": 1000,
            },
        )
        assert model.status_code == 201, model.text
        yield Lab(
            server=server,
            fake=fake,
            api=api,
            api_key=key.json()["key"],
            project_id=project["id"],
            model_name=model_name,
            home=tmp_path / "home",
        )


# Well under what a command that never gives up would take: it would wait here forever.
PATIENCE = 45
# The command itself, with the give-up delay cut from 300 s to 2 s.
SHORTENED = "import cli.stream; cli.stream.GIVE_UP_AFTER = 2.0; from cli.main import main; main()"


@pytest.fixture
def proxy(lab: Lab) -> Iterator[Proxy]:
    """A proxy in front of the lab's server, which a test tells how to answer."""
    with Proxy(lab.server.url) as running:
        yield running
