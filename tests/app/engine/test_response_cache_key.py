"""The response cache (opt-in per run) gives a target the answers of an identical request only:
two HTTP targets at one URL whose headers or method differ may be two different models, and
each gets its own answers. Identical configurations still share them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.database.results.conftest import Lab, working_lab
from tests.fakes.http_app import FakeHttpApp, question_of

pytestmark = pytest.mark.slow


@pytest.fixture
async def lab(
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch
) -> AsyncIterator[Lab]:
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    async with working_lab(committed_database, app, owner_engine, database_urls, "cache") as lab:
        yield lab


@pytest.fixture
def endpoint() -> Iterator[FakeHttpApp]:
    """Answers with what told it apart: the variant header and the method of the request."""
    with FakeHttpApp() as server:

        def reply(body: Any) -> str:
            asked = server.requests[-1]  # this request (one at a time: concurrency 1)
            variant = asked.headers.get("x-variant", "none")
            return f"{variant} {asked.method} {question_of(body)}"

        server.reply = reply
        yield server


async def _answers(lab: Lab, test_set: str, target: str) -> list[tuple[str, bool]]:
    run = await lab.run(
        test_set,
        target,
        metric_ids=[await lab.any_answer()],
        use_cache=True,
        concurrency=1,
    )
    done = await lab.wait(run["id"])
    assert done["status"] == "completed", done
    results = sorted(await lab.results(run["id"]), key=lambda result: result["position"])
    return [(result["output"], result["cached"]) for result in results]


async def _target(lab: Lab, endpoint: FakeHttpApp, *, stream: bool = False, **http: Any) -> str:
    http = {
        "url": f"{endpoint.url}/chat",
        "body_template": '{"message": {{ input | tojson }}}',
        "response_path": "$.data.answer",
        **http,
    }
    return await lab.model(provider="http", http=http, stream=stream)


async def test_targets_differing_in_headers_or_method_get_their_own_answers(
    lab: Lab, endpoint: FakeHttpApp
) -> None:
    def target(variant: str, method: str) -> Any:
        return _target(lab, endpoint, method=method, headers={"X-Variant": variant})

    test_set = await lab.test_set([{"input": "one"}, {"input": "two"}])
    first = await _answers(lab, test_set, await target("old", "POST"))
    assert first == [("old POST one", False), ("old POST two", False)]

    assert await _answers(lab, test_set, await target("new", "POST")) == [
        ("new POST one", False),
        ("new POST two", False),
    ]
    assert await _answers(lab, test_set, await target("old", "PUT")) == [
        ("old PUT one", False),
        ("old PUT two", False),
    ]
    # Another target configured as the first is asked nothing: its answers are the first's.
    asked = len(endpoint.requests)
    assert await _answers(lab, test_set, await target("old", "POST")) == [
        ("old POST one", True),
        ("old POST two", True),
    ]
    assert len(endpoint.requests) == asked


async def test_a_streaming_target_reading_its_events_elsewhere_gets_its_own_answer(
    lab: Lab, endpoint: FakeHttpApp
) -> None:
    """The events of one answer: pieces of text at $.delta, then the usage alone."""
    endpoint.sse = True
    test_set = await lab.test_set([{"input": "one"}])
    pieces = await _target(lab, endpoint, stream=True, stream_path="$.delta")
    assert await _answers(lab, test_set, pieces) == [("none POST one", False)]
    counted = await _target(lab, endpoint, stream=True, stream_path="$.usage.completion_tokens")
    assert await _answers(lab, test_set, counted) == [("3", False)]
