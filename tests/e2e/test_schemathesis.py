"""Schemathesis, with all its checks, against a live `python -m app serve`: every operation of
both documents, authenticated (an admin API key, with real ids for every path parameter so the
requests reach past the 404s) and not. The contract it must keep: no server error and no
response that breaks its documented status codes, media types or schemas."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import Server, server_env, start_server
from tests.helpers import PASSWORD

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 10  # per phase (examples, coverage, fuzzing): about a minute in all
# Failure codes that break the contract (`schemathesis explain --list`): server errors, and
# responses outside their documented status codes, media types and schemas.
CONTRACT = {
    "ST101": "server error",
    "ST102": "server error on an undeclared content type",
    "ST103": "undocumented status code",
    "ST104": "missing Content-Type",
    "ST105": "undocumented Content-Type",
    "ST106": "malformed media type",
    "ST108": "response violates its schema",
    "ST109": "invalid JSON body",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("schemathesis")
    env = server_env(
        root / "data",
        ASSAY_AUTH_RATE_LIMIT="100000/minute",
        ASSAY_AUTH_ACCOUNT_RATE_LIMIT="100000/hour",
        ASSAY_INVITATIONS_PER_HOUR="100000",
        ASSAY_ORGANIZATIONS_PER_HOUR="100000",
        ASSAY_CONNECTION_TESTS_PER_HOUR="100000",
    )
    server = start_server(env, root / "server.log")
    try:
        server.wait_healthy(120)
        yield server
    finally:
        server.stop()


def _made(response: httpx.Response) -> dict:
    assert response.status_code in (200, 201, 202), response.text
    return dict(response.json())


def _fixtures(server: Server) -> tuple[str, dict[str, str]]:
    """An admin API key, and a real id for each path parameter of the API."""
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as api:
        account = _made(
            api.post(
                "/auth/register",
                json={"email": "fuzz@example.com", "password": PASSWORD, "name": "Fuzz"},
            )
        )
        api.headers["Authorization"] = f"Bearer {account['access_token']}"
        organization_id = account["organization"]["id"]
        project = _made(api.post("/projects", json={"name": "fuzzed"}))
        model = _made(api.post("/models", json={"name": "demo", "provider": "demo"}))
        tests = _made(
            api.post(
                "/tests/bulk",
                json={"project_id": project["id"], "tests": [{"input": "hello"}, {"input": "x"}]},
            )
        )
        test_set = _made(
            api.post(
                "/test-sets",
                json={"project_id": project["id"], "name": "set", "test_ids": tests["ids"]},
            )
        )
        metric = _made(
            api.post(
                "/metrics",
                json={
                    "project_id": project["id"],
                    "name": "m",
                    "type": "contains",
                    "parameters": {"value": "hello"},
                },
            )
        )
        prompt = _made(
            api.post(
                "/prompts",
                json={"project_id": project["id"], "name": "p", "template": "{{ input }}"},
            )
        )
        api.put(f"/prompts/{prompt['id']}/labels/production", json={"version": 1})
        run = _made(
            api.post(
                "/runs",
                json={
                    "test_set_id": test_set["id"],
                    "target_model_id": model["id"],
                    "metric_ids": [metric["id"]],
                },
            )
        )
        deadline = time.monotonic() + 60
        while api.get(f"/runs/{run['id']}").json()["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        result = api.get(f"/runs/{run['id']}/results").json()["items"][0]
        hooks = f"/projects/{project['id']}/webhooks"
        webhook = _made(
            api.post(
                hooks, json={"url": "https://hooks.example.com/fuzz", "events": ["run.failed"]}
            )
        )
        delivery = _made(api.post(f"{hooks}/{webhook['id']}/test"))
        invitation = _made(
            api.post(
                f"/organizations/{organization_id}/invitations", json={"email": "x@example.com"}
            )
        )
        key, other_key = (
            _made(
                api.post(
                    f"/organizations/{organization_id}/api-keys",
                    json={"name": name, "role": "admin"},
                )
            )
            for name in ("fuzz", "revoked while fuzzing")
        )
    ids = {
        "organization_id": organization_id,
        "project_id": project["id"],
        "model_id": model["id"],
        "test_id": tests["ids"][0],
        "test_set_id": test_set["id"],
        "metric_id": metric["id"],
        "prompt_id": prompt["id"],
        "run_id": run["id"],
        "result_id": result["id"],
        "invitation_id": invitation["id"],
        "key_id": other_key["id"],
        "webhook_id": webhook["id"],
        "delivery_id": delivery["id"],
        "user_id": account["user"]["id"],
        "label": "production",
        "version": "1",
    }
    return key["key"], ids


def _schemathesis(server: Server, document: str, config: Path, *headers: str) -> str:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{server.url}{document}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--seed",
        "20261202",
        "--no-color",
        *(part for header in headers for part in ("-H", header)),
    ]
    finished = subprocess.run(
        command, cwd=config.parent, capture_output=True, text=True, timeout=600, check=False
    )
    output = finished.stdout + finished.stderr
    assert "SUMMARY" in output, output[-3000:]
    return output


def _broken(output: str) -> dict[str, str]:
    return {code: name for code, name in CONTRACT.items() if re.search(rf"\b{code}\b", output)}


def _tested(output: str) -> int:
    match = re.search(r"Tested: (\d+)", output)
    assert match, output[-3000:]
    return int(match.group(1))


def test_the_contract_holds_for_an_authenticated_client(server, tmp_path):
    key, ids = _fixtures(server)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[parameters]\n" + "".join(f'"path.{name}" = "{value}"\n' for name, value in ids.items())
    )
    output = _schemathesis(server, "/openapi.json", config, f"Authorization: Bearer {key}")
    print(output[output.find("ERRORS") :])
    assert _tested(output) >= 85
    assert _broken(output) == {}, output[-6000:]


@pytest.mark.parametrize("document", ["/openapi.json", "/public/openapi.json"])
def test_the_contract_holds_without_credentials(server, tmp_path, document):
    config = tmp_path / "schemathesis.toml"
    config.write_text("")
    output = _schemathesis(server, document, config)
    print(output[output.find("SUMMARY") :])
    assert _tested(output) >= (85 if document == "/openapi.json" else 2)
    assert _broken(output) == {}, output[-6000:]
