"""Requests are counted under their route's template: a caller cannot mint label values by
choosing paths (each would be a series of its own in every scrape)."""

from __future__ import annotations

import uuid

from tests.helpers import register
from utils.metrics import metrics


def _routes() -> set[str]:
    return {
        sample.labels["route"]
        for family in metrics().registry.collect()
        if family.name == "assay_http_requests"
        for sample in family.samples
    }


async def test_paths_become_templates_and_strangers_one_label(client) -> None:
    account = await register(client)
    for _ in range(2):
        test_id = uuid.uuid4()
        await client.get(f"/api/v1/tests/{test_id}", headers=account.headers)
        await client.get(f"/public/runs/{test_id}/events")
        for junk in (
            f"/public/{uuid.uuid4()}/a/b/c",
            f"/{uuid.uuid4()}",
            f"/api/v1/{uuid.uuid4()}",
        ):
            assert (await client.get(junk)).status_code == 404
    routes = _routes()
    assert {"/api/v1/tests/{test_id}", "/public/runs/{run_id}/events", "unmatched"} <= routes
    assert not any(len(part) == 36 for route in routes for part in route.split("/"))
