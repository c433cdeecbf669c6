"""A connection test's host lookup is its organization's (utils.ssrf counts each
organization's lookups under way apart): one organization testing many models whose names
never answer holds none of another organization's lookups."""

from __future__ import annotations

import pytest

from tests.database.models.test_connection import check, new_model
from tests.helpers import register
from tests.tasks.test_job_lookups import owners_noting


async def test_a_connection_tests_lookup_is_counted_as_its_organizations(
    client, monkeypatch: pytest.MonkeyPatch
) -> None:
    noted = owners_noting(monkeypatch)
    owner = await register(client)
    model_id = await new_model(
        client,
        owner,
        provider="http",
        http={"url": "https://owned-lookup.test/chat", "response_path": "$.answer"},
    )
    result = await check(client, owner, model_id)
    assert "does not resolve" in result["error"]
    assert noted["owned-lookup.test"] == {str(owner.organization_id)}
