"""The messages sent to webhook receivers are part of the API's contract: the document lists each
type under `webhooks`, named, described, with the Standard Webhooks headers, an example and its
answers; and every message real runs send, as the receiver gets it, is valid for its schema."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, get_args

import pytest

from database.projects import webhook_messages as messages
from database.projects.webhook_messages import WEBHOOK_MESSAGES
from database.projects.webhook_models import TEST_EVENT, WEBHOOK_EVENTS, DeliveredEvent
from database.results import run_webhooks
from database.results.comparison_schemas import Verdict
from database.results.models import TERMINAL
from database.results.schemas import GateStatus
from tests.app.contract import as_documented, schema_validator
from tests.database.results.conftest import Lab, working_lab
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.webhook_receiver import WebhookReceiver

# Renaming one breaks every receiver generated from the document: a change must be deliberate.
WEBHOOK_OPERATION_IDS = {
    "run.completed": "on_run_completed",
    "run.failed": "on_run_failed",
    "run.cancelled": "on_run_cancelled",
    "gate.failed": "on_gate_failed",
    "regression": "on_regression",
    "webhook.test": "on_webhook_test",
}
SIGNATURE_HEADERS = {"webhook-id", "webhook-timestamp", "webhook-signature"}


def _operation(document: dict[str, Any], event: str) -> dict[str, Any]:
    return dict(document["webhooks"][event]["post"])


def _body_schema(document: dict[str, Any], event: str) -> dict[str, Any]:
    operation = _operation(document, event)
    return dict(operation["requestBody"]["content"]["application/json"]["schema"])


def test_the_message_types_are_spelled_once(document):
    """What a webhook subscribes to, what a delivery carries and the messages documented are
    the same types; the words the messages share with the runs' own are theirs."""
    assert get_args(DeliveredEvent) == (*WEBHOOK_EVENTS, TEST_EVENT)
    assert list(WEBHOOK_MESSAGES) == list(get_args(DeliveredEvent))
    sent_at_a_run_end = {*run_webhooks.RUN_EVENTS.values(), "gate.failed", run_webhooks.REGRESSION}
    assert sent_at_a_run_end == set(WEBHOOK_EVENTS)
    for event, (model, _) in WEBHOOK_MESSAGES.items():
        assert get_args(model.model_fields["type"].annotation) == (event,)
    assert set(get_args(messages.EndStatus)) == TERMINAL
    assert get_args(messages.GateStatus) == get_args(GateStatus)
    assert get_args(messages.Verdict) == get_args(Verdict)
    delivery = document["components"]["schemas"]["DeliveryRead"]["properties"]["event_type"]
    assert delivery["enum"] == list(get_args(DeliveredEvent))


def test_every_message_type_is_a_documented_webhook(document):
    webhooks = document.get("webhooks", {})
    assert set(webhooks) == set(WEBHOOK_MESSAGES)
    described_tags = {tag["name"] for tag in document["tags"] if tag.get("description")}
    schemas = document["components"]["schemas"]
    for event, (model, summary) in WEBHOOK_MESSAGES.items():
        assert set(webhooks[event]) == {"post"}, event
        operation = _operation(document, event)
        assert operation["operationId"] == WEBHOOK_OPERATION_IDS[event]
        assert operation["summary"] == summary
        assert "standardwebhooks" in operation["description"], event
        assert set(operation["tags"]) <= described_tags, event
        # Under its own name: no model of the API renamed (`-Input`/`-Output`) beside it.
        assert _body_schema(document, event) == {"$ref": f"#/components/schemas/{model.__name__}"}
        assert schemas[model.__name__]["properties"]["type"]["const"] == event
        headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
        assert set(headers) == SIGNATURE_HEADERS, event
        assert all(h["required"] and h["description"] for h in headers.values()), event
        responses = operation["responses"]
        assert set(responses) == {"200", "default"}, event
        assert all(r["description"] for r in responses.values()), event
        example = operation["requestBody"]["content"]["application/json"]["example"]
        faults = list(
            schema_validator(document, _body_schema(document, event)).iter_errors(example)
        )
        assert not faults, f"{event}: {faults[0].message}"
        model.model_validate(example)
    parts = [
        part
        for part in vars(messages).values()
        if isinstance(part, type) and part.__module__ == messages.__name__
    ]
    assert {part.__name__ for part in parts if not part.__name__.startswith("_")} <= set(schemas)


# --- the messages real runs send --------------------------------------------------------------


@pytest.fixture
async def lab(
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch
) -> AsyncIterator[Lab]:
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)  # the receiver's
    async with working_lab(committed_database, app, owner_engine, database_urls, "hooks") as lab:
        yield lab


async def _delivered(
    lab: Lab, document: dict[str, Any], url: str, count: int
) -> list[dict[str, Any]]:
    """The webhook's delivery log once `count` messages are delivered, each entry checked to
    be what the document says the log answers."""
    deadline = time.monotonic() + 60
    while True:
        response = await lab.client.get(
            f"/api/v1{url}/deliveries", params={"limit": 100}, headers=lab.account.headers
        )
        log = as_documented(document, response)
        if len(log["items"]) >= count and all(d["status"] == "delivered" for d in log["items"]):
            return list(log["items"])
        assert time.monotonic() < deadline, json.dumps(log, indent=1)
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_every_message_sent_is_valid_for_its_documented_schema(lab: Lab, document):
    with FakeOpenAI(require_api_key="sk-test") as fake, WebhookReceiver() as receiver:
        hooks = f"/projects/{lab.project_id}/webhooks"
        body = {"url": receiver.endpoint, "events": list(WEBHOOK_EVENTS)}
        created = (await lab.post(hooks, body, expect=201)).json()
        receiver.secrets = [created["secret"]]
        hook = f"{hooks}/{created['id']}"
        metric = await lab.metric("contains", parameters={"value": "yes"})
        target = await lab.openai_model(fake)
        test_set = await lab.test_set([{"input": f"case {i}"} for i in range(30)])

        # run.completed, then against it as the project's baseline: run.completed,
        # gate.failed and regression.
        fake.reply = lambda body: "yes"
        baseline = await lab.run(test_set, target, metric_ids=[metric])
        assert (await lab.wait(baseline["id"]))["status"] == "completed"
        await lab.client.put(
            f"/api/v1/projects/{lab.project_id}/baseline",
            json={"run_id": baseline["id"]},
            headers=lab.account.headers,
        )
        broken = {f'case {i}"' for i in range(0, 30, 3)}
        fake.reply = lambda body: "no" if any(w in json.dumps(body) for w in broken) else "yes"
        gate = {"baseline": "project", "min_pass_rate": 0.9}
        candidate = await lab.run(test_set, target, metric_ids=[metric], gate=gate)
        assert (await lab.wait(candidate["id"]))["gate_result"]["status"] == "failed"

        # run.failed: stopped by its budget (each call costs 0.3 USD).
        priced = await lab.openai_model(fake, input_price_per_mtok=100_000, output_price_per_mtok=0)
        small = await lab.test_set([{"input": f"question number {i}"} for i in range(4)])
        stopped = await lab.run(small, priced, metric_ids=[metric], concurrency=1, max_cost=0.5)
        assert (await lab.wait(stopped["id"]))["status"] == "stopped"

        # run.cancelled, and a test message.
        fake.latency = 0.2
        cut = await lab.run(test_set, target, metric_ids=[metric], concurrency=1)
        await lab.wait_for_results(cut["id"], 1)
        await lab.post(f"/runs/{cut['id']}/cancel", {}, expect=200)
        await lab.post(f"{hook}/test", {}, expect=202)

        log = await _delivered(lab, document, hook, 7)
        received = receiver.handled

    # Two runs completed; one failed its gate and regressed; one stopped, one cancelled.
    expected = [*WEBHOOK_MESSAGES, "run.completed"]
    assert sorted(d["event_type"] for d in log) == sorted(expected)
    assert set(received) == {d["message_id"] for d in log}
    for delivery in log:
        event, sent = delivery["event_type"], received[delivery["message_id"]]
        assert sent == delivery["payload"] and sent["type"] == event
        validator = schema_validator(document, _body_schema(document, event))
        faults = [f"{'/'.join(map(str, f.path))}: {f.message}" for f in validator.iter_errors(sent)]
        assert not faults, f"{event}: {faults[:3]} in {json.dumps(sent)}"
        WEBHOOK_MESSAGES[event][0].model_validate(sent)
    # Each request's signature headers, as the document describes them.
    documented = {
        p["name"]: p["schema"] for p in _operation(document, "webhook.test")["parameters"]
    }
    for request in (r.request for r in receiver.log):
        for name in SIGNATURE_HEADERS:
            assert schema_validator(document, documented[name]).is_valid(request.headers[name])
