"""One tenant cannot freeze the process: each attack from the hardening review runs against a
live `python -m app serve` while another client polls `/health`, which must keep answering
within 250 ms; every attack gets its 4xx or finishes correctly."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Iterator

import httpx
import pytest

from tests.e2e.servers import Server, server_env, start_server
from tests.helpers import PASSWORD

pytestmark = pytest.mark.slow

HEALTH_WITHIN = 0.25
# Start-up ends with one full garbage collection, a second after serving begins: a one-off
# pause of the start, not the attacks' doing.
START_UP_SETTLES = 2.0
NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("bounded")
    server = start_server(server_env(root / "data"), root / "server.log")
    try:
        server.wait_healthy(120)
        time.sleep(START_UP_SETTLES)
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=120) as client:
        email = f"attacker-{time.monotonic_ns()}@example.com"
        registered = await client.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "name": "A"}
        )
        assert registered.status_code == 201, registered.text
        client.headers["Authorization"] = f"Bearer {registered.json()['access_token']}"
        project = await client.post("/projects", json={"name": "attacks"})
        client.headers["X-Project"] = project.json()["id"]  # for the tests below to read
        yield client


async def _while_health_is_watched(
    server: Server, attack: Awaitable[httpx.Response]
) -> tuple[httpx.Response, list[float]]:
    """Runs the attack while `/health` is asked every 20 ms; returns the attack's answer and
    every health answer's latency (a request still open when the attack ends counts too)."""
    latencies: list[float] = []
    done = asyncio.Event()
    enough = asyncio.Event()  # a quick refusal still gets a few answers measured

    async def watch() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            while not done.is_set():
                started = time.perf_counter()
                response = await client.get("/health")
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
                if len(latencies) >= 5:
                    enough.set()
                await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    try:
        response = await attack
        await asyncio.wait_for(enough.wait(), 30)
    finally:
        done.set()
        await watcher
    return response, latencies


def _assert_responsive(latencies: list[float]) -> None:
    print(f"/health: {len(latencies)} answers, slowest {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < HEALTH_WITHIN, sorted(latencies)[-5:]


async def _prompt(api: httpx.AsyncClient, template: str) -> str:
    body = {"project_id": api.headers["X-Project"], "name": "attack", "template": template}
    created = await api.post("/prompts", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


@pytest.mark.parametrize(
    "template",
    [
        NESTED_LOOPS,
        "{{ 'x'.ljust(200000000) }}",
        "{{ '{:200000000}'.format(1) }}",
        "{% set ns = namespace(x='x') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}"
        "{% endfor %}{{ ns.x }}",
    ],
    ids=["nested loops", "ljust", "format width", "doubling"],
)
async def test_costly_renders_are_422_and_the_process_keeps_answering(server, api, template):
    prompt_id = await _prompt(api, template)
    response, latencies = await _while_health_is_watched(
        server, api.post(f"/prompts/{prompt_id}/render", json={"variables": {}})
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "template"
    _assert_responsive(latencies)


async def _finished(api: httpx.AsyncClient, run_id: str) -> httpx.Response:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = await api.get(f"/runs/{run_id}")
        if run.json()["status"] in ("completed", "failed", "cancelled"):
            return run
        await asyncio.sleep(0.1)
    raise TimeoutError(run.text)


async def _test_set(api: httpx.AsyncClient, content: bytes, content_type: str) -> str:
    test_set = await api.post(
        "/test-sets", json={"project_id": api.headers["X-Project"], "name": "attack"}
    )
    imported = await api.post(
        f"/test-sets/{test_set.json()['id']}/import",
        content=content,
        headers={"Content-Type": content_type},
    )
    assert imported.status_code in (200, 201), imported.text
    return str(test_set.json()["id"])


async def test_a_run_of_costly_prompts_finishes_with_each_case_refused(server, api):
    cases = "\n".join(json.dumps({"input": f"case {i}"}) for i in range(20)).encode()
    test_set = await _test_set(api, cases, "application/x-ndjson")
    model = await api.post(
        "/models", json={"name": f"demo-{time.monotonic_ns()}", "provider": "demo"}
    )
    metric = await api.post(
        "/metrics",
        json={
            "project_id": api.headers["X-Project"],
            "name": "any",
            "type": "contains",
            "parameters": {"value": "x"},
        },
    )
    started = await api.post(
        "/runs",
        json={
            "test_set_id": test_set,
            "target_model_id": model.json()["id"],
            "metric_ids": [metric.json()["id"]],
            "prompt_id": await _prompt(api, NESTED_LOOPS + "{{ input }}"),
            "concurrency": 4,
        },
    )
    assert started.status_code == 202, started.text
    run, latencies = await _while_health_is_watched(server, _finished(api, started.json()["id"]))
    assert run.json()["status"] == "completed"
    assert run.json()["counts"]["errored"] == 20
    _assert_responsive(latencies)


def _keys(count: int) -> dict[str, int]:
    return {f"k{i}": i for i in range(count)}


@pytest.mark.parametrize(
    ("keys", "status"), [(900_000, 413), (100_000, 422)], ids=["900,000 keys", "100,000 keys"]
)
async def test_a_test_with_a_huge_variables_object_is_refused(server, api, keys, status):
    body = {"project_id": api.headers["X-Project"], "input": "x", "variables": _keys(keys)}
    content = json.dumps(body).encode()  # encoded before the watch: this process's own work
    response, latencies = await _while_health_is_watched(
        server, api.post("/tests", content=content, headers={"Content-Type": "application/json"})
    )
    assert response.status_code == status, response.text[:300]
    _assert_responsive(latencies)


async def test_a_10000_column_csv_import_is_refused(server, api):
    header = ",".join(["input", *(f"c{i}" for i in range(10_000))])
    row = ",".join(["hello", *("v" for _ in range(10_000))])
    content = f"{header}\n" + f"{row}\n" * 100
    test_set = await api.post(
        "/test-sets", json={"project_id": api.headers["X-Project"], "name": "wide"}
    )
    response, latencies = await _while_health_is_watched(
        server,
        api.post(
            f"/test-sets/{test_set.json()['id']}/import",
            content=content.encode(),
            headers={"Content-Type": "text/csv"},
        ),
    )
    assert response.status_code == 422, response.text[:300]
    _assert_responsive(latencies)


async def test_a_large_import_and_its_json_export_keep_the_process_answering(server, api):
    """3,000 tests of 150 variables each (about 6 MB of JSON Lines), in and out again."""
    lines = (
        json.dumps({"input": f"case {i}", "variables": {f"v{k}": f"value {k}" for k in range(150)}})
        for i in range(3_000)
    )
    content = "\n".join(lines).encode()
    test_set = await api.post(
        "/test-sets", json={"project_id": api.headers["X-Project"], "name": "large"}
    )
    test_set_id = test_set.json()["id"]
    imported, latencies = await _while_health_is_watched(
        server,
        api.post(
            f"/test-sets/{test_set_id}/import",
            content=content,
            headers={"Content-Type": "application/x-ndjson"},
        ),
    )
    assert imported.status_code in (200, 201), imported.text[:300]
    _assert_responsive(latencies)
    exported, latencies = await _while_health_is_watched(
        server, api.get(f"/test-sets/{test_set_id}/export", params={"format": "json"})
    )
    assert exported.status_code == 200
    cases = exported.json()
    assert len(cases) == 3_000
    assert cases[2_999]["variables"]["v149"] == "value 149"
    _assert_responsive(latencies)


@pytest.mark.parametrize("shape", ["many headers", "one long header"])
async def test_a_request_head_past_its_bound_is_refused_before_it_is_held(
    server: Server, shape: str
):
    """httptools kept every header it was sent, and a header's value however long: 100 MB of
    headers on a connection, never finished, held 100 MB of the server, no credential
    needed. A head past 64 KB is refused while it is still coming (400, the connection
    closed, maybe before the rest could be sent); an ordinary large head is served."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    answer = b""
    try:
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        if shape == "one long header":
            writer.write(b"X-Pad: ")
        for n in range(1024):  # 1 MB of head, never ended
            line = "p" * 1000 if shape == "one long header" else f"X-Pad-{n}: {'p' * 1000}\r\n"
            writer.write(line.encode())
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # refused: the connection's end
    except (ConnectionResetError, BrokenPipeError):
        answer = answer or b"(closed by the server)"
    finally:
        writer.close()
    assert answer.startswith((b"HTTP/1.1 400", b"(closed by the server)")), answer[:200]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        padded = {f"X-Pad-{n}": "p" * 1000 for n in range(30)}
        assert (await client.get("/health/live", headers=padded)).status_code == 200
