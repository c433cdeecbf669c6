"""An API key travels in a header: one no HTTP client can send (a line break, a NUL, a pasted
character past ASCII) is refused when saved, naming `api_key` and not repeating the key. It was
saved, then every call failed with a misleading error ("Invalid header value", a
UnicodeEncodeError, a connection error tried three times that opened the circuit breaker)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from tests.helpers import Account, assert_problem, register, tenant_session
from utils.logging import configure_logging

MODELS = "/api/v1/models"
KEY = "sk-abcdef123456"
UNSENDABLE = {
    "a header smuggled after a line break": f"{KEY}\nX-Injected: 1",
    "a carriage return inside": f"sk-abc\r{KEY}",
    "a pasted typographic quote": f"{KEY}\u2019",
    "a letter past ASCII": f"sk-caf\u00e9-{KEY}",
    "a NUL": f"{KEY}\u0000",
    "a DEL": f"{KEY}\u007f",
}


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> Account:
    return await register(client, name="Key Owner")


def _body(api_key: str, name: str = "hosted") -> dict[str, str]:
    return {"name": name, "provider": "anthropic", "model": "claude-sonnet-4", "api_key": api_key}


async def _stored_key(database, runtime, account: Account, model_id: str) -> str:
    async with tenant_session(database, account.organization_id) as session:
        stored = (
            await session.execute(
                text("SELECT api_key_encrypted FROM model_configs WHERE id = :id"),
                {"id": model_id},
            )
        ).scalar_one()
    return str(runtime.secret_box.decrypt(bytes(stored)))


@pytest.mark.parametrize("api_key", UNSENDABLE.values(), ids=UNSENDABLE.keys())
async def test_a_key_no_client_can_send_is_refused_naming_the_field_not_the_key(
    client, owner, database, runtime, api_key, capsys
):
    configure_logging("json")
    try:
        created = await client.post(MODELS, json=_body(api_key), headers=owner.headers)
        kept = await client.post(MODELS, json=_body(KEY, "kept"), headers=owner.headers)
        assert kept.status_code == 201, kept.text
        edited = await client.patch(
            f"{MODELS}/{kept.json()['id']}", json={"api_key": api_key}, headers=owner.headers
        )
        err = capsys.readouterr().err
    finally:
        configure_logging("console")
    for refused in (created, edited):
        problem = assert_problem(refused, 422, field="api_key")
        assert "printable ASCII" in problem["detail"]
        assert KEY not in refused.text
    assert KEY not in err
    listed = await client.get(MODELS, headers=owner.headers)
    assert [model["id"] for model in listed.json()["items"]] == [kept.json()["id"]]
    assert await _stored_key(database, runtime, owner, kept.json()["id"]) == KEY


async def test_a_key_pasted_with_surrounding_whitespace_is_kept_trimmed(
    client, owner, database, runtime
):
    """Whitespace around the key is trimmed when it is stored, so a trailing line break (a key
    copied from a terminal) is not one that would be sent."""
    created = await client.post(MODELS, json=_body(f"  {KEY}\n"), headers=owner.headers)
    assert created.status_code == 201, created.text
    assert await _stored_key(database, runtime, owner, created.json()["id"]) == KEY
    tabbed = await client.patch(
        f"{MODELS}/{created.json()['id']}", json={"api_key": f"{KEY}\t"}, headers=owner.headers
    )
    assert tabbed.status_code == 200, tabbed.text
