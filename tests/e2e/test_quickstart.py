"""The README's quickstart, run as written: the block between `<!-- quickstart -->` and
`<!-- /quickstart -->`, pasted into bash against a real `python -m app serve` with its embedded
PostgreSQL (as after `make run`), so the README and the service cannot drift apart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.servers import ROOT, Server, server_env, start_server

pytestmark = pytest.mark.slow

QUICKSTART = re.compile(r"<!-- quickstart -->\n```sh\n(.*?)```\n<!-- /quickstart -->", re.S)
CLI_QUICKSTART = re.compile(
    r"<!-- cli-quickstart -->\n```sh\n(.*?)```\n<!-- /cli-quickstart -->", re.S
)
# The `assay` command, as `uv sync` installs it.
VENV_BIN = str(Path(sys.executable).parent)
# What the README's prose announces: 2 of 5 cases pass, and each metric's pass rate.
CASES, PASSED = 5, 2
METRIC_PASS_RATES = {"mentions-answer": 0.6, "short": 0.8}
# Only what a shell needs to find curl and python3: the block must set everything it uses.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYENV_ROOT", "PYENV_VERSION")


def _block() -> str:
    """The quickstart, then the command-line block that continues it in the same shell."""
    readme = (ROOT / "README.md").read_text()
    found = QUICKSTART.findall(readme)
    assert len(found) == 1, "README.md must hold exactly one quickstart block"
    cli = CLI_QUICKSTART.findall(readme)
    assert len(cli) == 1, "README.md must hold exactly one cli-quickstart block"
    return str(found[0]) + "\n" + str(cli[0])


def _paste(block: str, server: Server, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The block in `bash -euo pipefail` (any failed command or unset variable stops it)."""
    cwd.mkdir()
    env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
    env["PORT"] = str(server.port)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, ""), (
        f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        f"\n--- server\n{server.log()[-3000:]}"
    )
    return done


def _events(output: str) -> list[tuple[str, dict[str, Any]]]:
    """The Server-Sent Events `curl -N` printed: (event name, data)."""
    names = re.findall(r"^event: (\S+)$", output, re.M)
    data = [json.loads(d) for d in re.findall(r"^data: (.*)$", output, re.M)]
    assert len(names) == len(data), output
    return list(zip(names, data, strict=True))


def _summary(output: str) -> dict[str, Any]:
    """The summary `python3 -m json.tool` printed: the first line that is only `{`."""
    start = re.search(r"^\{$", output, re.M)
    assert start, output
    summary, _ = json.JSONDecoder().raw_decode(output, start.start())
    return dict(summary)


def test_the_readme_quickstart_runs_as_written(tmp_path):
    block = _block()
    server = start_server(server_env(tmp_path / "data"), tmp_path / "server.log")
    try:
        server.wait_healthy(120)
        # As an orchestrator asks: live, and ready (LISTEN connection up, workers running).
        assert httpx.get(f"{server.url}/health/live", timeout=10).json() == {"status": "ok"}
        deadline = time.monotonic() + 15
        while (ready := httpx.get(f"{server.url}/health/ready", timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        assert (ready.json()["listener"], ready.json()["workers"]) == ("connected", "running")
        # The container image's healthcheck, against this server and against nothing; never
        # through a proxy the environment names (Docker passes the client's on).
        dead_proxy = {"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
        for port, code in ((server.port, 0), (9, 1)):
            checked = subprocess.run(
                [sys.executable, "-m", "app", "ready", "--http"],
                cwd=ROOT,
                env={**os.environ, "PORT": str(port), **dead_proxy},
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert checked.returncode == code, checked.stderr
        output = _paste(block, server, tmp_path / "first").stdout

        imported = json.loads(output.splitlines()[0])
        assert (imported["imported"], imported["test_count"]) == (CASES, CASES)

        # Followed live to its end: the stream closed by itself after run.finished.
        events = _events(output)
        assert events, f"the live stream printed no event:\n{output}"
        assert events[0][0] == "run.started"
        assert [name for name, _ in events].count("result.recorded") == CASES
        assert events[-1] == (
            "run.finished",
            {
                "status": "completed",
                "total": CASES,
                "done": CASES,
                "passed": PASSED,
                "failed": CASES - PASSED,
                "errored": 0,
            },
        )

        summary = _summary(output)
        run_id = summary["run_id"]
        assert summary["status"] == "completed"
        assert summary["counts"] == {
            "total": CASES,
            "done": CASES,
            "passed": PASSED,
            "failed": CASES - PASSED,
            "errored": 0,
        }
        assert summary["pass_rate"] == pytest.approx(PASSED / CASES)
        rates = {m["name"]: m["pass_rate"] for m in summary["metrics"]}
        assert rates == pytest.approx(METRIC_PASS_RATES)

        junit = ElementTree.parse(tmp_path / "first" / "junit.xml").getroot()
        assert junit.tag == "testsuite"
        cases = junit.findall("testcase")
        assert len(cases) == int(junit.get("tests", "")) == CASES
        assert sum(case.find("failure") is not None for case in cases) == CASES - PASSED

        page = re.search(r"^Live page: (\S+)$", output, re.M)
        assert page, output
        assert page[1].startswith(f"http://localhost:{server.port}/public/runs/{run_id}?token=")
        opened = httpx.get(page[1].replace("localhost", "127.0.0.1"), timeout=10)
        assert opened.status_code == 200, opened.text
        assert opened.headers["content-type"].startswith("text/html")

        key = re.search(r"^API key: (assay_\S+)$", output, re.M)
        assert key, output
        run = httpx.get(
            f"{server.url}/api/v1/runs/{run_id}",
            headers={"Authorization": f"Bearer {key[1]}"},
            timeout=10,
        )
        assert run.status_code == 200, run.text
        assert run.json()["status"] == "completed"

        # The same run through the `assay` command: its outcome, its report, the list.
        assert "PASSED (exit 0): gate passed" in output
        assert f"{PASSED} passed, {CASES - PASSED} failed, 0 errored of {CASES}" in output
        report = ElementTree.parse(tmp_path / "first" / "assay-junit.xml").getroot()
        assert len(report.findall("testcase")) == CASES + 1  # and the gate
        assert re.search(r"^Runs \(2 in all\)", output, re.M), output

        # Pasted again on the same server: a new account, a run of its own.
        again = _summary(_paste(block, server, tmp_path / "second").stdout)
        assert again["status"] == "completed"
        assert again["run_id"] != run_id
        assert (tmp_path / "second" / "junit.xml").is_file()
    finally:
        server.stop()
