"""Reading the audit log through the API, for the audit tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.helpers import Account


def audit_url(organization_id: uuid.UUID) -> str:
    return f"/api/v1/organizations/{organization_id}/audit-log"


async def audit_entries(
    client: httpx.AsyncClient, account: Account, **params: Any
) -> list[dict[str, Any]]:
    """The entries of the account's organization (newest first) matching `params`."""
    response = await client.get(
        audit_url(account.organization_id),
        params={"limit": 200, **params},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def only_entry(client: httpx.AsyncClient, account: Account, action: str) -> dict[str, Any]:
    """The one entry of `action`: each change writes exactly one."""
    entries = await audit_entries(client, account, action=action)
    assert len(entries) == 1, entries
    return entries[0]
