"""Model configurations through the HTTP API: per-provider rules, write-only encrypted keys shown
masked, masked HTTP headers, the SSRF guard at save time, authorization and bad input."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.helpers import Account, add_member, assert_problem, register, tenant_session
from utils.runtime import Runtime

MODELS = "/api/v1/models"
API_KEY = "sk-live-7Hq2x9Wm4Pz8Rk3Nv6Bt1Yc5Ja0Lf-abcd"
NEW_KEY = "sk-next-0Gd7Vu2Qs9Ei4Ow1Tr6Ky3Mn8Xp5Hb-wxyz"
HEADER_SECRET = "team-app-secret-5f0e3a9c71b2"

PROVIDER_BODIES: dict[str, dict[str, Any]] = {
    "openai": {"provider": "openai", "model": "gpt-4o-mini", "api_key": API_KEY},
    "anthropic": {"provider": "anthropic", "model": "claude-sonnet-4", "api_key": API_KEY},
    "google": {"provider": "google", "model": "gemini-2.5-flash", "api_key": API_KEY},
    "groq": {"provider": "groq", "model": "llama-3.3-70b", "api_key": API_KEY},
    "mistral": {"provider": "mistral", "model": "mistral-small", "api_key": API_KEY},
    "openai-compatible": {
        "provider": "openai-compatible",
        "model": "llama3",
        "base_url": "https://llm.example.com/v1",
    },
    "http": {
        "provider": "http",
        "http": {"url": "https://app.example.com/chat", "response_path": "$.data.answer"},
    },
    "demo": {"provider": "demo"},
}


def model_body(provider: str, /, **fields: Any) -> dict[str, Any]:
    return {"name": f"{provider} model", **PROVIDER_BODIES[provider], **fields}


async def new_model(
    client: httpx.AsyncClient, account: Account, provider: str = "openai", **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        MODELS, json=model_body(provider, **fields), headers=account.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def stored_row(database, account: Account, model_id: str) -> dict[str, Any]:
    async with tenant_session(database, account.organization_id) as session:
        row = (
            await session.execute(
                text(
                    "SELECT api_key_encrypted, api_key_hint, http_headers_encrypted,"
                    " http_header_names FROM model_configs WHERE id = :id"
                ),
                {"id": model_id},
            )
        ).one()
    return dict(row._mapping)


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> Account:
    return await register(client, name="Model Owner")


@pytest.fixture
def allow_private(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)


# --- CRUD per provider ---------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(PROVIDER_BODIES))
async def test_create_and_read_each_provider(client, owner, provider):
    created = await new_model(client, owner, provider)
    assert created["provider"] == provider
    assert created["name"] == f"{provider} model"
    assert created["demo"] is (provider == "demo")
    read = await client.get(f"{MODELS}/{created['id']}", headers=owner.headers)
    assert read.status_code == 200
    assert read.json() == created
    if provider == "openai-compatible":
        assert created["base_url"] == "https://llm.example.com/v1"
    if provider == "http":
        assert created["base_url"] is None
        assert created["http"] == {
            "url": "https://app.example.com/chat",
            "method": "POST",
            "headers": {},
            "body_template": '{"input": {{ input | tojson }}}',
            "response_path": "$.data.answer",
            "tool_calls_path": None,
            "stream_path": None,
        }
    else:
        assert created["http"] is None
    if provider == "demo":
        assert (created["model"], created["api_key"]) == ("demo", None)


async def test_all_settings_round_trip(client, owner):
    created = await new_model(
        client,
        owner,
        "openai",
        parameters={"temperature": 0.3, "max_tokens": 256, "stop": ["END"], "seed": 7},
        timeout_seconds=12.5,
        requests_per_minute=600,
        input_price_per_mtok="0.15",
        output_price_per_mtok=0.6,
    )
    assert created["model"] == "gpt-4o-mini"
    assert created["parameters"] == {
        "temperature": 0.3,
        "max_tokens": 256,
        "stop": ["END"],
        "seed": 7,
    }
    assert created["timeout_seconds"] == 12.5
    assert created["requests_per_minute"] == 600
    assert Decimal(created["input_price_per_mtok"]) == Decimal("0.15")
    assert Decimal(created["output_price_per_mtok"]) == Decimal("0.6")


async def test_defaults(client, owner):
    created = await new_model(client, owner, "openai")
    assert created["parameters"] == {}
    assert created["timeout_seconds"] == 60.0
    assert created["requests_per_minute"] is None
    assert created["input_price_per_mtok"] is None


async def test_list_filters_by_provider_and_pages(client, owner):
    for provider in ("openai", "demo", "http"):
        await new_model(client, owner, provider)
    await new_model(client, owner, "demo", name="second demo")
    everything = (await client.get(MODELS, headers=owner.headers)).json()
    assert everything["total"] == 4
    assert [m["name"] for m in everything["items"]] == sorted(
        m["name"] for m in everything["items"]
    )
    demos = (await client.get(MODELS, params={"provider": "demo"}, headers=owner.headers)).json()
    assert demos["total"] == 2
    assert {m["provider"] for m in demos["items"]} == {"demo"}
    page = (
        await client.get(MODELS, params={"limit": 1, "offset": 1}, headers=owner.headers)
    ).json()
    assert (len(page["items"]), page["total"], page["offset"]) == (1, 4, 1)
    bad = await client.get(MODELS, params={"provider": "skynet"}, headers=owner.headers)
    assert_problem(bad, 422, field="provider")


async def test_update_settings(client, owner):
    created = await new_model(client, owner, "openai", parameters={"temperature": 1})
    response = await client.patch(
        f"{MODELS}/{created['id']}",
        json={
            "name": "renamed",
            "model": "gpt-4.1",
            "parameters": {"max_tokens": 10},
            "timeout_seconds": 5,
            "requests_per_minute": None,
        },
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["name"], updated["model"]) == ("renamed", "gpt-4.1")
    assert updated["parameters"] == {"max_tokens": 10}
    assert updated["timeout_seconds"] == 5
    assert updated["api_key"] == created["api_key"]  # not part of the change: kept
    assert (await client.get(f"{MODELS}/{created['id']}", headers=owner.headers)).json() == updated


async def test_update_http_target(client, owner):
    created = await new_model(
        client, owner, "http", http={**PROVIDER_BODIES["http"]["http"], "headers": {"X-A": "1"}}
    )
    response = await client.patch(
        f"{MODELS}/{created['id']}",
        json={
            "http": {
                "url": "https://app.example.com/v2/ask",
                "method": "PUT",
                "body_template": '{"q": {{ input | tojson }}}',
                "response_path": "$.answer",
            }
        },
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["http"] == {
        "url": "https://app.example.com/v2/ask",
        "method": "PUT",
        "headers": {},  # the new target replaces the old one, headers included
        "body_template": '{"q": {{ input | tojson }}}',
        "response_path": "$.answer",
        "tool_calls_path": None,
        "stream_path": None,
    }


async def test_delete(client, owner):
    created = await new_model(client, owner, "demo")
    assert (
        await client.delete(f"{MODELS}/{created['id']}", headers=owner.headers)
    ).status_code == 204
    assert_problem(await client.get(f"{MODELS}/{created['id']}", headers=owner.headers), 404)
    assert_problem(await client.delete(f"{MODELS}/{created['id']}", headers=owner.headers), 404)


async def test_duplicate_name_is_conflict_within_an_organization(client, owner):
    await new_model(client, owner, "demo", name="Judge")
    duplicate = await client.post(
        MODELS, json=model_body("openai", name="Judge"), headers=owner.headers
    )
    assert_problem(duplicate, 409)
    other = await new_model(client, owner, "demo", name="Other")
    renamed = await client.patch(
        f"{MODELS}/{other['id']}", json={"name": "Judge"}, headers=owner.headers
    )
    assert_problem(renamed, 409)
    stranger = await register(client, name="Stranger")
    await new_model(client, stranger, "demo", name="Judge")  # names are per organization


# --- required fields per provider ----------------------------------------------------------


def _without(provider: str, field: str) -> dict[str, Any]:
    body = model_body(provider)
    del body[field]
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_without("openai", "api_key"), "api_key"),
        (_without("anthropic", "api_key"), "api_key"),
        (_without("google", "api_key"), "api_key"),
        (_without("groq", "api_key"), "api_key"),
        (_without("mistral", "api_key"), "api_key"),
        (_without("openai", "model"), "model"),
        (_without("openai-compatible", "base_url"), "base_url"),
        (_without("openai-compatible", "model"), "model"),
        (_without("http", "http"), "http"),
        (model_body("openai", http=PROVIDER_BODIES["http"]["http"]), "http"),
        (model_body("openai-compatible", http=PROVIDER_BODIES["http"]["http"]), "http"),
        (model_body("demo", http=PROVIDER_BODIES["http"]["http"]), "http"),
        (model_body("http", base_url="https://app.example.com"), "base_url"),
        (model_body("demo", base_url="https://app.example.com"), "base_url"),
        (model_body("openai", api_key="   "), "api_key"),
        (model_body("openai", provider="skynet"), "provider"),
    ],
)
async def test_provider_rules(client, owner, body, field):
    response = await client.post(MODELS, json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)
    assert (await client.get(MODELS, headers=owner.headers)).json()["total"] == 0


@pytest.mark.parametrize(
    ("provider", "changes", "field"),
    [
        ("openai", {"api_key": None}, "api_key"),  # a hosted provider needs its key
        ("openai", {"model": None}, "model"),
        ("openai", {"http": PROVIDER_BODIES["http"]["http"]}, "http"),
        ("openai", {"provider": "anthropic"}, "provider"),
        ("openai", {"name": None}, "name"),
        ("openai", {"timeout_seconds": None}, "timeout_seconds"),
        ("openai", {"parameters": None}, "parameters"),
        ("openai-compatible", {"base_url": None}, "base_url"),
        ("http", {"http": None}, "http"),
        ("http", {"base_url": "https://app.example.com"}, "base_url"),
        (
            "http",
            {"http": {"url": "https://x.example.com", "response_path": "$["}},
            "http.response_path",
        ),
        ("demo", {"base_url": "https://app.example.com"}, "base_url"),
    ],
)
async def test_update_keeps_the_provider_rules(client, owner, provider, changes, field):
    created = await new_model(client, owner, provider)
    response = await client.patch(f"{MODELS}/{created['id']}", json=changes, headers=owner.headers)
    assert_problem(response, 422, field=field)
    assert (await client.get(f"{MODELS}/{created['id']}", headers=owner.headers)).json() == created


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"temperature": 0.5}, "temperature"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"model": "x" * 201}, "model"),
        ({"api_key": "k" * 4001}, "api_key"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 601}, "timeout_seconds"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"input_price_per_mtok": -1}, "input_price_per_mtok"),
        ({"output_price_per_mtok": "0.0000001"}, "output_price_per_mtok"),
        ({"parameters": {"temperature": 2.5}}, "parameters.temperature"),
        ({"parameters": {"top_p": 1.5}}, "parameters.top_p"),
        ({"parameters": {"colour": "blue"}}, "parameters.colour"),
        ({"parameters": {"stop": ["s"] * 9}}, "parameters.stop"),
    ],
)
async def test_bad_create_bodies_name_the_field(client, owner, changes, field):
    response = await client.post(
        MODELS, json=model_body("openai", **changes), headers=owner.headers
    )
    body = assert_problem(response, 422, field=field)
    assert API_KEY not in json.dumps(body)


HTTP_TARGET = PROVIDER_BODIES["http"]["http"]


@pytest.mark.parametrize(
    ("http", "field"),
    [
        ({**HTTP_TARGET, "response_path": "$["}, "http.response_path"),
        ({**HTTP_TARGET, "response_path": "$.data[?(@.x =="}, "http.response_path"),
        ({**HTTP_TARGET, "response_path": ""}, "http.response_path"),
        ({**HTTP_TARGET, "stream_path": "$["}, "http.stream_path"),
        ({**HTTP_TARGET, "stream_path": ""}, "http.stream_path"),
        ({"url": "https://app.example.com/chat"}, "http.response_path"),
        ({**HTTP_TARGET, "body_template": '{"q": {{ input }'}, "http.body_template"),
        ({**HTTP_TARGET, "method": "DELETE"}, "http.method"),
        ({**HTTP_TARGET, "headers": {"Bad Header": "x"}}, "http.headers.Bad Header.[key]"),
        ({**HTTP_TARGET, "headers": {"X-Long": "v" * 4001}}, "http.headers.X-Long"),
        ({**HTTP_TARGET, "timeout": 3}, "http.timeout"),
        ({**HTTP_TARGET, "url": ""}, "http.url"),
        ({**HTTP_TARGET, "url": "https://app.example.com/" + "x" * 2000}, "http.url"),
    ],
)
async def test_bad_http_targets_name_the_field(client, owner, http, field):
    response = await client.post(MODELS, json=model_body("http", http=http), headers=owner.headers)
    assert_problem(response, 422, field=field)


async def test_body_template_syntax_error_names_the_line(client, owner):
    http = {**HTTP_TARGET, "body_template": '{\n  "q": {{ input | tojson }},\n  "x": {{ }}\n}'}
    response = await client.post(MODELS, json=model_body("http", http=http), headers=owner.headers)
    body = assert_problem(response, 422, field="http.body_template")
    assert body["errors"][0]["line"] == 3


# --- streaming ------------------------------------------------------------------------------

STREAMING_TARGET = {**HTTP_TARGET, "stream_path": "$.delta"}


@pytest.mark.parametrize(
    "provider", ["openai", "openai-compatible", "anthropic", "google", "groq", "mistral"]
)
async def test_every_model_provider_may_stream(client, owner, provider):
    created = await new_model(client, owner, provider, stream=True)
    assert created["stream"] is True
    read = await client.get(f"{MODELS}/{created['id']}", headers=owner.headers)
    assert read.json()["stream"] is True
    off = await client.patch(
        f"{MODELS}/{created['id']}", json={"stream": False}, headers=owner.headers
    )
    assert off.status_code == 200 and off.json()["stream"] is False


async def test_an_http_target_streams_with_a_stream_path(client, owner, database):
    created = await new_model(client, owner, "http", http=STREAMING_TARGET, stream=True)
    assert created["stream"] is True
    assert created["http"]["stream_path"] == "$.delta"
    read = await client.get(f"{MODELS}/{created['id']}", headers=owner.headers)
    assert read.json() == created
    async with tenant_session(database, owner.organization_id) as session:
        stored = await session.scalar(
            text("SELECT stream_path FROM model_configs WHERE id = :id"), {"id": created["id"]}
        )
    assert stored == "$.delta"

    # Other changes keep it; a new target without a stream path cannot stream.
    renamed = await client.patch(
        f"{MODELS}/{created['id']}", json={"name": "renamed"}, headers=owner.headers
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["http"]["stream_path"] == "$.delta"
    dropped = await client.patch(
        f"{MODELS}/{created['id']}", json={"http": HTTP_TARGET}, headers=owner.headers
    )
    body = assert_problem(dropped, 422, field="stream")
    assert "stream_path" in json.dumps(body)
    # ... unless it stops streaming at the same time.
    both = await client.patch(
        f"{MODELS}/{created['id']}",
        json={"http": HTTP_TARGET, "stream": False},
        headers=owner.headers,
    )
    assert both.status_code == 200, both.text
    assert (both.json()["stream"], both.json()["http"]["stream_path"]) == (False, None)


async def test_an_http_target_without_a_stream_path_cannot_stream(client, owner):
    refused = await client.post(MODELS, json=model_body("http", stream=True), headers=owner.headers)
    body = assert_problem(refused, 422, field="stream")
    assert "http.stream_path" in body["errors"][0]["message"]

    created = await new_model(client, owner, "http")
    switched = await client.patch(
        f"{MODELS}/{created['id']}", json={"stream": True}, headers=owner.headers
    )
    assert_problem(switched, 422, field="stream")
    # A stream path given with it is enough.
    together = await client.patch(
        f"{MODELS}/{created['id']}",
        json={"stream": True, "http": STREAMING_TARGET},
        headers=owner.headers,
    )
    assert together.status_code == 200, together.text
    assert together.json()["stream"] is True
    assert together.json()["http"]["stream_path"] == "$.delta"


async def test_the_demo_provider_does_not_stream(client, owner):
    refused = await client.post(MODELS, json=model_body("demo", stream=True), headers=owner.headers)
    assert_problem(refused, 422, field="stream")
    created = await new_model(client, owner, "demo")
    switched = await client.patch(
        f"{MODELS}/{created['id']}", json={"stream": True}, headers=owner.headers
    )
    assert_problem(switched, 422, field="stream")


async def test_a_stream_path_is_refused_outside_http_and_when_bad(client, owner):
    created = await new_model(client, owner, "http")
    bad = await client.patch(
        f"{MODELS}/{created['id']}",
        json={"http": {**HTTP_TARGET, "stream_path": "$.delta[?(@ =="}},
        headers=owner.headers,
    )
    assert_problem(bad, 422, field="http.stream_path")


# --- the API key: write-only, encrypted, masked --------------------------------------------


async def test_api_key_is_masked_everywhere_and_never_logged(
    client, owner, database, runtime, capsys
):
    from utils.logging import configure_logging

    configure_logging("json")
    try:
        created = await new_model(client, owner, "openai")
        model_id = created["id"]
        responses = [
            await client.get(f"{MODELS}/{model_id}", headers=owner.headers),
            await client.get(MODELS, headers=owner.headers),
            await client.patch(
                f"{MODELS}/{model_id}", json={"name": "renamed"}, headers=owner.headers
            ),
            # A refused request that carries a key must not echo it either.
            await client.post(
                MODELS,
                json=model_body("openai", api_key=NEW_KEY, timeout_seconds=-1),
                headers=owner.headers,
            ),
            await client.patch(
                f"{MODELS}/{model_id}",
                json={"api_key": NEW_KEY, "unknown": 1},
                headers=owner.headers,
            ),
        ]
        err = capsys.readouterr().err
    finally:
        configure_logging("console")
    assert created["api_key"] == "sk-…abcd"
    for response in responses:
        assert response.status_code in (200, 422), response.text
        for secret in (API_KEY, NEW_KEY, API_KEY[3:-4], NEW_KEY[3:-4]):
            assert secret not in response.text
    assert responses[0].json()["api_key"] == "sk-…abcd"
    assert responses[1].json()["items"][0]["api_key"] == "sk-…abcd"
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len([line for line in lines if line.get("event") == "request"]) >= 6
    for secret in (API_KEY, NEW_KEY, API_KEY[3:-4], NEW_KEY[3:-4]):
        assert secret not in err

    row = await stored_row(database, owner, model_id)
    ciphertext = bytes(row["api_key_encrypted"])
    assert API_KEY.encode() not in ciphertext
    assert API_KEY[3:-4].encode() not in ciphertext
    assert runtime.secret_box.decrypt(ciphertext) == API_KEY
    assert row["api_key_hint"] == "sk-…abcd"


async def test_a_new_key_changes_the_hint_and_null_removes_it(client, owner, database, runtime):
    created = await new_model(client, owner, "openai-compatible", api_key=API_KEY)
    assert created["api_key"] == "sk-…abcd"
    path = f"{MODELS}/{created['id']}"

    rotated = await client.patch(path, json={"api_key": NEW_KEY}, headers=owner.headers)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["api_key"] == "sk-…wxyz"
    assert NEW_KEY not in rotated.text
    row = await stored_row(database, owner, created["id"])
    assert runtime.secret_box.decrypt(bytes(row["api_key_encrypted"])) == NEW_KEY

    untouched = await client.patch(path, json={"timeout_seconds": 3}, headers=owner.headers)
    assert untouched.json()["api_key"] == "sk-…wxyz"

    removed = await client.patch(path, json={"api_key": None}, headers=owner.headers)
    assert removed.status_code == 200, removed.text
    assert removed.json()["api_key"] is None
    row = await stored_row(database, owner, created["id"])
    assert (row["api_key_encrypted"], row["api_key_hint"]) == (None, None)


async def test_moving_base_url_asks_for_the_key_again(client, owner, database, runtime):
    """The stored key goes wherever base_url points, and no one is shown it: moving base_url
    takes the key again (or null), so that a member cannot send it to an address of theirs."""
    created = await new_model(client, owner, "openai-compatible", api_key=API_KEY)
    path = f"{MODELS}/{created['id']}"
    elsewhere = "https://collector.example.net/v1"

    moved = await client.patch(path, json={"base_url": elsewhere}, headers=owner.headers)
    assert "api_key again" in assert_problem(moved, 422, field="api_key")["detail"]
    assert (await client.get(path, headers=owner.headers)).json() == created

    with_key = {"base_url": elsewhere, "api_key": NEW_KEY}
    rekeyed = await client.patch(path, json=with_key, headers=owner.headers)
    assert rekeyed.status_code == 200, rekeyed.text
    row = await stored_row(database, owner, created["id"])
    assert runtime.secret_box.decrypt(bytes(row["api_key_encrypted"])) == NEW_KEY
    back = {"base_url": created["base_url"], "api_key": None}
    dropped = await client.patch(path, json=back, headers=owner.headers)
    assert (dropped.status_code, dropped.json()["api_key"]) == (200, None), dropped.text
    # The same address again moves nothing, and a model with no key has none to send.
    for body in ({"base_url": created["base_url"]}, {"base_url": elsewhere}):
        unchanged = await client.patch(path, json=body, headers=owner.headers)
        assert unchanged.status_code == 200, unchanged.text


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("sk-" + "a" * 44 + "wxyz", "sk-…wxyz"),
        ("a" * 26 + "wxyz", "…wxyz"),
        ("token-abc123", "…23"),  # it showed 7 of its 12 characters: "tok…c123"
        ("abcdefghijk", "…"),
        ("short", "…"),
    ],
)
async def test_short_keys_show_little(client, owner, key, hint):
    created = await new_model(client, owner, "openai", api_key=key)
    assert created["api_key"] == hint


async def test_http_headers_are_shown_masked_and_stored_encrypted(client, owner, database, runtime):
    headers = {"Authorization": f"Bearer {HEADER_SECRET}", "X-Team": "blue-team-7"}
    created = await new_model(client, owner, "http", http={**HTTP_TARGET, "headers": headers})
    assert created["http"]["headers"] == {"Authorization": "…", "X-Team": "…"}
    read = await client.get(f"{MODELS}/{created['id']}", headers=owner.headers)
    listed = await client.get(MODELS, headers=owner.headers)
    renamed = await client.patch(
        f"{MODELS}/{created['id']}", json={"name": "renamed"}, headers=owner.headers
    )
    for response in (read, listed, renamed):
        assert HEADER_SECRET not in response.text
        assert "blue-team-7" not in response.text
    assert renamed.json()["http"]["headers"] == {"Authorization": "…", "X-Team": "…"}

    row = await stored_row(database, owner, created["id"])
    ciphertext = bytes(row["http_headers_encrypted"])
    assert HEADER_SECRET.encode() not in ciphertext
    assert json.loads(runtime.secret_box.decrypt(ciphertext)) == headers
    assert row["http_header_names"] == ["Authorization", "X-Team"]


@pytest.mark.parametrize("value", [f"{HEADER_SECRET}\nX-Other: 1", f"{HEADER_SECRET}\x00", "é"])
async def test_a_header_value_no_client_can_send_is_refused_unechoed(client, owner, value):
    """Saved, it failed every call later, as the provider's unusable answer."""
    headers = {"Authorization": value}
    refused = await client.post(
        MODELS,
        json=model_body("http", http={**HTTP_TARGET, "headers": headers}),
        headers=owner.headers,
    )
    assert_problem(refused, 422, field="http.headers.Authorization")
    assert HEADER_SECRET not in refused.text


async def test_a_model_whose_stored_header_breaks_a_later_rule_is_edited_or_told_why(
    client, owner, database, runtime, capsys
):
    """A header value saved before its rule (a character past ASCII, pasted with the token):
    renaming the model rebuilt the target from what is stored, failed its check, and answered
    500, logging the decrypted value. It is a 422 on `http`, naming the header, not its value."""
    created = await new_model(client, owner, "http")
    stored = json.dumps({"Authorization": f"Bearer {HEADER_SECRET}\u00e9"})
    async with tenant_session(database, owner.organization_id) as session:
        await session.execute(
            text("UPDATE model_configs SET http_headers_encrypted = :headers WHERE id = :id"),
            {"headers": runtime.secret_box.encrypt(stored), "id": created["id"]},
        )
    renamed = await client.patch(
        f"{MODELS}/{created['id']}", json={"name": "renamed"}, headers=owner.headers
    )
    problem = assert_problem(renamed, 422, field="http")
    assert "headers.Authorization" in problem["errors"][0]["message"]
    assert HEADER_SECRET not in renamed.text
    assert HEADER_SECRET not in capsys.readouterr().err
    # Given again, whole, the model is edited.
    again = {"name": "renamed", "http": HTTP_TARGET}
    fixed = await client.patch(f"{MODELS}/{created['id']}", json=again, headers=owner.headers)
    assert fixed.status_code == 200, fixed.text


# --- the SSRF guard at save time -----------------------------------------------------------

UNSAFE_URLS = [
    "http://127.0.0.1:8080/v1",
    "http://localhost/v1",
    "http://LOCALHOST:11434",
    "http://api.localhost/v1",
    "http://10.0.0.1/v1",
    "http://192.168.1.20/v1",
    "http://172.16.5.4/v1",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0:8000",
    "http://[::1]:8000/v1",
    "http://[::ffff:127.0.0.1]/v1",
    "http://[fd00::1]/v1",
    "ftp://files.example.com/v1",
    "file:///etc/passwd",
    "gopher://example.com/",
    "https://user:password@llm.example.com/v1",
    "not a url",
    "https:///v1",
]


@pytest.mark.parametrize("url", UNSAFE_URLS)
async def test_unsafe_base_urls_are_refused(client, owner, url):
    response = await client.post(
        MODELS, json=model_body("openai-compatible", base_url=url), headers=owner.headers
    )
    assert_problem(response, 422, field="base_url")


@pytest.mark.parametrize("url", UNSAFE_URLS)
async def test_unsafe_http_target_urls_are_refused(client, owner, url):
    response = await client.post(
        MODELS, json=model_body("http", http={**HTTP_TARGET, "url": url}), headers=owner.headers
    )
    assert_problem(response, 422, field="http.url")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_hosted_providers_base_url_is_guarded_too(client, owner, provider):
    response = await client.post(
        MODELS,
        json=model_body(provider, base_url="http://169.254.169.254/"),
        headers=owner.headers,
    )
    assert_problem(response, 422, field="base_url")


async def test_updates_are_guarded(client, owner):
    compatible = await new_model(client, owner, "openai-compatible")
    http = await new_model(client, owner, "http")
    moved = await client.patch(
        f"{MODELS}/{compatible['id']}",
        json={"base_url": "http://10.1.2.3/v1"},
        headers=owner.headers,
    )
    assert_problem(moved, 422, field="base_url")
    retargeted = await client.patch(
        f"{MODELS}/{http['id']}",
        json={"http": {**HTTP_TARGET, "url": "http://127.0.0.1:9000/chat"}},
        headers=owner.headers,
    )
    assert_problem(retargeted, 422, field="http.url")
    assert (await client.get(f"{MODELS}/{http['id']}", headers=owner.headers)).json() == http


async def test_the_error_says_how_to_allow_private_networks(client, owner):
    response = await client.post(
        MODELS,
        json=model_body("openai-compatible", base_url="http://10.0.0.1/v1"),
        headers=owner.headers,
    )
    body = assert_problem(response, 422, field="base_url")
    assert "ASSAY_ALLOW_PRIVATE_NETWORKS" in body["detail"]


@pytest.mark.usefixtures("allow_private")
async def test_private_networks_when_the_operator_allows_them(client, owner):
    compatible = await new_model(
        client, owner, "openai-compatible", base_url="http://localhost:11434/v1"
    )
    assert compatible["base_url"] == "http://localhost:11434/v1"
    http = await new_model(
        client, owner, "http", http={**HTTP_TARGET, "url": "http://10.0.0.1/chat"}
    )
    assert http["http"]["url"] == "http://10.0.0.1/chat"
    # Other schemes stay refused.
    for url in ("file:///etc/passwd", "ftp://10.0.0.1/"):
        response = await client.post(
            MODELS,
            json=model_body("openai-compatible", base_url=url, name=url),
            headers=owner.headers,
        )
        assert_problem(response, 422, field="base_url")


# --- authorization -------------------------------------------------------------------------


async def test_viewer_reads_but_cannot_write(client, owner):
    created = await new_model(client, owner, "openai")
    viewer = await add_member(client, owner, "viewer")
    assert (await client.get(f"{MODELS}/{created['id']}", headers=viewer.headers)).json() == created
    assert (await client.get(MODELS, headers=viewer.headers)).json()["total"] == 1
    writes = [
        ("POST", MODELS, model_body("demo")),
        ("PATCH", f"{MODELS}/{created['id']}", {"name": "mine"}),
        ("DELETE", f"{MODELS}/{created['id']}", None),
        ("POST", f"{MODELS}/{created['id']}/test-connection", {}),
    ]
    for method, path, body in writes:
        assert_problem(await client.request(method, path, json=body, headers=viewer.headers), 403)
    assert (await client.get(f"{MODELS}/{created['id']}", headers=owner.headers)).json() == created


async def test_viewers_read_urls_without_their_path_and_query(client, owner):
    """An endpoint may carry its key in its URL (Azure Functions' `?code=`): viewers, who may
    not edit it, read its scheme and host only; members read it whole."""
    secret = "fn-key-9d1c52e7b04a"
    compatible = await new_model(
        client, owner, "openai-compatible", base_url=f"https://llm.example.com/v1?code={secret}"
    )
    app = await new_model(
        client,
        owner,
        "http",
        http={**HTTP_TARGET, "url": f"https://fn.example.net/chat?code={secret}"},
    )
    viewer = await add_member(client, owner, "viewer")
    for created in (compatible, app):
        seen = await client.get(f"{MODELS}/{created['id']}", headers=viewer.headers)
        assert seen.status_code == 200 and secret not in seen.text, seen.text
        assert (
            await client.get(f"{MODELS}/{created['id']}", headers=owner.headers)
        ).json() == created
    url = (await client.get(f"{MODELS}/{app['id']}", headers=viewer.headers)).json()["http"]["url"]
    assert url.startswith("https://fn.example.net/") and "chat" not in url  # (as webhooks')
    listed = await client.get(MODELS, headers=viewer.headers)
    assert listed.json()["total"] == 2 and secret not in listed.text
    assert secret in compatible["base_url"] and secret in app["http"]["url"]


async def test_member_can_write(client, owner):
    member = await add_member(client, owner, "member")
    created = await new_model(client, member, "demo")
    response = await client.patch(
        f"{MODELS}/{created['id']}", json={"name": "by member"}, headers=member.headers
    )
    assert response.status_code == 200


async def test_another_organizations_model_is_404(client, owner):
    created = await new_model(client, owner, "openai")
    stranger = await register(client, name="Stranger")
    base = f"{MODELS}/{created['id']}"
    for method, path, body in [
        ("GET", base, None),
        ("PATCH", base, {"name": "mine"}),
        ("DELETE", base, None),
        ("POST", f"{base}/test-connection", {}),
    ]:
        assert_problem(await client.request(method, path, json=body, headers=stranger.headers), 404)
    assert (await client.get(MODELS, headers=stranger.headers)).json()["total"] == 0
    assert (await client.get(base, headers=owner.headers)).json() == created


async def test_anonymous_is_401(client):
    assert_problem(await client.get(MODELS), 401)
    assert_problem(await client.post(MODELS, json=model_body("demo")), 401)


async def test_bad_or_unknown_ids(client, owner):
    assert_problem(await client.get(f"{MODELS}/nope", headers=owner.headers), 422)
    assert_problem(await client.get(f"{MODELS}/{uuid.uuid4()}", headers=owner.headers), 404)


HTTP_TARGET = {
    "url": "https://app.example.com/chat",
    "response_path": "$.answer",
    "headers": {"Authorization": "Bearer old-token-123456"},
}


async def _http_model(client: httpx.AsyncClient, owner: Account) -> str:
    response = await client.post(
        "/api/v1/models",
        json={"name": "app", "provider": "http", "http": HTTP_TARGET},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize("base_url", [None, "https://elsewhere.example.com/v1"])
async def test_an_http_targets_base_url_is_refused_null_or_not(client, base_url) -> None:
    """Its address is http.url (kept in the same column): a null base_url wiped it, and the
    target failed at every call after."""
    owner = await register(client)
    model_id = await _http_model(client, owner)
    patched = await client.patch(
        f"/api/v1/models/{model_id}", json={"base_url": base_url}, headers=owner.headers
    )
    assert_problem(patched, 422, field="base_url")
    read = await client.get(f"/api/v1/models/{model_id}", headers=owner.headers)
    assert read.json()["http"]["url"] == HTTP_TARGET["url"]


async def test_headers_no_key_can_read_are_entered_again_by_a_patch(client, database) -> None:
    """Stored under a key the server no longer holds: a patch giving http anew replaces them,
    one leaving http as it is says to give it (not a 500)."""
    from cryptography.fernet import Fernet

    from utils.secrets import SecretBox

    owner = await register(client)
    model_id = await _http_model(client, owner)
    foreign = SecretBox([Fernet.generate_key().decode()]).encrypt('{"Authorization": "x"}')
    async with tenant_session(database, owner.organization_id) as session:
        await session.execute(
            text("UPDATE model_configs SET http_headers_encrypted = :v WHERE id = :id"),
            {"v": foreign, "id": model_id},
        )
    url = f"/api/v1/models/{model_id}"
    renamed = await client.patch(url, json={"name": "renamed"}, headers=owner.headers)
    assert "give http again" in assert_problem(renamed, 422, field="http")["detail"]
    again = {**HTTP_TARGET, "headers": {"Authorization": "Bearer new-token-654321"}}
    entered = await client.patch(url, json={"http": again}, headers=owner.headers)
    assert entered.status_code == 200, entered.text
    renamed = await client.patch(url, json={"name": "renamed"}, headers=owner.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"
