"""Resuming a stream with `?last_event_id=`: a new EventSource (the live page's, reopened after
the browser gave up on a refusal) cannot set the Last-Event-ID header. The header wins when
both are given; a bad value is the same 422, naming the query parameter."""

from __future__ import annotations

from typing import Any

from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import assert_problem
from tests.notifications.conftest import Live


async def _finished_run(live: Live) -> dict[str, Any]:
    target = await live.model(provider="demo")
    test_set = await live.test_set([{"input": f"q{i}"} for i in range(3)])
    run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
    done = await live.wait(run["id"])
    assert done["status"] == "completed", done
    return done


async def test_the_query_parameter_resumes_after_the_id_it_gives(live: Live) -> None:
    run = await _finished_run(live)
    token = await live.stream_token(run["id"])

    _, whole = await live.whole_stream(run["id"], params={"token": token})
    response, seen = await live.whole_stream(
        run["id"], params={"token": token, "last_event_id": "1"}
    )
    assert response.status_code == 200
    assert [e.id for e in seen] == [e.id for e in whole[1:]]

    # The header wins: EventSource sends it on its own reconnects, newer than the URL's value.
    response, seen = await live.whole_stream(
        run["id"], params={"token": token, "last_event_id": "1"}, headers={"Last-Event-ID": "2"}
    )
    assert response.status_code == 200
    assert [e.id for e in seen] == [e.id for e in whole[2:]]

    # Nothing left after the last: the same 204 as with the header.
    last = whole[-1].id or ""
    response, _ = await live.whole_stream(run["id"], params={"token": token, "last_event_id": last})
    assert response.status_code == 204

    for malformed in ("abc", "-1", "1.0", "9" * 19):
        response, _ = await live.whole_stream(
            run["id"], params={"token": token, "last_event_id": malformed}
        )
        body = assert_problem(response, 422, field="last_event_id")
        assert [e["field"] for e in body["errors"]] == ["query.last_event_id"]
        assert token not in response.text


async def test_an_id_past_the_last_event_names_the_query_parameter(live: Live) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.2) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(6)])
        run = await live.run(test_set, target, metric_ids=[await live.metric("contains")])
        token = await live.stream_token(run["id"])
        response, _ = await live.whole_stream(
            run["id"], params={"token": token, "last_event_id": "999"}
        )
        assert [e["field"] for e in assert_problem(response, 422)["errors"]] == [
            "query.last_event_id"
        ]
        assert (await live.wait(run["id"]))["status"] == "completed"


async def test_the_query_parameter_is_documented(live: Live) -> None:
    document = (await live.client.get("/public/openapi.json")).json()
    operation = document["paths"]["/runs/{run_id}/events"]["get"]
    [parameter] = [p for p in operation["parameters"] if p["name"] == "last_event_id"]
    assert parameter["in"] == "query"
    assert "header wins" in parameter["description"]
    assert "?last_event_id=" in operation["description"]
    assert "422" in operation["responses"]
