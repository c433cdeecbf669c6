"""`python -m app serve` takes its address, port and trusted proxies from the settings, so a
.env file in the working directory sets them as it sets every other one."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.3"  # not the default 127.0.0.1: only .env names it


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"serve never answered on {url}:\n{log.read_text()}")


def _login(client: httpx.Client, forwarded_for: str) -> int:
    form = {"username": "nobody@example.com", "password": "wrong-password-1"}
    headers = {"X-Forwarded-For": forwarded_for}
    return client.post("/api/v1/auth/login", data=form, headers=headers).status_code


def test_serve_binds_and_trusts_proxies_as_dot_env_says(database_urls, tmp_path) -> None:
    port = _free_port(HOST)
    (tmp_path / ".env").write_text(
        f"ASSAY_HOST={HOST}\nPORT={port}\nASSAY_FORWARDED_ALLOW_IPS=*\n"
        "ASSAY_AUTH_RATE_LIMIT=1/minute\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("ASSAY_")}
    env.pop("PORT", None)
    env.update(
        PYTHONPATH=str(ROOT),
        ASSAY_DATABASE_URL=database_urls.runtime,
        ASSAY_MIGRATE_ON_START="false",
        ASSAY_SECRET_KEY="k" * 64,
        ASSAY_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        ASSAY_DATA_DIR=str(tmp_path / "data"),
        ASSAY_WORKERS="0",
        ASSAY_BCRYPT_ROUNDS="4",
    )
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        url = f"http://{HOST}:{port}"
        _wait_healthy(url, process, log)
        with httpx.Client(base_url=url, timeout=30) as client:
            # The proxy is trusted: each forwarded address is a client of its own, limited
            # to one attempt a minute.
            first, other, again = (_login(client, f"203.0.113.{n}") for n in (1, 2, 1))
        assert (first, other, again) == (401, 401, 429), log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
