"""`POST /models/{id}/test-connection`: one real call against fake providers on loopback, the
provider's errors in plain words (never a 5xx from Assay), and the SSRF guard at call time."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from database.core import get_database
from tests.fakes.http_app import FakeHttpApp
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.helpers import Account, assert_problem, register, tenant_session
from utils import ssrf
from utils.runtime import Runtime
from utils.secrets import SecretBox

MODELS = "/api/v1/models"
API_KEY = "sk-fake-3Jd8Kq1Lw7Zp4Xn9Vb2Mc6Rt0Ys5-k3y9"
APP_TOKEN = "app-token-6c1f0b7e94d2"
PING = "Reply with the single word: pong"
BODY_TEMPLATE = (
    '{"message": {{ input | tojson }}, "history": {{ messages | tojson }},'
    ' "vars": {{ variables | tojson }}}'
)


@pytest.fixture
def private(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The fakes listen on loopback: allow private networks (tests may switch it off again)."""
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    return monkeypatch


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(require_api_key=API_KEY) as server:
        yield server


@pytest.fixture
def team_app() -> Iterator[FakeHttpApp]:
    with FakeHttpApp(paths=["/chat"]) as server:
        yield server


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> Account:
    return await register(client, name="Connection Tester")


async def new_model(client: httpx.AsyncClient, account: Account, **body: Any) -> str:
    body.setdefault("name", f"under test {uuid.uuid4().hex[:8]}")
    response = await client.post(MODELS, json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def compatible_model(
    client: httpx.AsyncClient, account: Account, fake: FakeOpenAI, **extra: Any
) -> str:
    return await new_model(
        client,
        account,
        provider="openai-compatible",
        model="fake-model",
        base_url=fake.base_url,
        api_key=API_KEY,
        **extra,
    )


async def http_model(
    client: httpx.AsyncClient, account: Account, app: FakeHttpApp, **extra: Any
) -> str:
    target = {
        "url": f"{app.url}/chat",
        "headers": {"Authorization": f"Bearer {APP_TOKEN}", "X-Team": "evals"},
        "body_template": BODY_TEMPLATE,
        "response_path": "$.data.answer",
        **extra.pop("http", {}),
    }
    return await new_model(client, account, provider="http", http=target, **extra)


async def check(
    client: httpx.AsyncClient, account: Account, model_id: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post(
        f"{MODELS}/{model_id}/test-connection", json=body, headers=account.headers
    )
    assert response.status_code == 200, response.text
    result = dict(response.json())
    if not result["ok"]:
        assert result["reply"] is None
        assert isinstance(result["error"], str) and result["error"]
        assert "Traceback" not in result["error"]
    return result


# --- openai-compatible ---------------------------------------------------------------------


@pytest.mark.usefixtures("private")
async def test_openai_compatible_round_trip(client, owner, fake):
    model_id = await compatible_model(
        client, owner, fake, parameters={"temperature": 0.1, "max_tokens": 20}
    )
    result = await check(client, owner, model_id)
    assert result["ok"] is True
    assert result["error"] is None
    assert result["reply"] == f"echo: {PING}"
    assert result["latency_ms"] > 0
    assert (result["input_tokens"], result["output_tokens"]) == (6, 7)

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.json["model"] == "fake-model"
    assert request.json["messages"][-1] == {"role": "user", "content": PING}
    assert request.json["temperature"] == 0.1
    assert 20 in (request.json.get("max_tokens"), request.json.get("max_completion_tokens"))


@pytest.mark.usefixtures("private")
async def test_the_input_can_be_chosen(client, owner, fake):
    model_id = await compatible_model(client, owner, fake)
    result = await check(client, owner, model_id, {"input": "are you there?"})
    assert result["reply"] == "echo: are you there?"
    assert fake.requests[0].json["messages"][-1]["content"] == "are you there?"


@pytest.mark.usefixtures("private")
async def test_bad_test_inputs_are_422(client, owner, fake):
    model_id = await compatible_model(client, owner, fake)
    path = f"{MODELS}/{model_id}/test-connection"
    for body, field in [
        ({"input": ""}, "input"),
        ({"input": "x" * 4001}, "input"),
        ({"prompt": "hi"}, "prompt"),
    ]:
        assert_problem(await client.post(path, json=body, headers=owner.headers), 422, field=field)
    assert fake.requests == []


@pytest.mark.usefixtures("private")
@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault.http(401), ["401", "Unauthorized", "Fake OpenAI error 401"]),
        (
            Fault.http(403, {"error": {"message": "Project suspended"}}),
            ["403", "Project suspended"],
        ),
        (Fault.http(404, {"error": {"message": "The model does not exist"}}), ["404", "model"]),
        (Fault.http(500), ["500", "Internal Server Error"]),
        (Fault.http(503, "upstream overloaded"), ["503", "upstream overloaded"]),
        (Fault.http(429, retry_after=20), ["429", "Too Many Requests"]),
        (Fault.malformed(), []),
        (Fault.close(), []),
    ],
)
async def test_openai_compatible_errors_in_plain_words(client, owner, fake, fault, words):
    model_id = await compatible_model(client, owner, fake)
    fake.enqueue(fault)
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    for word in words:
        assert word in result["error"]
    assert len(fake.requests) == 1  # one call: no retries behind the user's back
    assert API_KEY not in json.dumps(result)


@pytest.mark.usefixtures("private")
async def test_wrong_api_key(client, owner, fake):
    model_id = await compatible_model(client, owner, fake)
    fake.require_api_key = "sk-another-key"
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    assert "401" in result["error"]
    assert "Incorrect API key provided" in result["error"]


@pytest.mark.usefixtures("private")
async def test_a_provider_echoing_the_key_does_not_leak_it(client, owner, fake):
    model_id = await compatible_model(client, owner, fake)
    fake.enqueue(Fault.http(401, {"error": {"message": f"Incorrect API key provided: {API_KEY}"}}))
    response = await client.post(f"{MODELS}/{model_id}/test-connection", headers=owner.headers)
    assert response.json()["ok"] is False
    assert "Incorrect API key provided" in response.json()["error"]
    assert API_KEY not in response.text


@pytest.mark.usefixtures("private")
async def test_a_hanging_provider_times_out(client, owner, fake):
    model_id = await compatible_model(client, owner, fake, timeout_seconds=0.5)
    fake.enqueue(Fault.hang())
    started = time.monotonic()
    result = await check(client, owner, model_id)
    assert time.monotonic() - started < 10
    assert result["ok"] is False
    assert "0.5 s" in result["error"]
    assert result["latency_ms"] is None


@pytest.mark.usefixtures("private")
async def test_an_unreachable_provider(client, owner, fake):
    model_id = await compatible_model(client, owner, fake)
    fake.stop()  # nothing listens on the port any more
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    assert "reach" in result["error"] or "connect" in result["error"].lower()


@pytest.mark.usefixtures("private")
async def test_a_key_that_cannot_be_decrypted_is_reported_not_a_crash(
    client, owner, fake, database
):
    model_id = await compatible_model(client, owner, fake)
    foreign = SecretBox([Fernet.generate_key().decode()]).encrypt(API_KEY)
    async with tenant_session(database, owner.organization_id) as session:
        await session.execute(
            text("UPDATE model_configs SET api_key_encrypted = :v WHERE id = :id"),
            {"v": foreign, "id": model_id},
        )
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    assert "key" in result["error"].lower()
    assert fake.requests == []


# --- a team's HTTP app ---------------------------------------------------------------------


@pytest.mark.usefixtures("private")
async def test_http_app_round_trip(client, owner, team_app):
    model_id = await http_model(client, owner, team_app)
    result = await check(client, owner, model_id, {"input": 'say "hi"\nplease'})
    assert result["ok"] is True
    assert result["reply"] == 'echo: say "hi"\nplease'
    assert result["latency_ms"] > 0
    assert (result["input_tokens"], result["output_tokens"]) == (None, None)

    (request,) = team_app.requests
    assert (request.method, request.path) == ("POST", "/chat")
    assert request.headers["authorization"] == f"Bearer {APP_TOKEN}"
    assert request.headers["x-team"] == "evals"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "message": 'say "hi"\nplease',
        "history": [{"role": "user", "content": 'say "hi"\nplease'}],
        "vars": {},
    }


@pytest.mark.usefixtures("private")
async def test_a_streaming_http_app_answers_with_events(client, owner, team_app):
    """The configuration as a run calls it: the events are read, their pieces make the reply."""
    team_app.sse = True
    model_id = await http_model(
        client, owner, team_app, http={"stream_path": "$.delta"}, stream=True
    )
    result = await check(client, owner, model_id, {"input": "stream this please"})
    assert result["ok"] is True, result
    assert result["reply"] == "echo: stream this please"
    (request,) = team_app.requests
    assert request.headers["accept"].startswith("text/event-stream")


@pytest.mark.usefixtures("private")
async def test_http_app_with_another_method_and_default_body(client, owner, team_app):
    model_id = await http_model(
        client,
        owner,
        team_app,
        http={"method": "PUT", "body_template": '{"input": {{ input | tojson }}}', "headers": {}},
    )
    result = await check(client, owner, model_id)
    assert result["reply"] == f"echo: {PING}"
    (request,) = team_app.requests
    assert request.method == "PUT"
    assert request.json == {"input": PING}
    assert "authorization" not in request.headers


@pytest.mark.usefixtures("private")
async def test_http_app_non_text_answer_is_json(client, owner, team_app):
    model_id = await http_model(client, owner, team_app)
    team_app.reply = lambda body: {"data": {"answer": {"label": "yes", "score": 0.9}}}
    result = await check(client, owner, model_id)
    assert result["ok"] is True
    assert json.loads(result["reply"]) == {"label": "yes", "score": 0.9}


@pytest.mark.usefixtures("private")
async def test_http_app_answer_missing_at_the_path(client, owner, team_app):
    model_id = await http_model(client, owner, team_app)
    team_app.reply = lambda body: {"result": "elsewhere"}
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    assert "$.data.answer" in result["error"]


@pytest.mark.usefixtures("private")
async def test_http_app_wrong_path_is_404_in_words(client, owner, team_app):
    model_id = await http_model(client, owner, team_app, http={"url": f"{team_app.url}/nope"})
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    assert "404" in result["error"]


@pytest.mark.usefixtures("private")
@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault.http(401, {"detail": "bad token"}), ["401", "Unauthorized", "bad token"]),
        (Fault.http(500), ["500", "Internal Server Error"]),
        (Fault.http(502, "gateway down"), ["502", "gateway down"]),
        (Fault.http(429, {"detail": "slow down"}, retry_after=2), ["429", "slow down"]),
        (Fault.malformed(), ["JSON"]),
        (Fault.close(), ["reach"]),
    ],
)
async def test_http_app_errors_in_plain_words(client, owner, team_app, fault, words):
    model_id = await http_model(client, owner, team_app)
    team_app.enqueue(fault)
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    for word in words:
        assert word in result["error"]
    assert len(team_app.requests) == 1


@pytest.mark.usefixtures("private")
async def test_http_app_echoing_its_token_does_not_leak_it(client, owner, team_app):
    model_id = await http_model(client, owner, team_app)
    team_app.enqueue(Fault.http(403, f"token Bearer {APP_TOKEN} is not allowed here"))
    response = await client.post(f"{MODELS}/{model_id}/test-connection", headers=owner.headers)
    assert response.json()["ok"] is False
    assert "403" in response.json()["error"]
    assert APP_TOKEN not in response.text


@pytest.mark.usefixtures("private")
async def test_http_app_hanging_times_out(client, owner, team_app):
    model_id = await http_model(client, owner, team_app, timeout_seconds=0.5)
    team_app.enqueue(Fault.hang())
    started = time.monotonic()
    result = await check(client, owner, model_id)
    assert time.monotonic() - started < 10
    assert result["ok"] is False
    assert "no answer within 0.5 s" in result["error"]


@pytest.mark.usefixtures("private")
async def test_http_body_template_needing_a_variable_is_reported(client, owner, team_app):
    model_id = await http_model(
        client, owner, team_app, http={"body_template": '{"q": {{ variables.topic | tojson }}}'}
    )
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    assert "topic" in result["error"]
    assert team_app.requests == []


# --- the SSRF guard at call time -----------------------------------------------------------


async def test_private_target_saved_while_allowed_is_refused_once_disallowed(
    client, owner, fake, team_app, private, runtime
):
    compatible_id = await compatible_model(client, owner, fake)
    http_id = await http_model(client, owner, team_app)
    private.setattr(ssrf, "resolve", _never_resolve)  # literal addresses need no DNS
    private.setattr(runtime.settings, "allow_private_networks", False)
    for model_id in (compatible_id, http_id):
        result = await check(client, owner, model_id)
        assert result["ok"] is False
        assert "private" in result["error"]
    assert fake.requests == []
    assert team_app.requests == []


async def _never_resolve(host: str) -> list[Any]:
    raise AssertionError(f"no DNS lookup expected for {host}")


@pytest.mark.parametrize("provider", ["openai-compatible", "http"])
async def test_a_hostname_that_turns_private_is_refused(
    client, owner, fake, team_app, monkeypatch, provider
):
    """DNS rebinding: public when saved, loopback when called."""
    answers = {"llm.rebind.test": "93.184.216.34"}

    async def resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address(answers[host])]

    monkeypatch.setattr(ssrf, "resolve", resolve)
    if provider == "http":
        model_id = await http_model(
            client,
            owner,
            team_app,
            http={"url": f"http://llm.rebind.test:{team_app.port}/chat"},
        )
    else:
        model_id = await new_model(
            client,
            owner,
            provider="openai-compatible",
            model="fake-model",
            base_url=f"http://llm.rebind.test:{fake.port}/v1",
            api_key=API_KEY,
        )
    answers["llm.rebind.test"] = "127.0.0.1"
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    assert "private" in result["error"] and "127.0.0.1" not in result["error"]
    assert fake.requests == [] and team_app.requests == []


async def test_a_hostname_that_does_not_resolve_is_refused_at_call_time(client, owner, monkeypatch):
    async def resolve(host: str) -> list[Any]:
        raise OSError("Name or service not known")

    monkeypatch.setattr(ssrf, "resolve", resolve)
    model_id = await new_model(
        client,
        owner,
        provider="http",
        http={"url": "https://nowhere.invalid/chat", "response_path": "$.answer"},
    )
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    assert "does not resolve" in result["error"]


# --- demo ----------------------------------------------------------------------------------


async def test_demo_provider_works_offline(client, owner, monkeypatch):
    async def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the demo provider must not touch the network")

    # Real network calls go through this transport (the test client uses the ASGI one).
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", no_network)
    model_id = await new_model(client, owner, provider="demo")
    result = await check(client, owner, model_id, {"input": "hello demo"})
    assert result["ok"] is True
    assert result["reply"].startswith("[demo]")
    assert "hello demo" in result["reply"]
    assert result["latency_ms"] is not None and result["latency_ms"] >= 0
    again = await check(client, owner, model_id, {"input": "hello demo"})
    assert again["reply"] == result["reply"]  # deterministic


# --- redirects -----------------------------------------------------------------------------


@pytest.mark.usefixtures("private")
@pytest.mark.parametrize("provider", ["openai-compatible", "http"])
async def test_redirects_are_not_followed(client, owner, fake, team_app, provider):
    """The guard checks the configured URL only: a redirect could lead anywhere."""
    elsewhere = f"{fake.base_url}/chat/completions"
    team_app.paths.add("/v1/chat/completions")
    team_app.enqueue(Fault.http(307, {"moved": True}, headers={"location": elsewhere}))
    if provider == "http":
        model_id = await http_model(client, owner, team_app)
    else:
        model_id = await new_model(
            client,
            owner,
            provider="openai-compatible",
            model="fake-model",
            base_url=f"{team_app.url}/v1",
            api_key=API_KEY,
        )
    result = await check(client, owner, model_id)
    assert result["ok"] is False
    assert "307" in result["error"]
    assert len(team_app.requests) == 1
    assert fake.requests == []


@pytest.mark.usefixtures("private")
async def test_an_oversized_answer_is_refused_not_buffered(client, owner, monkeypatch):
    from utils import transport

    monkeypatch.setattr(transport, "MAX_RESPONSE_BYTES", 64 * 1024)
    with FakeHttpApp(reply=lambda body: {"data": {"answer": "x" * 200_000}}) as app:
        model = await client.post(
            "/api/v1/models",
            json={
                "name": "big",
                "provider": "http",
                "http": {"url": f"{app.url}/chat", "response_path": "$.data.answer"},
            },
            headers=owner.headers,
        )
        assert model.status_code == 201, model.text
        result = await check(client, owner, model.json()["id"])
    assert result["ok"] is False
    assert "larger than" in result["error"]


@pytest.mark.usefixtures("private")
async def test_http_app_response_path_is_parsed_once(client, owner, team_app, monkeypatch):
    from providers import json_paths

    model_id = await http_model(client, owner, team_app)  # its paths checked as it is saved
    parsed: list[str] = []
    original = json_paths.parse_jsonpath

    def counting(path: str):
        parsed.append(path)
        return original(path)

    monkeypatch.setattr(json_paths, "parse_jsonpath", counting)
    json_paths.compiled.cache_clear()
    for i in range(3):
        result = await check(client, owner, model_id, {"input": f"call {i}"})
        assert result["reply"] == f"echo: call {i}"
    assert parsed == ["$.data.answer"]


async def test_a_call_under_way_holds_no_database_connection(
    committed_client, committed_owner, fake, private
):
    """The request's transaction ends before the call: a check of an endpoint that hangs held
    a pooled connection for its whole timeout, and sixteen of them held every connection the
    service has (every other request waiting for one)."""
    client, owner = committed_client, committed_owner
    model_id = await compatible_model(client, owner, fake, timeout_seconds=3)
    fake.enqueue(Fault.hang(3))
    checking = asyncio.create_task(check(client, owner, model_id))
    while not fake.requests:  # noqa: ASYNC110 (the fake offers no event to wait on)
        await asyncio.sleep(0.02)
    assert get_database().engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    result = await checking
    assert not result["ok"] and result["error"] == "no answer within 3 s", result


async def test_an_organization_makes_a_limited_number_an_hour(
    client, owner, fake, runtime, private
):
    """Each is a real call, perhaps paid, on the organization's key: a member could make them
    without end."""
    private.setattr(runtime.settings, "connection_tests_per_hour", 2)
    model_id = await compatible_model(client, owner, fake)
    for _ in range(2):
        assert (await check(client, owner, model_id))["ok"] is True
    limited = await client.post(f"{MODELS}/{model_id}/test-connection", headers=owner.headers)
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) > 0
    assert len(fake.requests) == 2  # the third made no call
    other = await register(client)
    theirs = await compatible_model(client, other, fake)
    assert (await check(client, other, theirs))["ok"] is True  # each organization counts
