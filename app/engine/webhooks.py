"""The `webhook.deliver` job: one attempt at sending one delivery (a message to one webhook),
recorded in the delivery log whatever its outcome.

A failed attempt raises, so the queue retries the job after the next delay of
ASSAY_WEBHOOK_RETRY_SECONDS (up to ASSAY_WEBHOOK_MAX_ATTEMPTS); when the job gives up for
good, `give_up` fails the delivery in the transaction that buries the job. An attempt the SSRF
guard refused fails the delivery at once: every later one would be refused the same. The queue
delivers at least once: a delivery no longer pending (delivered, failed, or gone with its
webhook) is not sent again, and a copy sent twice carries the same message id for the receiver
to drop.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.engine.context import JobContext
from database.projects import webhook_crud, webhooks
from notifications.webhooks import encode_body, send
from tasks.queue import RetryLater
from utils.runtime import get_runtime
from utils.secrets import SecretUnreadable

log = structlog.get_logger(__name__)

REFUSED = "not sent: the SSRF guard refused the URL's address"
UNREADABLE = (
    "not sent: the webhook's secret cannot be decrypted with the current encryption keys;"
    " rotate the secret"
)


def retry_delay(schedule: list[float], attempt: int) -> float:
    """Seconds before the retry after failed attempt `attempt` (1 for the first): the
    schedule's entry, its last one repeating, with a tenth of jitter so that the deliveries of
    one outage do not all come back at once."""
    return schedule[min(attempt, len(schedule)) - 1] * random.uniform(0.9, 1.1)


async def deliver(ctx: JobContext) -> None:
    delivery_id = uuid.UUID(ctx.payload["delivery_id"])
    runtime = get_runtime()
    async with ctx.transaction() as session:
        found = await webhook_crud.delivery_to_send(session, delivery_id)
        if found is None or found[0].status != "pending":
            return  # its webhook was deleted, or an earlier run of this job finished it
        delivery, webhook = found
        if not webhook.enabled:
            await webhook_crud.fail_delivery(session, delivery_id, webhook_crud.DISABLED)
            return
        try:
            secrets = webhooks.signing_secrets(webhook, runtime.secret_box, datetime.now(UTC))
        except SecretUnreadable:
            await webhook_crud.fail_delivery(session, delivery_id, UNREADABLE)
            return
        url, message_id, body = webhook.url, delivery.message_id, encode_body(delivery.payload)
    # No transaction (and no connection) is held while the receiver takes its time.
    attempt = await send(
        url,
        message_id=message_id,
        body=body,
        signing_secrets=secrets,
        sent_at=datetime.now(UTC),
        seconds=runtime.settings.webhook_timeout_seconds,
        allow_private=runtime.settings.allow_private_networks,
    )
    async with ctx.transaction() as session:
        await webhook_crud.record_attempt(
            session,
            delivery_id,
            delivered=attempt.delivered,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
        )
        if attempt.refused:
            await webhook_crud.fail_delivery(session, delivery_id, attempt.error or REFUSED)
    log.info(
        "webhook attempt",
        delivery_id=str(delivery_id),
        webhook_id=str(webhook.id),
        delivered=attempt.delivered,
        status_code=attempt.status_code,
        latency_ms=attempt.latency_ms,
        refused=attempt.refused,
    )
    if not attempt.delivered and not attempt.refused:
        delay = retry_delay(runtime.settings.webhook_retry_seconds, ctx.attempt)
        raise RetryLater(attempt.error or "not delivered", delay)


async def give_up(ctx: JobContext, session: AsyncSession, error: str) -> None:
    """The job is dead: its delivery fails, with its last attempt's error when it has one."""
    await webhook_crud.fail_delivery(
        session, uuid.UUID(ctx.payload["delivery_id"]), error[:300], keep_last_error=True
    )
