"""A client generated from the served OpenAPI document (openapi-python-client), used against a
real server: the happy path from account to a run's summary, then a wrong type, an unknown id
and a bad credential, each parsed as the documented Problem. The client raises on any status
the document does not list, so an undocumented answer fails the test too."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.e2e.servers import Server, server_env, start_server

pytestmark = pytest.mark.slow

PACKAGE = "assay_generated_client"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("generated-client")
    server = start_server(server_env(root / "data"), root / "server.log")
    try:
        server.wait_healthy(120)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client_package(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The generated package, importable; from the document the server serves."""
    root = tmp_path_factory.mktemp("client")
    document = root / "openapi.json"
    document.write_bytes(httpx.get(f"{server.url}/openapi.json", timeout=10).content)
    config = root / "config.yaml"
    config.write_text(f"post_hooks: []\npackage_name_override: {PACKAGE}\n")
    generator = Path(sys.executable).parent / "openapi-python-client"
    done = subprocess.run(
        [generator, "generate", "--path", document, "--meta", "none", "--config", config],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The one warning allowed: the raw CSV, JSON Lines and YAML bodies of the import
    # (multipart and JSON are generated). The generator warns on stderr.
    said = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
    parsing = {line for line in said if line.startswith("WARNING parsing")}
    assert parsing <= {
        "WARNING parsing POST /api/v1/test-sets/{test_set_id}/import within test_sets."
    }
    assert {line for line in said if line.startswith("Unsupported")} == {
        "Unsupported content type text/csv",
        "Unsupported content type application/x-ndjson",
        "Unsupported content type application/yaml",
    }, done.stdout + done.stderr
    sys.path.insert(0, str(root))
    try:
        yield PACKAGE
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def _api(package: str, tag: str, operation_id: str) -> ModuleType:
    return importlib.import_module(f"{package}.api.{tag}.{operation_id}")


def test_a_generated_client_works_end_to_end(server: Server, client_package: str) -> None:
    generated = importlib.import_module(client_package)
    models = importlib.import_module(f"{client_package}.models")

    anonymous = generated.Client(base_url=server.url, raise_on_unexpected_status=True)
    registered = _api(client_package, "auth", "auth_register").sync_detailed(
        client=anonymous,
        body=models.RegisterRequest(
            email=f"gen-{uuid.uuid4().hex[:8]}@example.com",
            password="a-long-passphrase-1",
            name="Generated",
        ),
    )
    assert registered.status_code == 201, registered.content
    account = registered.parsed
    client = generated.AuthenticatedClient(
        base_url=server.url, token=account.access_token, raise_on_unexpected_status=True
    )

    def call(tag: str, operation_id: str, **kwargs: object) -> Any:
        response = _api(client_package, tag, operation_id).sync_detailed(client=client, **kwargs)
        assert response.status_code < 300, (operation_id, response.status_code, response.content)
        return response.parsed

    project = call("projects", "projects_create", body=models.ProjectCreate(name="generated"))
    model = call(
        "models",
        "models_create",
        body=models.ModelConfigCreate(name="demo", provider=models.ModelConfigCreateProvider.DEMO),
    )
    test_set = call(
        "test_sets",
        "test_sets_create",
        body=models.TestSetCreate(project_id=project.id, name="basics"),
    )
    created = call(
        "tests",
        "tests_create_bulk",
        body=models.TestBulkCreate(
            project_id=project.id,
            test_set_id=test_set.id,
            tests=[
                models.TestCaseFields(input_="say hello", expected_output="hello"),
                models.TestCaseFields(input_="say goodbye", expected_output="banana"),
            ],
        ),
    )
    assert len(created.ids) == 2
    metric = call(
        "metrics",
        "metrics_create",
        body=models.IcontainsMetric(project_id=project.id, name="mentions", type_="icontains"),
    )
    run = call(
        "runs",
        "runs_create",
        body=models.RunCreate(
            test_set_id=test_set.id, target_model_id=model.id, metric_ids=[metric.id]
        ),
    )
    deadline = time.monotonic() + 60
    while run.status.value not in ("completed", "failed", "cancelled", "stopped"):
        assert time.monotonic() < deadline, f"the run is still {run.status}"
        time.sleep(0.2)
        run = call("runs", "runs_read", run_id=run.id)
    summary = call("runs", "runs_summary", run_id=run.id)
    assert summary.status.value == "completed"
    assert (summary.counts.passed, summary.counts.failed) == (1, 1)
    assert summary.pass_rate == pytest.approx(0.5)

    # Errors come back as the documented Problem, never as a crash inside the client.
    problem_type = models.Problem
    wrong_type = _api(client_package, "projects", "projects_create").sync_detailed(
        client=client, body=models.ProjectCreate(name=5)
    )
    unknown = _api(client_package, "tests", "tests_read").sync_detailed(
        client=client, test_id=uuid.uuid4()
    )
    unknown_reference = _api(client_package, "runs", "runs_create").sync_detailed(
        client=client, body=models.RunCreate(test_set_id=uuid.uuid4(), metric_ids=[metric.id])
    )
    forged = generated.AuthenticatedClient(
        base_url=server.url, token="not-a-token", raise_on_unexpected_status=True
    )
    unauthenticated = _api(client_package, "users", "users_read_me").sync_detailed(client=forged)
    for response, status in (
        (wrong_type, 422),
        (unknown, 404),
        (unknown_reference, 422),
        (unauthenticated, 401),
    ):
        assert response.status_code == status, response.content
        assert isinstance(response.parsed, problem_type), response.parsed
        assert response.parsed.status == status
        assert response.parsed.request_id == response.headers["x-request-id"]
    assert wrong_type.parsed.errors[0].field == "body.name"
    assert unknown_reference.parsed.errors[0].field == "body.test_set_id"
