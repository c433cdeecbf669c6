"""`/metrics` on a real server whose run is worked by a separate worker process on the same
host: the scrape of the API process reports the worker's provider calls and cases (the
processes share the metrics directory), and every counter moves by what the run did."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.servers import create_run, live_env, start_server, start_worker
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault

pytestmark = pytest.mark.slow

CASES = 12
TOKEN = "scrape-token-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def total(scrape: dict, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and wanted <= ls)


async def scrape(client: httpx.AsyncClient) -> dict:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_a_scrape_after_a_run_counts_what_the_worker_process_did(tmp_path):
    data_dir = tmp_path / "data"
    env = {"ASSAY_METRICS_TOKEN": TOKEN}
    with FakeOpenAI(require_api_key="sk-test") as fake:
        api = start_server({**live_env(data_dir, 0), **env}, tmp_path / "api.log")
        worker = start_worker({**live_env(data_dir, 2), **env}, tmp_path / "worker.log")
        try:
            await asyncio.to_thread(api.wait_healthy, 120)
            async with httpx.AsyncClient(base_url=api.url, timeout=30) as root:
                assert (await root.get("/metrics")).status_code == 401
                wrong = await root.get("/metrics", headers={"Authorization": "Bearer nope"})
                assert wrong.status_code == 401
                assert wrong.headers["content-type"] == "application/problem+json"
                before = await scrape(root)
                # One rate-limited answer first: retried, and counted as a 429 attempt.
                fake.enqueue(Fault.http(429, retry_after=0))
                api_client = httpx.AsyncClient(base_url=f"{api.url}/api/v1", timeout=30)
                async with api_client as client:
                    run = await create_run(client, fake, cases=CASES, concurrency=4)
                    deadline = time.monotonic() + 90
                    while (current := (await client.get(f"/runs/{run['id']}")).json())[
                        "status"
                    ] not in ("completed", "failed", "cancelled"):
                        assert time.monotonic() < deadline, current
                        await asyncio.sleep(0.2)
                    results = (await client.get(f"/runs/{run['id']}/results?limit=100")).json()
                after = await scrape(root)
        finally:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(30)
            api.stop()

    assert current["status"] == "completed", current
    items = results["items"]
    assert len(items) == CASES
    labels = {"provider": "openai-compatible", "model": "fake-model"}

    def moved(name: str, **more: str) -> float:
        return total(after, name, **more) - total(before, name, **more)

    assert moved("assay_provider_calls_total", **labels, outcome="ok") == CASES
    assert moved("assay_provider_calls_total", **labels, outcome="429") == 1
    assert moved("assay_provider_call_duration_seconds_count", **labels) == CASES + 1
    assert moved("assay_provider_tokens_total", **labels, direction="input") == sum(
        item["input_tokens"] for item in items
    )
    assert moved("assay_provider_tokens_total", **labels, direction="output") == sum(
        item["output_tokens"] for item in items
    )
    assert moved("assay_cases_total", status="passed") == CASES
    assert moved("assay_http_requests_total", method="POST", route="/api/v1/runs") == 1
    assert (
        moved(
            "assay_http_requests_total", method="GET", route="/api/v1/runs/{run_id}", status="200"
        )
        >= 1
    )
    # Database-wide figures: the run is counted by status, no job is left waiting or dead.
    assert value(after, "assay_runs", status="completed") == 1
    assert value(after, "assay_database_up") == 1
    assert total(after, "assay_jobs_dead") == 0
    assert value(after, "assay_db_pool_capacity") > 0
    # No id is a label: every label value is a template, a name or an enumeration.
    run_id = run["id"]
    assert not any(run_id in str(labels) for (_, labels) in after)


async def test_metrics_are_off_without_a_token(tmp_path):
    api = start_server(live_env(tmp_path / "data", 0), tmp_path / "api.log")
    try:
        await asyncio.to_thread(api.wait_healthy, 120)
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as root:
            response = await root.get("/metrics", headers={"Authorization": "Bearer anything"})
    finally:
        api.stop()
    assert response.status_code == 404
    assert "ASSAY_METRICS_TOKEN" in response.json()["detail"]
