"""Webhooks delivered for real: runs executed by a worker pool end, the job queue sends signed
messages to a real HTTP receiver that verifies them with the Standard Webhooks library, and
the delivery log says how each attempt went. Retries, replays, rotation and giving up are
played out against that receiver."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import standardwebhooks.webhooks
from cryptography.fernet import Fernet
from sqlalchemy import select, update
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from database.projects.webhook_crud import DISABLED
from database.projects.webhook_models import Webhook as WebhookRow
from notifications.webhooks import new_secret
from tasks.models import Job
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.webhook_receiver import Fault, WebhookReceiver
from tests.helpers import tenant_session
from tests.notifications.conftest import Live
from utils.secrets import SecretBox

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _quick_retries(runtime, monkeypatch) -> None:
    """Retries after a fraction of a second, not the production schedule's minutes."""
    monkeypatch.setattr(runtime.settings, "webhook_retry_seconds", [0.3, 0.6, 1.2])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _hooks(live: Live) -> str:
    return f"/projects/{live.project_id}/webhooks"


async def _subscribe(live: Live, url: str, events: list[str], **extra: Any) -> tuple[str, str]:
    """A webhook of the live project: (its id, its secret)."""
    body = {"url": url, "events": events, **extra}
    created = (await live.post(_hooks(live), body, expect=201)).json()
    return created["id"], created["secret"]


async def _deliveries(live: Live, webhook_id: str) -> list[dict[str, Any]]:
    return (await live.get(f"{_hooks(live)}/{webhook_id}/deliveries", limit=200))["items"]


async def _until(live: Live, webhook_id: str, check: Any, seconds: float = 30.0) -> list[dict]:
    """The webhook's delivery log (newest first) once `check(log)` holds."""
    deadline = time.monotonic() + seconds
    while True:
        log = await _deliveries(live, webhook_id)
        if check(log):
            return log
        assert time.monotonic() < deadline, json.dumps(log, indent=1)
        await asyncio.sleep(0.2)


def _settled(count: int) -> Any:
    return lambda log: len(log) >= count and all(d["status"] != "pending" for d in log)


async def _run(live: Live, fake: FakeOpenAI, cases: int, **extra: Any) -> dict[str, Any]:
    """A finished run of `cases` cases scored by `contains "yes"`."""
    target = await live.openai_model(fake)
    test_set = await live.test_set([{"input": f"case {i}"} for i in range(cases)])
    metric = await live.metric("contains", parameters={"value": "yes"})
    run = await live.run(test_set, target, metric_ids=[metric], **extra)
    return await live.wait(run["id"])


def _signatures(headers: dict[str, str]) -> list[str]:
    return headers["webhook-signature"].split(" ")


async def test_a_finished_run_is_delivered_signed_and_verifiable(live: Live) -> None:
    with FakeOpenAI(require_api_key="sk-test") as fake, WebhookReceiver() as receiver:
        fake.reply = lambda body: "yes"
        hook, secret = await _subscribe(live, receiver.endpoint, ["run.completed", "run.failed"])
        receiver.secrets = [secret]
        disabled, _ = await _subscribe(live, receiver.endpoint, ["run.completed"], enabled=False)
        other_event, _ = await _subscribe(live, receiver.endpoint, ["run.cancelled"])
        before = datetime.now(UTC)
        run = await _run(live, fake, cases=3)
        assert run["status"] == "completed"

        [delivery] = await _until(live, hook, _settled(1))
        assert delivery["status"] == "delivered", delivery
        assert (delivery["event_type"], delivery["attempts"]) == ("run.completed", 1)
        assert delivery["last_status_code"] == 200 and delivery["last_error"] is None
        assert delivery["latency_ms"] >= 0 and delivery["delivered_at"] is not None
        [(message_id, body)] = receiver.handled.items()
        assert message_id == delivery["message_id"]
        assert body == delivery["payload"]
        assert body["type"] == "run.completed"
        assert datetime.fromisoformat(body["timestamp"]) >= before - timedelta(seconds=1)
        data = body["data"]
        assert (data["run_id"], data["project_id"], data["status"]) == (
            run["id"],
            live.project_id,
            "completed",
        )
        assert data["counts"] == {"total": 3, "done": 3, "passed": 3, "failed": 0, "errored": 0}
        assert data["pass_rate"] == 1.0 and data["gate"] is None
        assert data["links"]["run"] == f"/api/v1/runs/{run['id']}"

        # What a receiver sees: the three headers, one signature, the library verifies it.
        [received] = receiver.log
        headers = received.request.headers
        assert headers["webhook-id"] == message_id
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        assert [s.split(",")[0] for s in _signatures(headers)] == ["v1"]
        assert headers["content-type"] == "application/json"
        assert Webhook(secret).verify(received.request.text, headers) == body
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(received.request.text, headers)
        # A disabled webhook, and one that did not subscribe to the event, get nothing.
        assert await _deliveries(live, disabled) == []
        assert await _deliveries(live, other_event) == []

        # A test message takes the same way.
        sent = await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)
        log = await _until(live, hook, _settled(2))
        assert log[0]["id"] == sent.json()["id"] and log[0]["status"] == "delivered"
        assert receiver.handled[log[0]["message_id"]]["type"] == "webhook.test"


async def _project_baseline(
    live: Live, fake: FakeOpenAI, test_set: str, target: str, metric: str
) -> dict[str, Any]:
    """A finished run whose every case passes, made the project's baseline."""
    fake.reply = lambda body: "yes"
    baseline = await live.run(test_set, target, metric_ids=[metric])
    await live.wait(baseline["id"])
    await live.client.put(
        f"/api/v1/projects/{live.project_id}/baseline",
        json={"run_id": baseline["id"]},
        headers=live.account.headers,
    )
    return baseline


async def test_a_change_the_gate_calls_no_change_is_no_regression(live: Live) -> None:
    """The regression message compares as the run's gate does: a drop of 5 points on 200
    cases is significant, and inside a gate's margin of 10 points it is no change."""
    with FakeOpenAI(require_api_key="sk-test") as fake, WebhookReceiver() as receiver:
        hook, secret = await _subscribe(live, receiver.endpoint, ["regression"])
        receiver.secrets = [secret]
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"case {i}"} for i in range(200)])
        metric = await live.metric("contains", parameters={"value": "yes"})
        await _project_baseline(live, fake, test_set, target, metric)
        broken = {f'case {i}"' for i in range(0, 200, 20)}
        fake.reply = lambda body: "no" if any(w in json.dumps(body) for w in broken) else "yes"
        gate = {"baseline": "project", "min_effect": 0.1}
        within = await live.run(test_set, target, metric_ids=[metric], gate=gate)
        assert (await live.wait(within["id"]))["gate_result"]["status"] == "passed"
        ungated = await live.run(test_set, target, metric_ids=[metric])
        await live.wait(ungated["id"])

        [sent] = await _until(live, hook, _settled(1))
        assert sent["payload"]["data"]["run_id"] == ungated["id"]  # never the gated one's
        await asyncio.sleep(1.0)
        assert len(await _deliveries(live, hook)) == 1


async def test_a_failed_gate_and_a_regression_against_the_baseline(live: Live) -> None:
    with (
        FakeOpenAI(require_api_key="sk-test") as fake,
        WebhookReceiver() as receiver,
        WebhookReceiver() as unsubscribed,
    ):
        every = ["run.completed", "run.failed", "run.cancelled", "gate.failed", "regression"]
        hook, secret = await _subscribe(live, receiver.endpoint, every)
        receiver.secrets = [secret]
        no_regression, other = await _subscribe(
            live, unsubscribed.endpoint, ["run.completed", "gate.failed"]
        )
        unsubscribed.secrets = [other]
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"case {i}"} for i in range(60)])
        metric = await live.metric("contains", parameters={"value": "yes"})
        metric_name = (await live.get(f"/metrics/{metric}"))["name"]

        baseline = await _project_baseline(live, fake, test_set, target, metric)
        # A third of the cases now fail.
        broken = {f'case {i}"' for i in range(0, 60, 3)}
        fake.reply = lambda body: "no" if any(w in json.dumps(body) for w in broken) else "yes"
        gate = {"baseline": "project", "min_pass_rate": 0.9}
        candidate = await live.run(test_set, target, metric_ids=[metric], gate=gate)
        assert (await live.wait(candidate["id"]))["gate_result"]["status"] == "failed"

        log = await _until(live, hook, _settled(4))
        assert all(d["status"] == "delivered" for d in log)
        sent = {(d["payload"]["data"]["run_id"], d["event_type"]): d for d in log}
        # The baseline's own end: the project had no baseline then, so no comparison.
        assert set(sent) == {
            (baseline["id"], "run.completed"),
            (candidate["id"], "run.completed"),
            (candidate["id"], "gate.failed"),
            (candidate["id"], "regression"),
        }
        assert len({d["message_id"] for d in log}) == 4  # an event, a message
        failed_gate = sent[(candidate["id"], "gate.failed")]["payload"]["data"]["gate"]
        assert failed_gate["status"] == "failed"
        assert any("below the floor" in reason for reason in failed_gate["reasons"])
        regression = sent[(candidate["id"], "regression")]["payload"]["data"]
        assert regression["regression"]["baseline_run_id"] == baseline["id"]
        [regressed] = regression["regression"]["metrics"]
        assert regressed["name"] == metric_name
        assert regressed["baseline"] == 1.0 and regressed["candidate"] == pytest.approx(2 / 3)
        assert regression["links"]["compare"] == (
            f"/api/v1/runs/{candidate['id']}/compare?baseline={baseline['id']}"
        )
        assert set(receiver.handled) == {d["message_id"] for d in log}

        # A webhook not subscribed to regressions is told the rest, with the same message ids.
        others = await _until(live, no_regression, _settled(3))
        assert sorted(d["event_type"] for d in others) == [
            "gate.failed",
            "run.completed",
            "run.completed",
        ]
        assert {d["message_id"] for d in others} <= {d["message_id"] for d in log}

        # The project's baseline is now the candidate: it is not reopened by a repeat (its
        # figures would move under the verdicts made against it), so it never ends again.
        await live.client.put(
            f"/api/v1/projects/{live.project_id}/baseline",
            json={"run_id": candidate["id"]},
            headers=live.account.headers,
        )
        await live.post(
            f"/runs/{candidate['id']}/repeat", {"repetitions": 1, "cases": "all"}, expect=409
        )


async def test_a_receiver_down_for_a_while_gets_every_message_once(live: Live) -> None:
    receiver = WebhookReceiver()
    receiver.port = _free_port()  # nothing listens there yet: connections are refused
    try:
        with FakeOpenAI(require_api_key="sk-test") as fake:
            hook, secret = await _subscribe(
                live, receiver.endpoint, ["run.completed", "gate.failed"]
            )
            receiver.secrets = [secret]
            # Every answer fails `contains "yes"`: the gate's floor fails.
            run = await _run(live, fake, cases=4, gate={"min_pass_rate": 0.5})
            assert run["gate_result"]["status"] == "failed"

            def refused_twice(log: list[dict]) -> bool:
                return len(log) == 2 and all(d["attempts"] >= 2 for d in log)

            down = await _until(live, hook, refused_twice)
            for delivery in down:
                assert delivery["status"] == "pending"
                assert delivery["last_status_code"] is None
                assert delivery["last_error"].startswith("could not connect")
                assert str(receiver.port) not in delivery["last_error"]

            # Back, but answering 503 to its first request.
            receiver.enqueue(Fault.http(503, "warming up"))
            receiver.start()
            log = await _until(live, hook, _settled(2))
        assert [d["status"] for d in log] == ["delivered", "delivered"]
        handled = [r for r in receiver.log if r.outcome == "handled"]
        assert sorted(str(r.message_id) for r in handled) == sorted(d["message_id"] for d in log)
        assert {body["type"] for body in receiver.handled.values()} == {
            "run.completed",
            "gate.failed",
        }
        # The message answered 503 was sent again with the same id, signed again later.
        [faulted] = [r for r in receiver.log if r.outcome == "fault"]
        tries = [r for r in receiver.log if r.message_id == faulted.message_id]
        assert [r.outcome for r in tries] == ["fault", "handled"]
        stamps = [int(r.request.headers["webhook-timestamp"]) for r in tries]
        assert stamps == sorted(stamps)
        retried = next(d for d in log if d["message_id"] == faulted.message_id)
        assert retried["attempts"] >= 4  # refused twice or more, 503, delivered

        # Replays: a copy is acknowledged but not handled again; a copy replayed after the
        # tolerance, or with its timestamp rewritten, does not verify.
        original = handled[0].request
        sent = {k: v for k, v in original.headers.items() if k.startswith("webhook-")}
        async with httpx.AsyncClient() as client:
            copy = await client.post(receiver.endpoint, content=original.text, headers=sent)
            assert copy.status_code == 200 and copy.json()["duplicate"] is True
            assert len(receiver.handled) == 2

            class SixMinutesLater(datetime):
                @classmethod
                def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                    return datetime.now(tz) + timedelta(minutes=6)

            real_clock = standardwebhooks.webhooks.datetime
            standardwebhooks.webhooks.datetime = SixMinutesLater  # type: ignore[misc]
            try:
                late = await client.post(receiver.endpoint, content=original.text, headers=sent)
            finally:
                standardwebhooks.webhooks.datetime = real_clock  # type: ignore[misc]
            assert late.status_code == 401 and "too old" in late.json()["error"]
            restamped = {**sent, "webhook-timestamp": str(int(time.time()))}
            forged = await client.post(receiver.endpoint, content=original.text, headers=restamped)
            assert forged.status_code == 401 and "signature" in forged.json()["error"]
    finally:
        receiver.stop()


async def test_rotation_overlap_then_only_the_new_secret(live: Live, committed_database) -> None:
    with WebhookReceiver() as receiver:
        hook, old = await _subscribe(live, receiver.endpoint, ["run.completed"])
        receiver.secrets = [old]  # the receiver has not switched yet
        new = (await live.post(f"{_hooks(live)}/{hook}/rotate-secret", {}, expect=200)).json()

        await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)
        [during] = await _until(live, hook, _settled(1))
        assert during["status"] == "delivered" and during["attempts"] == 1
        [request] = [r.request for r in receiver.log]
        assert len(_signatures(request.headers)) == 2
        Webhook(new["secret"]).verify(request.text, request.headers)  # either secret verifies

        # The overlap is over.
        async with tenant_session(committed_database, live.account.organization_id) as session:
            await session.execute(
                update(WebhookRow)
                .where(WebhookRow.id == uuid.UUID(hook))
                .values(previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)
        rejected = await _until(live, hook, lambda log: log[0]["attempts"] >= 1)
        assert rejected[0]["status"] == "pending"
        assert rejected[0]["last_status_code"] == 401
        after = receiver.log[-1].request
        assert receiver.log[-1].outcome == "rejected"
        assert len(_signatures(after.headers)) == 1
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(after.text, after.headers)
        Webhook(new["secret"]).verify(after.text, after.headers)

        receiver.secrets = [new["secret"]]  # the receiver switches: the retry goes through
        log = await _until(live, hook, _settled(2))
        assert log[0]["status"] == "delivered" and log[0]["attempts"] >= 2


async def test_rotating_a_secret_no_key_opens_mends_delivery_at_once(
    live: Live, committed_database
) -> None:
    """The remedy the error names: rotating kept the unreadable secret as the previous one, and
    every message failed, unsent, for the whole overlap (a day by default)."""
    with WebhookReceiver() as receiver:
        hook, old = await _subscribe(live, receiver.endpoint, ["run.completed"])
        dropped_key = SecretBox([Fernet.generate_key().decode()])  # no longer among the keys
        async with tenant_session(committed_database, live.account.organization_id) as session:
            await session.execute(
                update(WebhookRow)
                .where(WebhookRow.id == uuid.UUID(hook))
                .values(secret_encrypted=dropped_key.encrypt(old))
            )
        await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)
        [unread] = await _until(live, hook, _settled(1))
        assert unread["status"] == "failed" and "rotate the secret" in unread["last_error"]

        rotated = (await live.post(f"{_hooks(live)}/{hook}/rotate-secret", {}, expect=200)).json()
        assert rotated["previous_secret_expires_at"] is None  # nothing readable to keep
        receiver.secrets = [rotated["secret"]]
        await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)
        log = await _until(live, hook, _settled(2))
        assert log[0]["status"] == "delivered" and log[0]["attempts"] == 1
        [request] = [entry.request for entry in receiver.log]
        assert len(_signatures(request.headers)) == 1

        # One rotated before the mend kept an unreadable previous secret: it signs nothing.
        async with tenant_session(committed_database, live.account.organization_id) as session:
            await session.execute(
                update(WebhookRow)
                .where(WebhookRow.id == uuid.UUID(hook))
                .values(
                    previous_secret_encrypted=dropped_key.encrypt(old),
                    previous_secret_expires_at=datetime.now(UTC) + timedelta(hours=1),
                )
            )
        await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)
        log = await _until(live, hook, _settled(3))
        assert log[0]["status"] == "delivered" and log[0]["attempts"] == 1
        assert len(_signatures(receiver.log[-1].request.headers)) == 1


async def test_attempts_run_out_then_a_redelivery(live: Live, runtime, monkeypatch) -> None:
    monkeypatch.setattr(runtime.settings, "webhook_max_attempts", 2)
    with WebhookReceiver() as receiver:
        hook, secret = await _subscribe(live, receiver.endpoint, ["run.completed"])
        receiver.secrets = [secret]
        receiver.enqueue(*[Fault.http(503, "down for maintenance")] * 3)
        await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)
        [failed] = await _until(live, hook, _settled(1))
        assert failed["status"] == "failed" and failed["attempts"] == 2
        assert failed["last_status_code"] == 503
        assert failed["last_error"] == "answered 503: down for maintenance"
        assert failed["delivered_at"] is None
        assert [r.message_id for r in receiver.log] == [failed["message_id"]] * 2

        receiver.reset()  # it works again
        path = f"{_hooks(live)}/{hook}/deliveries/{failed['id']}/redeliver"
        again = (await live.post(path, {}, expect=202)).json()
        assert again["status"] == "pending" and again["message_id"] == failed["message_id"]
        [delivered] = await _until(live, hook, _settled(1))
        assert delivered["status"] == "delivered" and delivered["attempts"] == 3
        assert list(receiver.handled) == [failed["message_id"]]


async def test_disabled_or_deleted_webhooks_are_sent_nothing_more(
    live: Live, committed_database
) -> None:
    closed = f"http://127.0.0.1:{_free_port()}/hooks/assay"  # nothing listens: attempts fail
    disabled, _ = await _subscribe(live, closed, ["run.completed"])
    deleted, _ = await _subscribe(live, closed, ["run.completed"])
    queued = {}
    for hook in (disabled, deleted):
        queued[hook] = (await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)).json()
    for hook in (disabled, deleted):
        await _until(live, hook, lambda log: log[0]["attempts"] >= 1)

    patched = await live.client.patch(
        f"/api/v1{_hooks(live)}/{disabled}", json={"enabled": False}, headers=live.account.headers
    )
    assert patched.status_code == 200
    [given_up] = await _until(live, disabled, _settled(1))
    assert given_up["status"] == "failed" and given_up["last_error"] == DISABLED

    response = await live.client.delete(
        f"/api/v1{_hooks(live)}/{deleted}", headers=live.account.headers
    )
    assert response.status_code == 204
    # Its job finds nothing to send and ends.
    delivery_id = queued[deleted]["id"]
    deadline = time.monotonic() + 30
    while True:
        async with tenant_session(committed_database, live.account.organization_id) as session:
            jobs = (await session.scalars(select(Job).where(Job.kind == "webhook.deliver"))).all()
        [job] = [j for j in jobs if j.payload["delivery_id"] == delivery_id]
        if job.status == "done":
            break
        assert job.status in ("queued", "running") and time.monotonic() < deadline, job.status
        await asyncio.sleep(0.2)


async def test_an_address_the_guard_refuses_fails_at_once(
    live: Live, runtime, monkeypatch, committed_database
) -> None:
    """Saved while private networks were allowed, then refused when sent: every attempt would
    be refused the same, so the delivery fails after one, its job done rather than waiting
    out the retry schedule."""
    with WebhookReceiver() as receiver:
        hook, _ = await _subscribe(live, receiver.endpoint, ["run.completed"])
        monkeypatch.setattr(runtime.settings, "allow_private_networks", False)
        queued = (await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)).json()
        [failed] = await _until(live, hook, _settled(1))
        await asyncio.sleep(1.5)  # twice the longest retry delay: no attempt follows
        [after] = await _deliveries(live, hook)
    assert receiver.log == []
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["last_error"].startswith("not sent: the URL must not point at a private")
    assert after["attempts"] == 1 and after["status"] == "failed"
    async with tenant_session(committed_database, live.account.organization_id) as session:
        jobs = (await session.scalars(select(Job).where(Job.kind == "webhook.deliver"))).all()
    [job] = [j for j in jobs if j.payload["delivery_id"] == queued["id"]]
    assert (job.status, job.attempts) == ("done", 1)
