"""Project webhooks: the SSRF guard on their URL, their secrets (made here, shown once, stored
encrypted, rotated with an overlap), and the messages a project's events become: one delivery
per (event, webhook), each queued as a job in the caller's transaction, so a message exists
only if the change it tells of does. The job's handler sends it (app/engine/webhooks.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.projects import webhook_crud as crud
from database.projects.models import Project
from database.projects.webhook_crud import DISABLED
from database.projects.webhook_models import TEST_EVENT, Webhook, WebhookDelivery
from database.projects.webhook_schemas import WebhookCreate, WebhookUpdate
from notifications.webhooks import new_secret
from tasks import queue
from utils.crud import apply_update, refuse_nulls
from utils.errors import Conflict, NotFound
from utils.ids import new_id
from utils.runtime import Runtime, get_runtime
from utils.secrets import SecretBox, SecretUnreadable
from utils.ssrf import check_url

DELIVERY_JOB = "webhook.deliver"
# Each run's end writes a delivery and a job per subscribed webhook, in the transaction that
# ends it, and then as many requests go out: a project's fan-out is bounded.
MAX_WEBHOOKS_PER_PROJECT = 20


async def get_webhook_or_404(
    session: AsyncSession, project_id: uuid.UUID, webhook_id: uuid.UUID
) -> Webhook:
    webhook = await crud.get_webhook(session, webhook_id)
    if webhook is None or webhook.project_id != project_id:
        raise NotFound("Webhook not found")
    return webhook


async def _check_url(runtime: Runtime, url: str) -> None:
    # A host that does not resolve yet is accepted; every delivery checks the URL again.
    await check_url(
        url,
        field="url",
        allow_private=runtime.settings.allow_private_networks,
    )


async def create_webhook(
    session: AsyncSession, runtime: Runtime, project: Project, body: WebhookCreate
) -> tuple[Webhook, str]:
    """The webhook and its signing secret (which is never shown again)."""
    # The URL first: its host is looked up, and the project is not held meanwhile.
    await _check_url(runtime, body.url)
    if await crud.count_webhooks(session, project.id) >= MAX_WEBHOOKS_PER_PROJECT:
        raise Conflict(
            f"The project has {MAX_WEBHOOKS_PER_PROJECT} webhooks, the most it may have:"
            " delete one first"
        )
    secret = new_secret()
    webhook = await crud.add_webhook(
        session,
        Webhook(
            organization_id=project.organization_id,
            project_id=project.id,
            **body.model_dump(),
            secret_encrypted=runtime.secret_box.encrypt(secret),
        ),
    )
    return webhook, secret


async def update_webhook(
    session: AsyncSession, runtime: Runtime, webhook: Webhook, body: WebhookUpdate
) -> Webhook:
    changes = body.model_dump(exclude_unset=True)
    refuse_nulls(changes, "url", "events", "enabled")
    if "url" in changes:
        await _check_url(runtime, changes["url"])
    if changes.get("enabled") is False:
        failed = await crud.fail_pending_deliveries(session, webhook.id, DISABLED)
        await queue.withdraw(
            session, kind=DELIVERY_JOB, key="delivery_id", values=[str(i) for i in failed]
        )
    apply_update(webhook, changes)
    await crud.save_webhook(session)
    return webhook


async def rotate_secret(session: AsyncSession, runtime: Runtime, webhook: Webhook) -> str:
    """A new secret; the one it replaces keeps signing for the overlap (a receiver switches
    without a gap). The secret before that one stops at once. The webhook is held first: two
    rotations at once take turns, and each shown secret signs (the later one's previous is the
    earlier one's)."""
    if not await crud.lock_webhook(session, webhook):
        raise NotFound("Webhook not found")
    secret = new_secret()
    overlap = timedelta(hours=runtime.settings.webhook_secret_overlap_hours)
    # A secret under a key since dropped signs nothing: rotating is the remedy, at once.
    keep = (
        overlap > timedelta(0) and _opened(runtime.secret_box, webhook.secret_encrypted) is not None
    )
    webhook.previous_secret_encrypted = webhook.secret_encrypted if keep else None
    webhook.previous_secret_expires_at = datetime.now(UTC) + overlap if keep else None
    webhook.secret_encrypted = runtime.secret_box.encrypt(secret)
    await crud.save_webhook(session)
    return secret


def _opened(box: SecretBox, encrypted: bytes) -> str | None:
    """The secret, or None when no key of the box opens it."""
    try:
        return box.decrypt(encrypted)
    except SecretUnreadable:
        return None


def signing_secrets(webhook: Webhook, box: SecretBox, now: datetime) -> list[str]:
    """The secrets a message is signed with now: the current one, and the previous one while
    its overlap lasts and it can be read (one rotated away from, stored before rotating kept
    only readable ones). Raises SecretUnreadable when the box cannot open the current one."""
    found = [box.decrypt(webhook.secret_encrypted)]
    expires = webhook.previous_secret_expires_at
    previous = webhook.previous_secret_encrypted
    if previous is not None and expires is not None and expires > now:
        opened = _opened(box, previous)
        if opened is not None:
            found.append(opened)
    return found


# --- messages -------------------------------------------------------------------------------


def message(event_type: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    """A message's body (Standard Webhooks): its type, when the event happened, its data."""
    timestamp = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"type": event_type, "timestamp": timestamp, "data": data}


async def subscribers(session: AsyncSession, project_id: uuid.UUID) -> list[Webhook]:
    """The project's enabled webhooks."""
    return await crud.enabled_webhooks(session, project_id)


async def publish(
    session: AsyncSession,
    organization_id: uuid.UUID,
    events: Sequence[tuple[str, dict[str, Any]]],
    webhooks: Sequence[Webhook],
) -> list[WebhookDelivery]:
    """Queues each (event type, data) to every one of `webhooks` subscribed to it. Each event
    is one message: one message id, whichever webhooks it goes to."""
    at = datetime.now(UTC)
    deliveries: list[WebhookDelivery] = []
    for event_type, data in events:
        body, message_id = message(event_type, data, at), _message_id()
        deliveries.extend(
            _delivery(webhook, event_type, message_id, body)
            for webhook in webhooks
            if event_type in webhook.events
        )
    await _queue(session, organization_id, deliveries)
    return deliveries


async def send_test(session: AsyncSession, runtime: Runtime, webhook: Webhook) -> WebhookDelivery:
    """A `webhook.test` message, sent the way every other message is."""
    if not webhook.enabled:
        raise Conflict("The webhook is disabled: enable it to send it a test")
    await _count_manual_send(runtime, webhook)
    data = {
        "webhook_id": str(webhook.id),
        "project_id": str(webhook.project_id),
        "message": "A test delivery from Assay: the signature verifies with your secret.",
    }
    body = message(TEST_EVENT, data, datetime.now(UTC))
    delivery = _delivery(webhook, TEST_EVENT, _message_id(), body)
    await _queue(session, webhook.organization_id, [delivery])
    return delivery


async def redeliver(
    session: AsyncSession, runtime: Runtime, webhook: Webhook, delivery_id: uuid.UUID
) -> WebhookDelivery:
    """Sends a delivered or failed message again (the same message id), with a full set of
    attempts; its attempts so far still count in the log."""
    delivery = await crud.get_delivery(session, delivery_id)
    if delivery is None or delivery.webhook_id != webhook.id:
        raise NotFound("Delivery not found")
    pending = Conflict("The delivery is still pending: its attempts are not over")
    if delivery.status == "pending":
        raise pending
    if not webhook.enabled:
        raise Conflict("The webhook is disabled: enable it to redeliver")
    # A job of an earlier round (its webhook disabled meanwhile, its retry still queued) must
    # not send the message beside the new one: withdrawn, or, while its attempt runs, waited
    # for.
    jobs = await queue.hold_unfinished(
        session, kind=DELIVERY_JOB, key="delivery_id", value=str(delivery.id)
    )
    if "running" in jobs:
        raise Conflict("An attempt at the delivery is under way: redeliver once it ends")
    await _count_manual_send(runtime, webhook)
    await queue.withdraw(session, kind=DELIVERY_JOB, key="delivery_id", values=[str(delivery.id)])
    # Judged again as the row is written: of two redeliveries at once, the second finds the
    # first's pending and queues no second job.
    if not await crud.reopen_delivery(session, delivery):
        raise pending
    await _enqueue(session, webhook.organization_id, [delivery])
    return delivery


async def _count_manual_send(runtime: Runtime, webhook: Webhook) -> None:
    """Counts a send asked for by hand against the organization's hourly allowance."""
    allowance = f"{runtime.settings.webhook_manual_sends_per_hour}/hour"
    await runtime.rate_limiter.hit("webhook-sends", str(webhook.organization_id), allowance)


def _message_id() -> str:
    return f"msg_{new_id().hex}"


def _delivery(
    webhook: Webhook, event_type: str, message_id: str, body: dict[str, Any]
) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id(),
        organization_id=webhook.organization_id,
        webhook_id=webhook.id,
        event_type=event_type,
        message_id=message_id,
        payload=body,
        status="pending",
        attempts=0,
    )


async def _queue(
    session: AsyncSession, organization_id: uuid.UUID, deliveries: Sequence[WebhookDelivery]
) -> None:
    if deliveries:
        await crud.add_deliveries(session, deliveries)
        await _enqueue(session, organization_id, deliveries)


async def _enqueue(
    session: AsyncSession, organization_id: uuid.UUID, deliveries: Sequence[WebhookDelivery]
) -> None:
    """One job per delivery. Its payload names the delivery only: what is sent is read when
    it is sent (a webhook disabled or deleted meanwhile is sent nothing)."""
    await queue.enqueue_many(
        session,
        organization_id=organization_id,
        kind=DELIVERY_JOB,
        jobs=[({"delivery_id": str(delivery.id)}, None) for delivery in deliveries],
        max_attempts=get_runtime().settings.webhook_max_attempts,
    )
